"""ParameterStatistics: numbers vs numpy, key layout, gradients, no sync, resume."""
import contextlib
import io

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

import extensions as E
from extensions.parameter_statistics import PERCENTILES, percentile
from trainerlib import Classifier, Extension, Trainer
from trainerlib.iterators import SerialIterator
from trainerlib.updaters import StandardUpdater

STATS = ['mean', 'std', 'min', 'max', 'zeros'] + [f'percentile/{i}' for i in range(7)]
SYNCS = ['item', '__float__', '__int__', '__bool__', 'tolist', 'cpu', 'numpy']


def make_trainer(out, stop=(2, 'epoch'), lr=0.0, batch=8, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    t = (x[:, 0] > 0).long()
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    with torch.no_grad():
        net[0].weight[0, :2] = 0.0     # exact zeros to count
    model = Classifier(net)
    updater = StandardUpdater(SerialIterator(TensorDataset(x, t), batch, shuffle=False),
                              torch.optim.SGD(model.parameters(), lr=lr), model)
    return Trainer(updater, stop, out=str(out)), model, (x, t)


def numpy_stats(a):
    a = np.asarray(a, dtype=np.float64).ravel()
    return [a.mean(), a.std(), a.min(), a.max(), np.count_nonzero(a == 0),
            *np.percentile(a, PERCENTILES)]


class Recorder(Extension):
    """Keeps the observation of every iteration (after writers and editors ran)."""
    def __init__(self):
        self.seen = []

    def __call__(self, trainer):
        self.seen.append(dict(trainer.observation))


def forbid_syncs():
    def fail(*args, **kwargs):
        raise AssertionError('host-device sync inside ParameterStatistics')
    stack = contextlib.ExitStack()
    patch = stack.enter_context(pytest.MonkeyPatch.context())
    for name in SYNCS:
        patch.setattr(torch.Tensor, name, fail)
    return stack


class NoSync(Extension):
    """Runs the wrapped extension with every tensor-to-host conversion raising."""
    def __init__(self, inner):
        self.inner, self.priority = inner, inner.priority

    def __call__(self, trainer):
        with forbid_syncs():
            self.inner(trainer)

    def finalize(self, trainer=None):
        self.inner.finalize(trainer)


@pytest.mark.parametrize('n', [1, 2, 7, 100])
def test_percentile_matches_numpy(n):
    x = torch.randn(n, dtype=torch.float64)
    np.testing.assert_allclose(percentile(x).numpy(), np.percentile(x.numpy(), PERCENTILES),
                               rtol=1e-12, atol=1e-12)


def test_values_match_numpy_for_data_and_grads(tmp_path):
    """lr=0 and the full batch: parameters and gradients are the same at every iteration."""
    trainer, model, (x, t) = make_trainer(tmp_path)
    recorder = Recorder()
    trainer.extend(E.ParameterStatistics(model))
    trainer.extend(recorder)
    trainer.run()
    model.zero_grad()
    model(x, t).backward()
    reported = recorder.seen[-1]
    assert all(k.startswith('main/predictor/') for k in reported if 'data' in k or 'grad' in k)
    for name, p in model.named_parameters():
        path = 'main/' + name.replace('.', '/')
        for attr, tensor in (('data', p), ('grad', p.grad)):
            got = [reported[f'{path}/{attr}/{s}'] for s in STATS]
            assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in got)
            np.testing.assert_allclose([float(v) for v in got], numpy_stats(tensor.detach()),
                                       rtol=1e-5, atol=1e-7, err_msg=f'{path}/{attr}')
    assert float(reported['main/predictor/0/weight/data/zeros']) == 2


def test_reports_the_mean_over_the_calls_of_the_period(tmp_path):
    trainer, model, _ = make_trainer(tmp_path, stop=(6, 'iteration'), lr=0.5, batch=3)
    means = []
    trainer.extend(E.ParameterStatistics(model, trigger=(3, 'iteration')))
    trainer.extend(lambda tr: means.append(model.predictor[0].bias.detach().mean().item()))
    recorder = Recorder()
    trainer.extend(recorder)
    trainer.run()
    key = 'main/predictor/0/bias/data/mean'
    assert [key in o for o in recorder.seen] == [False, False, True] * 2
    assert float(recorder.seen[2][key]) == pytest.approx(np.mean(means[:3]), rel=1e-6)
    assert float(recorder.seen[5][key]) == pytest.approx(np.mean(means[3:]), rel=1e-6)
    assert len(set(means)) == 6         # the parameters did change


@pytest.mark.parametrize('kwargs, links, expected, absent', [
    ({}, 'predictor', 'main/predictor/2/weight/grad/max', None),
    ({'prefix': 'stats', 'report_grads': False}, 'model', 'stats/main/predictor/0/bias/data/std',
     'stats/main/predictor/0/bias/grad/std'),
    ({'report_params': False}, 'dict', 'net/0/weight/grad/mean', 'net/0/weight/data/mean'),
    ({'statistics': {'norm': torch.linalg.vector_norm, 'q': lambda x: x.quantile(
        torch.tensor([0.25, 0.75]))}}, 'model', 'main/predictor/0/weight/data/q/1',
     'main/predictor/0/weight/data/mean'),
    ({}, 'foreign', 'Linear/weight/data/percentile/6', None),
])
def test_key_layout(tmp_path, kwargs, links, expected, absent):
    trainer, model, _ = make_trainer(tmp_path, stop=(1, 'iteration'))
    target = {'predictor': model.predictor, 'model': model, 'dict': {'net': model.predictor},
              'foreign': [torch.nn.Linear(2, 2)]}[links]
    recorder = Recorder()
    trainer.extend(E.ParameterStatistics(target, trigger=(1, 'iteration'), **kwargs))
    trainer.extend(recorder)
    trainer.run()
    assert expected in recorder.seen[0]
    assert absent is None or absent not in recorder.seen[0]


