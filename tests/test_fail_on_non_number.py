"""FailOnNonNumber: names the diverged tensor, one sync per check, never snapshots NaN."""
import os

import pytest
import torch
from torch.utils.data import TensorDataset

import extensions as E
from trainerlib import PRIORITY_SNAPSHOT, Classifier, Trainer, TrainerlibError, make_extension
from trainerlib.errors import NonFiniteError
from trainerlib.iterators import SerialIterator
from trainerlib.serialization import load_snapshot
from trainerlib.updaters import StandardUpdater


def make_trainer(out, stop=(10, 'iteration'), nan_from=None):
    """A loss that becomes NaN at its ``nan_from``-th call (so the step of that iteration)."""
    torch.manual_seed(0)
    x = torch.randn(16, 3)
    model = Classifier(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)))
    calls = []

    def loss_func(x, t):
        calls.append(1)
        loss = model(x, t)
        return loss * float('nan') if nan_from is not None and len(calls) >= nan_from else loss

    updater = StandardUpdater(SerialIterator(TensorDataset(x, (x[:, 0] > 0).long()), 4),
                              torch.optim.SGD(model.parameters(), lr=0.1), model,
                              loss_func=loss_func)
    return Trainer(updater, stop, out=str(out)), model


def test_nan_stops_the_run_before_it_is_snapshotted(tmp_path):
    trainer, _ = make_trainer(tmp_path, nan_from=5)
    trainer.extend(E.snapshot(), trigger=(1, 'iteration'))
    trainer.extend(E.FailOnNonNumber())
    with pytest.raises(NonFiniteError) as info:
        trainer.run()
    message = str(info.value)
    for part in ["'predictor.0.weight'", "model 'main'", 'NaN in the data', 'iteration 5',
                 'learning rate', 'clip']:
        assert part in message
    assert isinstance(info.value, TrainerlibError) and isinstance(info.value, RuntimeError)
    saved = sorted(int(n.rsplit('_', 1)[1]) for n in os.listdir(tmp_path) if n.startswith('snap'))
    assert saved == [1, 2, 3, 4]
    resumed, model = make_trainer(tmp_path)
    load_snapshot(str(tmp_path / 'snapshot_iter_4'), resumed)
    assert resumed.updater.iteration == 4
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize('check_grad, raises', [(True, True), (False, False)])
def test_gradients_are_checked_when_present(tmp_path, check_grad, raises):
    trainer, model = make_trainer(tmp_path)
    model.predictor[1].bias.grad = torch.tensor([0.0, float('inf')])
    ext = E.FailOnNonNumber(check_grad=check_grad)
    if raises:
        with pytest.raises(NonFiniteError, match=r"Inf in the gradient of parameter "
                                                 r"'predictor.1.bias' .* \(1 of 2 values"):
            ext(trainer)
    else:
        ext(trainer)


def test_one_host_transfer_per_check_when_finite(tmp_path, monkeypatch):
    trainer, model = make_trainer(tmp_path)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    transfers = []
    for name in ['__bool__', 'item', '__float__', '__int__', 'tolist', 'cpu', 'numpy']:
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _o=original, _n=name, **k:
                            transfers.append(_n) or _o(self, *a, **k))
    E.FailOnNonNumber()(trainer)
    assert transfers == ['__bool__']


def test_priority_and_trigger():
    ext = E.FailOnNonNumber(trigger=(10, 'iteration'))
    assert ext.priority > PRIORITY_SNAPSHOT and ext.trigger == (10, 'iteration')


@pytest.mark.parametrize('nan, expect_error_snapshot', [(True, False), (False, True)])
def test_snapshot_on_error_never_saves_a_diverged_state(tmp_path, nan, expect_error_snapshot):
    trainer, _ = make_trainer(tmp_path, nan_from=5 if nan else None)
    trainer.extend(E.snapshot(filename='last', snapshot_on_error=True), trigger=(2, 'iteration'))
    trainer.extend(E.FailOnNonNumber())
    if not nan:
        @make_extension(trigger=(5, 'iteration'))
        def boom(tr):
            raise ZeroDivisionError('an ordinary crash')
        trainer.extend(boom)
    with pytest.raises((NonFiniteError, ZeroDivisionError)):
        trainer.run()
    saved = torch.load(str(tmp_path / 'last'), weights_only=True)['state']
    iteration = saved['updater']['iteration']
    assert iteration == (5 if expect_error_snapshot else 4)
    assert all(torch.isfinite(v).all() for v in saved['updater']['models']['main'].values())
