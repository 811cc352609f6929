"""Hyperparameter shifts: closed forms on a real Trainer, group selection, exact resume."""
import io

import pytest
import torch
import torch.nn.functional as F

import extensions as E
from trainerlib import Trainer, make_extension
from trainerlib.iterators import SerialIterator
from trainerlib.updaters import StandardUpdater

K = 12                      # iterations of a full run; 10 examples / batch 2 = 5 per epoch
X = torch.randn(10, 2, generator=torch.Generator().manual_seed(0))
Y = X.sum(1, keepdim=True)


def roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def build(out, shift, stop=K, attr='lr', lrs=(0.1, 0.01), adam=False):
    """A trainer whose optimizer has two param groups, recording ``attr`` of each group
    before the first update and after every iteration (after the shift)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    groups = [{'params': [model.weight], 'lr': lrs[0]}, {'params': [model.bias], 'lr': lrs[1]}]
    opt = torch.optim.Adam(groups) if adam else \
        torch.optim.SGD(groups, momentum=0.9, weight_decay=1e-3)
    updater = StandardUpdater(SerialIterator(torch.utils.data.TensorDataset(X, Y), 2, seed=1),
                              opt, model, loss_func=lambda x, y: F.mse_loss(model(x), y))
    trainer = Trainer(updater, (stop, 'iteration'), out=str(out))
    trainer.extend(shift)
    trainer.recorded = []

    @make_extension(trigger=(1, 'iteration'), priority=0)
    def record(trainer):
        trainer.recorded.append(tuple(g[attr] for g in opt.param_groups))
    trainer.extend(record, call_before_training=True)
    return trainer


# name: (shift factory, attr, closed form of the value after k iterations from a group's init)
CASES = {
    'exponential': (lambda: E.ExponentialShift('lr', 0.5), 'lr', lambda k, i: i * 0.5 ** k),
    'exponential_target': (lambda: E.ExponentialShift('lr', 0.5, target=0.01), 'lr',
                           lambda k, i: max(i * 0.5 ** k, 0.01)),
    'exponential_up': (lambda: E.ExponentialShift('lr', 2., init=0.01, target=0.1), 'lr',
                       lambda k, i: min(0.01 * 2 ** k, 0.1)),
    'linear': (lambda: E.LinearShift('lr', (0.2, 0.05), (2, 6)), 'lr',
               lambda k, i: 0.2 if k <= 2 else 0.05 if k >= 6 else 0.2 - 0.15 * (k - 2) / 4),
    'linear_momentum': (lambda: E.LinearShift('momentum', (0.5, 0.9), (0, 4)), 'momentum',
                        lambda k, i: min(0.5 + 0.1 * k, 0.9)),
    'step': (lambda: E.StepShift('lr', 0.5, 3), 'lr', lambda k, i: i * 0.5 ** (k // 3)),
    'step_target': (lambda: E.StepShift('lr', 0.1, 2, target=0.001), 'lr',
                    lambda k, i: max(i * 0.1 ** (k // 2), 0.001)),
    'step_weight_decay': (lambda: E.StepShift('weight_decay', 2., 4, init=1e-4), 'weight_decay',
                          lambda k, i: 1e-4 * 2 ** (k // 4)),
    'multistep': (lambda: E.MultistepShift('lr', 0.1, [5, 2], None), 'lr',
                  lambda k, i: i * 0.1 ** ((k >= 2) + (k >= 5))),
    'multistep_init': (lambda: E.MultistepShift('lr', 0.5, [3], 0.2), 'lr',
                       lambda k, i: 0.2 * 0.5 ** (k >= 3)),
    'warmup': (lambda: E.WarmupShift('lr', 0.0, 4), 'lr', lambda k, i: i * min(k, 4) / 4),
    'warmup_init': (lambda: E.WarmupShift('lr', 0.01, 5, init=0.06), 'lr',
                    lambda k, i: 0.01 + 0.01 * min(k, 5)),
    'inverse': (lambda: E.InverseShift('lr', 0.5, 0.75), 'lr',
                lambda k, i: i / (1 + 0.5 * k) ** 0.75),
    'inverse_target': (lambda: E.InverseShift('lr', 1., 1., target=0.02), 'lr',
                       lambda k, i: max(i / (1 + k), 0.02)),
    'polynomial': (lambda: E.PolynomialShift('lr', 2., 8), 'lr',
                   lambda k, i: i * max(1 - k / 8, 0) ** 2),
    'polynomial_epoch': (lambda: E.PolynomialShift('lr', 0.9, (2, 'epoch')), 'lr',
                         lambda k, i: i * max(1 - k / 10, 0) ** 0.9),
    'polynomial_iteration': (lambda: E.PolynomialShift('lr', 1., (8, 'iteration')), 'lr',
                             lambda k, i: i * max(1 - k / 8, 0)),
    'polynomial_target': (lambda: E.PolynomialShift('lr', 1., 8, target=0.02), 'lr',
                          lambda k, i: max(i * max(1 - k / 8, 0), 0.02)),
}


@pytest.mark.parametrize('name', CASES)
def test_value_after_k_iterations_is_the_closed_form(tmp_path, name):
    make, attr, closed = CASES[name]
    trainer = build(tmp_path, make(), attr=attr)
    inits = tuple(g[attr] for g in trainer.updater.get_optimizer('main').param_groups)
    trainer.run()
    assert len(trainer.recorded) == K + 1
    for k, values in enumerate(trainer.recorded):
        expected = tuple(closed(k, init) for init in inits)
        assert values == pytest.approx(expected, rel=1e-12, abs=0), f'after {k} iterations'


@pytest.mark.parametrize('name', CASES)
@pytest.mark.parametrize('split', [3, 7])
def test_resume_continues_exactly(tmp_path, name, split):
    make, attr, _ = CASES[name]
    full = build(tmp_path / 'full', make(), attr=attr)
    full.run()
    first = build(tmp_path / 'run', make(), stop=split, attr=attr)
    first.run()
    state = roundtrip(first.state_dict())
    resumed = build(tmp_path / 'run', make(), attr=attr)   # new model, optimizer, shift
    resumed.load_state_dict(state)
    resumed.run()
    assert first.recorded == full.recorded[:split + 1]
    assert resumed.recorded == full.recorded[split + 1:]    # bit-identical values (not
    #                                  recorded again before training: the resume is no start)
    for a, b in zip(resumed.updater.get_model('main').parameters(),
                    full.updater.get_model('main').parameters()):
        assert torch.equal(a, b)


def test_resumed_exponential_shift_does_not_compound(tmp_path):
    first = build(tmp_path, E.ExponentialShift('lr', 0.5), stop=4)
    first.run()
    resumed = build(tmp_path, E.ExponentialShift('lr', 0.5))
    resumed.load_state_dict(roundtrip(first.state_dict()))
    opt = resumed.updater.get_optimizer('main')
    assert opt.param_groups[0]['lr'] == 0.1 * 0.5 ** 4     # the loaded, already shifted value
    opt.param_groups[0]['lr'] = 123.0                       # the saved value is set again
    resumed.run()
    assert [r[0] for r in resumed.recorded] == [0.1 * 0.5 ** k for k in range(5, K + 1)]
    assert resumed.state_dict()['extensions']['ExponentialShift'] == {'t': K,
                                                                      'inits': [0.1, 0.01]}


def test_param_groups_selects_the_groups_shifted(tmp_path):
    trainer = build(tmp_path, E.ExponentialShift('lr', 0.5, param_groups=[1]), stop=5)
    trainer.run()
    assert [r[0] for r in trainer.recorded] == [0.1] * 6
    assert [r[1] for r in trainer.recorded] == [0.01 * 0.5 ** k for k in range(6)]


def test_one_element_of_a_tuple_valued_key(tmp_path):
    trainer = build(tmp_path, E.ExponentialShift(('betas', 0), 0.9), stop=5, attr='betas',
                    adam=True)
    trainer.run()
    assert trainer.recorded == [((0.9 * 0.9 ** k, 0.999),) * 2 for k in range(6)]


def test_tensor_hyperparameter_is_filled_in_place(tmp_path):
    model = torch.nn.Linear(2, 1)
    lr = torch.tensor(0.1)
    opt = torch.optim.Adam(model.parameters(), lr=lr, foreach=False)
    updater = StandardUpdater(SerialIterator(torch.utils.data.TensorDataset(X, Y), 2), opt,
                              model, loss_func=lambda x, y: F.mse_loss(model(x), y))
    trainer = Trainer(updater, (3, 'iteration'), out=str(tmp_path))
    trainer.extend(E.ExponentialShift('lr', 0.5))
    trainer.run()
    assert opt.param_groups[0]['lr'] is lr and lr.item() == pytest.approx(0.1 * 0.5 ** 3)


def test_observe_lr_reports_the_value_used_by_the_iteration(tmp_path):
    trainer = build(tmp_path, E.ExponentialShift('lr', 0.5), stop=6)   # registered first
    trainer.extend(E.observe_lr(), trigger=(1, 'iteration'))
    trainer.extend(E.observe_lr(observation_key='lr1', param_group=1), trigger=(1, 'iteration'))
    trainer.extend(E.LogReport(trigger=(1, 'iteration')))
    trainer.run()
    log = trainer.get_extension('LogReport').log
    assert [e['lr'] for e in log] == [0.1 * 0.5 ** (k - 1) for k in range(1, 7)]
    assert [e['lr1'] for e in log] == [0.01 * 0.5 ** (k - 1) for k in range(1, 7)]


def test_observe_value_defaults_to_each_epoch(tmp_path):
    trainer = build(tmp_path, E.ExponentialShift('lr', 1.), stop=10)
    trainer.extend(E.observe_value('it', lambda tr: tr.updater.iteration))
    trainer.extend(E.LogReport())
    trainer.run()
    assert [e['it'] for e in trainer.get_extension('LogReport').log] == [5, 10]
    assert 'observe_it' in trainer.extensions and 'observe_lr' == E.observe_lr().default_name


@pytest.mark.parametrize('make, error, match', [
    (lambda: E.ExponentialShift('lr', 0.5, param_groups=[2]), ValueError, 'has 2 param groups'),
    (lambda: E.ExponentialShift('betas', 0.5), KeyError, "no 'betas'.*'momentum'"),
    (lambda: E.ExponentialShift('lr', -0.5), ValueError, 'rate >= 0'),
    (lambda: E.PolynomialShift('lr', 1., (2, 'epochs')), ValueError, "unknown trigger unit"),
])
def test_bad_input_is_named(tmp_path, make, error, match):
    with pytest.raises(error, match=match):
        build(tmp_path, make()).run()