def test_custom_statistic_value_and_register(tmp_path):
    trainer, model, _ = make_trainer(tmp_path, stop=(1, 'iteration'))
    ext = E.ParameterStatistics(model.predictor[2], statistics={'norm': torch.linalg.norm},
                                report_grads=False, trigger=(1, 'iteration'))
    ext.register_statistics('absmax', lambda x: x.abs().max())
    recorder = Recorder()
    trainer.extend(ext)
    trainer.extend(recorder)
    trainer.run()
    w = model.predictor[2].weight.detach()
    assert float(recorder.seen[0]['main/predictor/2/weight/data/norm']) == \
        pytest.approx(float(w.norm()))
    assert float(recorder.seen[0]['main/predictor/2/weight/data/absmax']) == \
        pytest.approx(float(w.abs().max()))


def test_skip_nan_params_reports_nan_for_that_tensor_only(tmp_path):
    trainer, model, _ = make_trainer(tmp_path, stop=(1, 'iteration'))
    bad = torch.nn.Linear(2, 2)
    with torch.no_grad():
        bad.bias[0] = float('nan')
    ext = E.ParameterStatistics({'bad': bad, 'good': model.predictor}, skip_nan_params=True,
                                report_grads=False, trigger=(1, 'iteration'))
    recorder = Recorder()
    trainer.extend(ext)
    trainer.extend(recorder)
    trainer.run()
    seen = recorder.seen[0]
    # as Chainer: one NaN under each statistic's plain key, no percentile/0 ... /6
    plain = ['mean', 'std', 'min', 'max', 'zeros', 'percentile']
    assert sorted(k for k in seen if k.startswith('bad/bias/')) == \
        sorted(f'bad/bias/data/{s}' for s in plain)
    assert all(np.isnan(float(seen[f'bad/bias/data/{s}'])) for s in plain)
    assert not any(np.isnan(float(seen[f'bad/weight/data/{s}'])) for s in STATS)
    assert not any(np.isnan(float(seen[f'good/0/bias/data/{s}'])) for s in STATS)


def test_no_host_device_sync_while_accumulating_or_reporting(tmp_path):
    trainer, model, _ = make_trainer(tmp_path, stop=(4, 'iteration'), lr=0.1, batch=3)
    trainer.extend(NoSync(E.ParameterStatistics(model, trigger=(2, 'iteration'))))
    recorder = Recorder()
    trainer.extend(recorder)
    trainer.run()
    assert 'main/predictor/0/weight/grad/percentile/3' in recorder.seen[1]
    with forbid_syncs(), pytest.raises(AssertionError, match='sync'):
        torch.zeros(()).item()        # the guard itself works


def run_logged(out, stop, state=None):
    seed = 0 if state is None else 7      # the resumed run starts from other parameters
    trainer, model, _ = make_trainer(out, stop=stop, lr=0.3, batch=3, seed=seed)
    trainer.extend(E.ParameterStatistics(model))     # reports once per epoch (8 / 3 batches)
    trainer.extend(E.LogReport(trigger=(1, 'epoch')))
    if state is not None:
        trainer.load_state_dict(state)
    trainer.run()
    return trainer


@pytest.mark.parametrize('k', [2, 4])
def test_resume_mid_period_gives_the_same_log(tmp_path, k):
    full = run_logged(tmp_path / 'full', (3, 'epoch')).get_extension('LogReport').log
    first = run_logged(tmp_path / 'part', (k, 'iteration'))
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    resumed = run_logged(tmp_path / 'part', (3, 'epoch'), state).get_extension('LogReport').log
    strip = [{k: v for k, v in e.items() if k != 'elapsed_time'} for e in full]
    assert [{k: v for k, v in e.items() if k != 'elapsed_time'} for e in resumed] == strip
    assert 'main/predictor/0/weight/grad/std' in strip[0]


@pytest.mark.parametrize('statistics, trigger', [
    ('default', (100, 'iteration')),              # calls that do not report never sync
    ({'mean': torch.mean, 'max': torch.amax}, (2, 'iteration')),   # single-valued: nor reports
])
def test_skip_nan_params_without_sync(tmp_path, statistics, trigger):
    trainer, model, _ = make_trainer(tmp_path, stop=(4, 'iteration'), lr=0.1, batch=3)
    trainer.extend(NoSync(E.ParameterStatistics(model, statistics, skip_nan_params=True,
                                                trigger=trigger)))
    recorder = Recorder()
    trainer.extend(recorder)
    trainer.run()
    assert ('main/predictor/0/weight/grad/max' in recorder.seen[1]) == (trigger[0] == 2)
