"""ParameterStatistics against Chainer 7.8's own tests and its NaN key rule.

Chainer initializes gradients to NaN; here the gradients of the observed ``Linear(3, 2)``
are set to NaN by hand, so ``skip_nan_params=True`` reports one NaN per statistic of a
gradient, as in Chainer's ``test_parameter_statistics.py`` (whose counts are kept).
"""
import math
import re

import numpy as np
import pytest
import torch

import extensions as E
from extensions.parameter_statistics import DEFAULT_STATISTICS, PERCENTILES
from trainerlib import Trainer
from trainerlib.iterators import SerialIterator
from trainerlib.updaters.updater import Updater

MIN = {'min': torch.amin}


class Steps(Updater):
    """Ten iterations per epoch; each step runs ``hook(iteration)`` and reports nothing."""

    def __init__(self, hook=None):
        dummy = torch.nn.Parameter(torch.zeros(1))
        super().__init__(SerialIterator(list(range(10)), 1, shuffle=False),
                         torch.optim.SGD([dummy], lr=0.0))
        self.hook = hook

    def update_core(self):
        self.get_iterator('main').next()
        if self.hook is not None:
            self.hook(self.iteration + 1)


def nan_grad_linear():
    torch.manual_seed(0)
    link = torch.nn.Linear(3, 2)
    for p in link.parameters():
        p.grad = torch.full_like(p, math.nan)
    return link


def run(extension, stop=(10, 'iteration'), hook=None):
    trainer = Trainer(Steps(hook), stop)
    trainer.extend(extension)
    trainer.run()
    return trainer.observation


CASES = [   # statistics, report_params, report_grads, prefix, expected number of keys
    (MIN, True, True, None, 4),
    (MIN, False, True, 'test', 2),
    (MIN, True, False, None, 2),
    (MIN, False, False, 'test', 0),
    (DEFAULT_STATISTICS, True, True, None, 36),
    (DEFAULT_STATISTICS, True, False, 'test', 24),
    (DEFAULT_STATISTICS, False, True, None, 12),
    (DEFAULT_STATISTICS, False, False, 'test', 0),
]


def make(statistics, params, grads, prefix, late=False):
    ext = E.ParameterStatistics([nan_grad_linear()], None if late else statistics,
                                report_params=params, report_grads=grads, prefix=prefix,
                                skip_nan_params=True)
    if late:
        for name, fn in statistics.items():
            ext.register_statistics(name, fn)
    return ext


@pytest.mark.parametrize('late', [False, True])
@pytest.mark.parametrize('statistics, params, grads, prefix, expect', CASES)
def test_report_counts_as_chainer(statistics, params, grads, prefix, expect, late):
    assert len(run(make(statistics, params, grads, prefix, late))) == expect


@pytest.mark.parametrize('statistics, params, grads, prefix, expect', CASES)
def test_report_key_pattern(statistics, params, grads, prefix, expect):
    observation = run(make(statistics, params, grads, prefix))
    for name in observation:
        assert prefix is None or name.startswith(prefix)
        match = re.match(r'^(.+/){2,}(data|grad)/.+[^/]$', name)
        assert match is not None
        if params != grads:
            assert match.group(2) == ('data' if params else 'grad')
    if grads and statistics is DEFAULT_STATISTICS:   # a NaN tensor: one key per statistic
        grad_keys = {k.rpartition('/')[2] for k in observation if '/grad/' in k}
        assert grad_keys == set(DEFAULT_STATISTICS)
        assert all(math.isnan(float(v)) for k, v in observation.items() if '/grad/' in k)


@pytest.mark.parametrize('function', [lambda x: 1.0, lambda x: 1, lambda x: np.float32(1.0),
                                      lambda x: torch.ones(())])
def test_custom_function_returning_a_number(function):
    observation = run(E.ParameterStatistics([nan_grad_linear()], {'one': function},
                                            prefix='test'))
    assert len(observation) == 4
    assert all(float(value) == 1.0 for value in observation.values())


@pytest.mark.parametrize('nan_at', [(), (1, 2, 3, 4, 5), (2, 5), (5,)])
def test_a_nan_call_is_one_nan_under_the_plain_key(nan_at):
    """Calls 1..5 of one period; the bias holds a NaN at the calls in ``nan_at``."""
    torch.manual_seed(0)
    link = torch.nn.Linear(3, 2)
    good = link.bias.detach().clone()
    seen = []

    def hook(iteration):
        with torch.no_grad():
            link.bias.copy_(good + iteration)
            if iteration in nan_at:
                link.bias[0] = math.nan
            else:
                seen.append(link.bias.detach().clone())

    ext = E.ParameterStatistics({'l': link}, report_grads=False, skip_nan_params=True,
                                trigger=(5, 'iteration'))
    obs = run(ext, stop=(5, 'iteration'), hook=hook)
    bias = {k[len('l/bias/data/'):]: float(v) for k, v in obs.items() if k.startswith('l/bias/')}
    singles = ['mean', 'std', 'min', 'max', 'zeros']
    indexed = [f'percentile/{i}' for i in range(7)]
    expected = set(singles) | ({'percentile'} if nan_at else set()) | \
        (set(indexed) if len(nan_at) < 5 else set())
    assert set(bias) == expected
    if nan_at:
        assert all(math.isnan(bias[k]) for k in singles + ['percentile'])
    else:
        assert bias['mean'] == pytest.approx(np.mean([s.mean().item() for s in seen]))
    if len(nan_at) < 5:   # the means over the calls without a NaN only
        want = np.mean([np.percentile(s.numpy(), PERCENTILES) for s in seen], axis=0)
        np.testing.assert_allclose([bias[k] for k in indexed], want, rtol=1e-6)
    weight = {k for k in obs if k.startswith('l/weight/')}
    assert len(weight) == 12 and not any(math.isnan(float(obs[k])) for k in weight)


def test_nan_counts_survive_a_state_round_trip():
    def hook(iteration):
        with torch.no_grad():
            link.bias[0] = math.nan if iteration == 1 else 0.5

    torch.manual_seed(0)
    link = torch.nn.Linear(3, 2)
    first = E.ParameterStatistics({'l': link}, report_grads=False, skip_nan_params=True,
                                  trigger=(4, 'iteration'))
    run(first, stop=(2, 'iteration'), hook=hook)   # one NaN call, one good call, unreported
    second = E.ParameterStatistics({'l': link}, report_grads=False, skip_nan_params=True,
                                   trigger=(4, 'iteration'))
    second.load_state_dict(first.state_dict())   # sums, counts, NaN counts, trigger
    trainer = Trainer(Steps(hook), (4, 'iteration'))
    trainer.updater.iteration = 2
    trainer.extend(second)
    trainer.run()
    obs = trainer.observation
    assert math.isnan(float(obs['l/bias/data/percentile']))
    assert float(obs['l/bias/data/percentile/3']) == pytest.approx(
        np.percentile(link.bias.detach().numpy(), 50))
