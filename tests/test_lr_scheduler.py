"""LRScheduler: torch schedulers per epoch, ReduceLROnPlateau fed from a reported key, resume."""
import io
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.optim import lr_scheduler

import extensions as E
from trainerlib import PRIORITY_WRITER, Trainer, make_extension
from trainerlib.iterators import SerialIterator
from trainerlib.updaters import StandardUpdater

PER_EPOCH = 4               # 8 examples, batch 2
EPOCHS = 8
X = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
Y = X.sum(1, keepdim=True)
BEFORE_OPTIMIZER = 'before `optimizer.step()`'


def roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def plateau_value(iteration):
    """A validation loss whose epoch mean is 3, then 2 forever (a plateau from epoch 2),
    while the last value of each epoch keeps improving: only the mean plateaus."""
    epoch, j = divmod(iteration - 1, PER_EPOCH)
    offset = 0.1 * (epoch + 1) * (1 if j < PER_EPOCH // 2 else -1)
    return torch.tensor((3.0 if epoch == 0 else 2.0) + offset)


@make_extension(trigger=(1, 'iteration'), priority=PRIORITY_WRITER)
def report_plateau(trainer):
    trainer.observation['validation/main/loss'] = plateau_value(trainer.updater.iteration)


def build(out, make_scheduler, stop=EPOCHS * PER_EPOCH, amp=False, loss_scale=None,
          extension=E.LRScheduler, before=False, **kwargs):
    """A trainer recording the lr after each epoch (after the scheduler stepped)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def loss_func(x, y):
        loss = F.mse_loss(model(x), y)
        return loss if loss_scale is None else loss * loss_scale()
    updater = StandardUpdater(SerialIterator(torch.utils.data.TensorDataset(X, Y), 2, seed=1),
                              opt, model, loss_func=loss_func, amp=amp, device='cpu')
    trainer = Trainer(updater, (stop, 'iteration'), out=str(out))
    trainer.extend(report_plateau)
    trainer.extend(extension(make_scheduler(opt), **kwargs), name='LRScheduler',
                   call_before_training=before)
    trainer.lrs = []
    trainer.extend(make_extension(trigger=(1, 'epoch'), priority=0)(
        lambda tr: tr.lrs.append(opt.param_groups[0]['lr'])))
    return trainer


def plateau(opt):
    return lr_scheduler.ReduceLROnPlateau(opt, factor=0.1, patience=2)


@pytest.mark.parametrize('make, closed', [
    (lambda opt: lr_scheduler.StepLR(opt, step_size=2, gamma=0.5),
     lambda e: 0.1 * 0.5 ** (e // 2)),
    (lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=6, eta_min=0.001),
     lambda e: 0.001 + (0.1 - 0.001) * (1 + math.cos(math.pi * e / 6)) / 2),
])
def test_epoch_schedulers_follow_their_closed_form(tmp_path, make, closed):
    trainer = build(tmp_path, make)
    trainer.run()
    assert trainer.lrs == pytest.approx([closed(e) for e in range(1, EPOCHS + 1)], rel=1e-9)


def test_reduce_on_plateau_after_patience_epochs_of_the_mean(tmp_path):
    trainer = build(tmp_path, plateau, monitor='validation/main/loss')
    trainer.run()
    # best at epoch 2; epochs 3, 4, 5 are bad: 3 > patience=2 reduces after epoch 5; again at 8
    assert trainer.lrs == pytest.approx([0.1] * 4 + [0.01] * 3 + [0.001], rel=1e-12)


@pytest.mark.parametrize('split', [12, 14, 22, 24])   # counting patience / mid-epoch / reduced
def test_resume_continues_exactly(tmp_path, split):
    full = build(tmp_path / 'full', plateau, monitor='validation/main/loss')
    full.run()
    first = build(tmp_path / 'run', plateau, stop=split, monitor='validation/main/loss')
    first.run()
    resumed = build(tmp_path / 'run', plateau, monitor='validation/main/loss')
    resumed.load_state_dict(roundtrip(first.state_dict()))
    resumed.run()
    assert first.lrs + resumed.lrs == full.lrs
    assert resumed.get_extension('LRScheduler').scheduler.state_dict() == \
        full.get_extension('LRScheduler').scheduler.state_dict()
    for a, b in zip(resumed.updater.get_model('main').parameters(),
                    full.updater.get_model('main').parameters()):
        assert torch.equal(a, b)


def bare_step(scheduler, trigger):
    """What a hand-written loop does: ``scheduler.step()`` after each update."""
    return make_extension(trigger=trigger, priority=0)(lambda trainer: scheduler.step())


@pytest.mark.parametrize('extension', [bare_step, E.LRScheduler])
def test_no_warning_when_amp_skipped_the_first_optimizer_step(tmp_path, extension):
    scales = iter([float('inf')] + [1.0] * 10)   # the first update overflows: step skipped
    trainer = build(tmp_path, lambda opt: lr_scheduler.StepLR(opt, 1, 0.5), stop=3,
                    amp='float16', loss_scale=lambda: next(scales), extension=extension,
                    trigger=(1, 'iteration'))
    model = trainer.updater.get_model('main')
    initial, after_first = model.weight.detach().clone(), []
    trainer.extend(make_extension(trigger=(1, 'iteration'), priority=0)(
        lambda tr: after_first.append(model.weight.detach().clone())))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        trainer.run()
    assert torch.equal(after_first[0], initial) and not torch.equal(after_first[-1], initial)
    assert trainer.updater.amp.scaler.get_scale() < 2.0 ** 16        # GradScaler skipped
    assert trainer.updater.get_optimizer('main').param_groups[0]['lr'] == 0.1 * 0.5 ** 3
    warned = any(BEFORE_OPTIMIZER in str(w.message) for w in caught)
    assert warned == (extension is bare_step)    # PyTorch warns a bare loop; never ours


def test_step_before_training_does_not_warn(tmp_path):
    trainer = build(tmp_path, lambda opt: lr_scheduler.StepLR(opt, 1, 0.5), stop=1,
                    trigger=lambda trainer: True, before=True)
    with warnings.catch_warnings():
        warnings.filterwarnings('error', message='.*' + BEFORE_OPTIMIZER)
        trainer.run()
    assert trainer.updater.get_optimizer('main').param_groups[0]['lr'] == 0.1 * 0.5 ** 2


def test_missing_monitor_key_names_it_and_the_reported_keys(tmp_path):
    trainer = build(tmp_path, plateau, monitor='validation/main/los')
    with pytest.raises(KeyError, match=r"'validation/main/los' was not reported.*"
                                       r"\['validation/main/loss'\]"):
        trainer.run()
    assert trainer.updater.iteration == PER_EPOCH


def test_stepper_customizes_the_call(tmp_path):
    calls = []
    trainer = build(tmp_path, plateau, stop=8,
                    stepper=lambda s, tr: calls.append((s, tr.updater.iteration)))
    trainer.run()
    assert calls == [(trainer.get_extension('LRScheduler').scheduler, 4),
                     (trainer.get_extension('LRScheduler').scheduler, 8)]


@pytest.mark.parametrize('kwargs, match', [
    ({}, 'ReduceLROnPlateau needs'),
    ({'monitor': 'a', 'stepper': lambda s, tr: None}, 'not both'),
])
def test_bad_construction(kwargs, match):
    opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1)
    with pytest.raises(ValueError, match=match):
        E.LRScheduler(plateau(opt), **kwargs)
