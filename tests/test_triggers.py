"""Tests of trainerlib.triggers: fire sequences, resume at every split point, bad input."""
import io
import math
import warnings
from types import SimpleNamespace

import pytest
import torch

from trainerlib import Trainer
from trainerlib.extension import PRIORITY_SNAPSHOT, make_extension
from trainerlib.iterators import SerialIterator
from trainerlib.reporter import report
from trainerlib.triggers import (EarlyStoppingTrigger, IntervalTrigger, ManualScheduleTrigger,
                                 MaxValueTrigger, MinValueTrigger, OnceTrigger, TimeTrigger,
                                 get_trigger)
from trainerlib.triggers.schedule import TriggerSchedule
from trainerlib.updaters import StandardUpdater


# ---------------------------------------------------------------- helpers

def roundtrip(state):
    """Pass ``state`` through torch.save / torch.load(weights_only=True), as a snapshot does."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def trainers(n, batch, steps, values=None, key='main/loss'):
    """Fake trainers at iterations 0..steps, driven by a real SerialIterator.

    Position 0 is before the first update (where a stop trigger is first asked);
    ``values[i - 1]`` is reported under ``key`` at iteration ``i``.
    """
    it = SerialIterator(torch.arange(n), batch, shuffle=False)
    out = [SimpleNamespace(updater=SimpleNamespace(iteration=0, epoch_detail=0.0,
                                                   previous_epoch_detail=None),
                           observation={}, elapsed_time=0.0)]
    for i in range(1, steps + 1):
        next(it)
        obs = {} if values is None or values[i - 1] is None else {key: torch.tensor(values[i - 1])}
        out.append(SimpleNamespace(
            updater=SimpleNamespace(iteration=i, epoch_detail=it.epoch_detail,
                                    previous_epoch_detail=it.previous_epoch_detail),
                                   observation=obs, elapsed_time=float(i)))
    return out


def run(make, sequence, split=None):
    """Call a trigger on each fake trainer; at ``split``, continue on a fresh resumed trigger."""
    trigger, fired = make(), []
    for k, trainer in enumerate(sequence):
        if k == split:
            state = roundtrip(trigger.state_dict())
            trigger = make()
            trigger.load_state_dict(state)
        fired.append(trigger(trainer))
    return fired


def fired_at(make, sequence):
    """Positions where the trigger fires, checking that a resume at any point changes nothing."""
    expected = run(make, sequence)
    for split in range(len(sequence) + 1):
        assert run(make, sequence, split) == expected, f'resumed at {split}'
    return [k for k, f in enumerate(expected) if f]


# ---------------------------------------------------------------- IntervalTrigger

@pytest.mark.parametrize('period, unit, n, batch, steps, expected', [
    (1, 'iteration', 10, 3, 5, [1, 2, 3, 4, 5]),
    (2, 'iteration', 10, 3, 9, [2, 4, 6, 8]),
    (3, 'iteration', 5, 5, 10, [3, 6, 9]),
    (2.0, 'iteration', 4, 1, 6, [2, 4, 6]),
    (1, 'epoch', 10, 2, 15, [5, 10, 15]),                # even epochs
    (1, 'epoch', 10, 3, 20, [4, 7, 10, 14, 17, 20]),     # 10 examples, batch 3
    (2, 'epoch', 5, 2, 12, [5, 10]),                     # epoch 2.0 reached exactly at 5
    (0.5, 'epoch', 8, 2, 9, [2, 4, 6, 8]),
    (0.5, 'epoch', 10, 3, 10, [2, 4, 5, 7, 9, 10]),      # fractional and uneven
    (1.5, 'epoch', 4, 2, 9, [3, 6, 9]),
    (0.1, 'epoch', 10, 1, 12, list(range(1, 13))),       # 0.1 is not exact in binary
    (0.25, 'epoch', 10, 1, 12, [3, 5, 8, 10]),
    (1, 'epoch', 3, 5, 4, [1, 2, 3, 4]),                 # batch larger than the dataset
])
def test_interval_trigger(period, unit, n, batch, steps, expected):
    seq = trainers(n, batch, steps)
    assert fired_at(lambda: IntervalTrigger(period, unit), seq) == expected


@pytest.mark.parametrize('unit', ['iteration', 'epoch'])
def test_interval_trigger_never_fires_at_iteration_0(unit):
    seq = trainers(4, 4, 0)
    assert run(lambda: IntervalTrigger(1, unit), seq * 3) == [False] * 3


@pytest.mark.parametrize('calls, expected', [
    ([1, 3, 5, 6], [False, True, True, True]),   # crossing 2, 4, 6 between calls
    ([3, 4, 7, 8], [True, True, True, True]),    # counted from 0: 2 was crossed before 3
    ([1, 2, 2, 3], [False, True, False, False]),  # asked twice at the same iteration
])
def test_interval_trigger_called_irregularly(calls, expected):
    seq = trainers(100, 1, max(calls))
    calls = [seq[i] for i in calls]
    for split in [None] + list(range(len(calls) + 1)):
        assert run(lambda: IntervalTrigger(2, 'iteration'), calls, split) == expected


@pytest.mark.parametrize('period, unit, every', [
    (1, 'iteration', True), (2, 'iteration', False), (1, 'epoch', False), (0.01, 'epoch', False),
])
def test_interval_trigger_fires_every_iteration(period, unit, every):
    assert IntervalTrigger(period, unit).fires_every_iteration is every


def test_interval_trigger_training_length_and_repr():
    trigger = IntervalTrigger(0.5, 'epoch')
    assert trigger.get_training_length() == (0.5, 'epoch')
    assert repr(trigger) == "IntervalTrigger(0.5, 'epoch')"


# ---------------------------------------------------------------- ManualScheduleTrigger

@pytest.mark.parametrize('points, unit, n, batch, steps, expected', [
    ([2, 5], 'iteration', 10, 1, 7, [2, 5]),
    (3, 'iteration', 10, 1, 7, [3]),
    ((5, 2, 2), 'iteration', 10, 1, 7, [2, 5]),
    ([0, 1], 'iteration', 10, 1, 3, [1]),                # 0 never fires
    ([1, 2], 'epoch', 10, 3, 10, [4, 7]),
    ([0.5, 1.2, 2.5], 'epoch', 10, 3, 12, [2, 4, 9]),
    ([1.0, 1.05, 1.1], 'epoch', 10, 3, 6, [4]),          # several points in one step fire once
    ([0.25], 'epoch', 4, 1, 4, [1]),
])
def test_manual_schedule_trigger(points, unit, n, batch, steps, expected):
    seq = trainers(n, batch, steps)
    assert fired_at(lambda: ManualScheduleTrigger(points, unit), seq) == expected


def test_manual_schedule_trigger_finished():
    trigger = ManualScheduleTrigger([1, 3], 'iteration')
    seq = trainers(10, 1, 4)
    finished = []
    for k, trainer in enumerate(seq):
        trigger(trainer)
        finished.append(trigger.finished)
        if k == 1:
            resumed = ManualScheduleTrigger([1, 3], 'iteration')
            resumed.load_state_dict(roundtrip(trigger.state_dict()))
            assert resumed.finished is False
    assert finished == [False, False, False, True, True]


@pytest.mark.parametrize('points, unit, error', [
    ([], 'iteration', ValueError),
    ([1], 'epochs', ValueError),
])
def test_manual_schedule_trigger_bad_input(points, unit, error):
    with pytest.raises(error):
        ManualScheduleTrigger(points, unit)


# ---------------------------------------------------------------- Min/MaxValueTrigger

LOSSES = [3, 1, 2, 2, 0.5, 0.7, 4, 4, 0.1, 0.1]   # pairs' means: 2, 2, 0.6, 4, 0.1


@pytest.mark.parametrize('cls, interval, n, batch, values, expected', [
    (MinValueTrigger, (2, 'iteration'), 10, 1, LOSSES, [2, 6, 10]),
    (MaxValueTrigger, (2, 'iteration'), 10, 1, LOSSES, [2, 8]),
    (MinValueTrigger, (1, 'epoch'), 4, 2, LOSSES, [2, 6, 10]),         # 2 iterations per epoch
    (MaxValueTrigger, (1, 'epoch'), 4, 2, LOSSES, [2, 8]),
    (MinValueTrigger, (1, 'epoch'), 5, 2, LOSSES, [3, 5, 10]),  # means 2, 1.25, 2.9, 0.1
    (MaxValueTrigger, (1, 'iteration'), 4, 1, LOSSES, [1, 7]),
    (MinValueTrigger, (1, 'iteration'), 4, 1, LOSSES, [1, 2, 5, 9]),   # equal is no improvement
    (MinValueTrigger, (3, 'iteration'), 4, 1,                # a missing value is no sample
     [1, None, 1, 0.5, 0.5, 0.5, None, None, 0.2], [3, 6, 9]),
])
def test_best_value_trigger(cls, interval, n, batch, values, expected):
    seq = trainers(n, batch, len(values), values)
    assert fired_at(lambda: cls('main/loss', trigger=interval), seq) == expected


def test_best_value_trigger_weighted_by_iteration_and_saved_mid_interval():
    trigger = MinValueTrigger('main/loss', (4, 'iteration'))
    seq = trainers(10, 1, 8, [1.0, 2.0, 3.0, 6.0, 1.0, 1.0, 2.0, 8.0])
    for trainer in seq[:3]:
        trigger(trainer)
    state = roundtrip(trigger.state_dict())
    resumed = MinValueTrigger('main/loss', (4, 'iteration'))
    resumed.load_state_dict(state)
    assert [resumed(t) for t in seq[3:]] == [False, True, False, False, False, False]
    assert resumed.best_value == 3.0   # mean(1, 2, 3, 6); then mean(1, 1, 2, 8) = 3 is not better


def test_best_value_trigger_missing_key():
    trigger = MaxValueTrigger('validation/main/accuracy', (1, 'iteration'))
    seq = trainers(4, 1, 1, [0.5])
    trigger(seq[0])
    with pytest.raises(KeyError, match='validation/main/accuracy'):
        trigger(seq[1])


# ---------------------------------------------------------------- EarlyStoppingTrigger

# Checked every 2 iterations: means 5, 4, 4.5, 3.9, 4, 4 -> stops at the 6th check (patience 2).
PLATEAU = [5, 5, 4, 4, 4.5, 4.5, 3.9, 3.9, 4, 4, 4, 4, 0, 0]
ACCURACY = [0.5, 0.5, 0.6, 0.6, 0.55, 0.55, 0.7, 0.7, 0.6, 0.6, 0.7, 0.7, 1, 1]


@pytest.mark.parametrize('kwargs, n, batch, values, expected', [
    (dict(check_trigger=(2, 'iteration'), patience=2), 10, 1, PLATEAU, [12]),
    (dict(check_trigger=(2, 'iteration'), patience=3), 10, 1, PLATEAU, []),   # 0 at 14 improves
    (dict(check_trigger=(2, 'iteration'), patience=1), 10, 1, PLATEAU, [6]),
    (dict(check_trigger=(1, 'epoch'), patience=2), 4, 2, PLATEAU, [12]),
    (dict(check_trigger=(1, 'epoch'), patience=2, mode='min'), 4, 2, PLATEAU, [12]),
    (dict(check_trigger=(2, 'iteration'), patience=2, mode='max'), 10, 1, PLATEAU, [6]),
    (dict(check_trigger=(2, 'iteration'), patience=2, monitor='main/accuracy'), 10, 1,
     ACCURACY, [12]),                                                          # auto -> max
    (dict(check_trigger=(2, 'iteration'), patience=2, monitor='main/accuracy', mode='min'),
     10, 1, ACCURACY, [6]),
    (dict(check_trigger=(2, 'iteration'), patience=5, max_trigger=(7, 'iteration')), 10, 1,
     PLATEAU, [7]),
    (dict(check_trigger=(2, 'iteration'), patience=5, max_trigger=(2, 'epoch')), 3, 1,
     PLATEAU, [6]),
])
def test_early_stopping_trigger(kwargs, n, batch, values, expected):
    key = kwargs.get('monitor', 'main/loss')
    seq = trainers(n, batch, len(values), values, key=key)
    fired = fired_at(lambda: EarlyStoppingTrigger(**kwargs), seq)
    assert fired[:1] == expected


def test_early_stopping_trigger_training_length_and_verbose(capsys):
    trigger = EarlyStoppingTrigger(check_trigger=(1, 'iteration'), patience=1, verbose=True,
                                   max_trigger=(30, 'epoch'))
    assert trigger.get_training_length() == (30, 'epoch')
    seq = trainers(10, 1, 2, [1.0, 2.0])
    assert [trigger(t) for t in seq] == [False, False, True]
    assert 'main/loss' in capsys.readouterr().out


def test_early_stopping_trigger_warns_when_not_reported():
    trigger = EarlyStoppingTrigger(check_trigger=(1, 'iteration'), monitor='validation/main/loss')
    seq = trainers(10, 1, 2, [1.0, 2.0])
    with pytest.warns(UserWarning, match='validation/main/loss'):
        assert [trigger(t) for t in seq] == [False, False, False]


@pytest.mark.parametrize('kwargs', [dict(patience=0), dict(mode='best')])
def test_early_stopping_trigger_bad_input(kwargs):
    with pytest.raises(ValueError):
        EarlyStoppingTrigger(**kwargs)


# ---------------------------------------------------------------- OnceTrigger

@pytest.mark.parametrize('call_on_resume, split, expected', [
    (False, None, [True, False, False, False]),
    (False, 0, [True, False, False, False]),        # loading a fresh state changes nothing
    (False, 2, [True, False, False, False]),
    (True, None, [True, False, False, False]),
    (True, 2, [True, False, True, False]),          # fires again once after a resume
    (True, 1, [True, True, False, False]),
])
def test_once_trigger(call_on_resume, split, expected):
    seq = trainers(4, 1, 3)
    assert run(lambda: OnceTrigger(call_on_resume), seq, split) == expected


# ---------------------------------------------------------------- TimeTrigger

@pytest.mark.parametrize('period, times, expected', [
    (1.0, [0.0, 0.5, 1.0, 1.5, 2.2, 2.9, 3.1], [2, 4, 6]),
    (2.5, [0.0, 1.0, 2.4, 2.6, 4.0, 5.0, 9.0, 9.1], [3, 5, 6]),
    (0.1, [0.05, 0.3, 0.31, 0.32], [1, 2, 3]),
])
def test_time_trigger(period, times, expected):
    seq = [SimpleNamespace(elapsed_time=t) for t in times]
    assert fired_at(lambda: TimeTrigger(period), seq) == expected


@pytest.mark.parametrize('period', [0, -1.0])
def test_time_trigger_bad_period(period):
    with pytest.raises(ValueError, match='positive'):
        TimeTrigger(period)


# ---------------------------------------------------------------- get_trigger

def test_get_trigger_none_never_fires():
    trigger = get_trigger(None)
    assert not any(trigger(t) for t in trainers(3, 1, 9))


@pytest.mark.parametrize('spec', [(2, 'iteration'), [2, 'iteration'], (0.5, 'epoch')])
def test_get_trigger_tuple(spec):
    trigger = get_trigger(spec)
    assert isinstance(trigger, IntervalTrigger)
    assert (trigger.period, trigger.unit) == tuple(spec)


def test_get_trigger_callable_as_is():
    def fn(trainer):
        return trainer.updater.iteration == 2
    once = OnceTrigger()
    assert get_trigger(fn) is fn and get_trigger(once) is once


@pytest.mark.parametrize('spec, error, match', [
    ((1, 'epochs'), ValueError, "'iteration'.*'epoch'"),
    ((1, 'step'), ValueError, 'iteration'),
    ((1.5, 'iteration'), ValueError, 'integer'),
    ((0, 'epoch'), ValueError, 'positive'),
    ((-2, 'iteration'), ValueError, 'positive'),
    ((1, 'epoch', 2), TypeError, 'period, unit'),
    ('epoch', TypeError, 'period, unit'),
    (3, TypeError, 'period, unit'),
])
def test_get_trigger_bad_input(spec, error, match):
    with pytest.raises(error, match=match):
        get_trigger(spec)


# ---------------------------------------------------------------- with the real Trainer

class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 1)

    def forward(self, x, t):
        loss = torch.nn.functional.mse_loss(self.fc(x).squeeze(1), t)
        report({'loss': loss}, self)
        return loss


def make_trainer(tmp_path, stop, fired, capture=None):
    """10 examples, batch 3 (uneven epochs); extensions record the iterations they fire at."""
    torch.manual_seed(0)
    x = torch.randn(10, 2)
    dataset = torch.utils.data.TensorDataset(x, x.sum(1))
    model = Linear()
    updater = StandardUpdater(SerialIterator(dataset, 3, seed=1), torch.optim.SGD(
        model.parameters(), lr=0.1), model)
    trainer = Trainer(updater, stop, out=str(tmp_path))
    for name, trig in [('half', (0.5, 'epoch')),
                       ('manual', ManualScheduleTrigger([3, 8], 'iteration')),
                       ('best', MinValueTrigger('main/loss', (2, 'iteration'))),
                       ('time', TimeTrigger(1e9))]:
        trainer.extend(lambda t, name=name: fired.setdefault(name, []).append(t.updater.iteration),
                       name=name, trigger=trig)
    if capture is not None:
        @make_extension(trigger=(capture[0], 'iteration'), priority=PRIORITY_SNAPSHOT)
        def snap(t):
            capture[1].append(roundtrip(t.state_dict()))
        trainer.extend(snap)
    return trainer


def test_triggers_in_trainer_resume_at_every_iteration(tmp_path):
    fired = {}
    make_trainer(tmp_path, (3, 'epoch'), fired).run()
    assert fired['half'] == [2, 4, 5, 7, 9, 10]
    assert fired['manual'] == [3, 8]
    assert fired['best'][0] == 2 and set(fired['best']) <= {2, 4, 6, 8, 10}
    assert 'time' not in fired

    states = []
    make_trainer(tmp_path, (3, 'epoch'), {}, capture=(1, states)).run()
    assert len(states) == 10
    for k in range(1, 10):
        resumed = {}
        trainer = make_trainer(tmp_path, (3, 'epoch'), resumed)
        trainer.load_state_dict(states[k - 1])
        trainer.run()
        assert trainer.updater.iteration == 10
        assert resumed == {name: [i for i in its if i > k] for name, its in fired.items()
                           if any(i > k for i in its)}, f'resumed at iteration {k}'


def test_stop_trigger_epoch_stops_after_the_update_ending_the_epoch(tmp_path):
    trainer = make_trainer(tmp_path, (2, 'epoch'), {})
    trainer.run()
    assert trainer.updater.iteration == 7 and trainer.updater.epoch == 2


def test_early_stopping_as_stop_trigger_resumes_exactly(tmp_path):
    def stop():
        return EarlyStoppingTrigger(check_trigger=(4, 'iteration'), patience=10,
                                    max_trigger=(6, 'iteration'))

    states = []
    trainer = make_trainer(tmp_path, stop(), {}, capture=(2, states))
    trainer.run()
    full = trainer.stop_trigger.state_dict()
    resumed = make_trainer(tmp_path, stop(), {})
    resumed.load_state_dict(states[0])    # taken at iteration 2
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        resumed.run()
    assert resumed.updater.iteration == trainer.updater.iteration
    assert resumed.stop_trigger.best == full['best']


def test_state_saved_in_another_unit_is_ignored():
    """Resuming a run stopped by (60, 'iteration') with (2, 'epoch') must not misfire."""
    saved = IntervalTrigger(60, 'iteration')
    saved._previous = 60
    trigger = IntervalTrigger(2, 'epoch')
    trigger.load_state_dict(saved.state_dict())
    updater = SimpleNamespace(iteration=61, epoch_detail=1.02, previous_epoch_detail=1.0)
    assert trigger(SimpleNamespace(updater=updater)) is False


@pytest.mark.parametrize('trigger, iteration, expected', [
    (IntervalTrigger(3, 'iteration'), 0, 3),
    (IntervalTrigger(3, 'iteration'), 2, 3),
    (IntervalTrigger(3, 'iteration'), 3, 6),
    (IntervalTrigger(3, 'iteration'), -1, 0),
    (IntervalTrigger(1, 'epoch'), 5, None),          # epochs: asked every iteration
    (ManualScheduleTrigger([2, 7], 'iteration'), 0, 2),
    (ManualScheduleTrigger([2, 7], 'iteration'), 2, 7),
    (ManualScheduleTrigger([2, 7], 'iteration'), 7, math.inf),
    (ManualScheduleTrigger([2, 7], 'epoch'), 0, None),
    (get_trigger(None), 4, math.inf),
])
def test_next_fire(trigger, iteration, expected):
    assert trigger.next_fire(iteration) == expected


@pytest.mark.parametrize('trigger, every_call', [
    (IntervalTrigger(1, 'iteration'), [True] * 6),
    (IntervalTrigger(2, 'iteration'), [False, True] * 3),
    (ManualScheduleTrigger([1, 5], 'iteration'), [True, False, False, False, True, False]),
    (IntervalTrigger(0.5, 'epoch'), [False, True] * 3),
])
def test_trigger_schedule_fires_as_the_trigger_asked_every_iteration(trigger, every_call):
    schedule = TriggerSchedule(trigger)
    schedule.start(0)
    fired = [schedule(trainer, trainer.updater.iteration)
             for trainer in trainers(16, 4, len(every_call))[1:]]   # 4 iterations per epoch
    assert fired == every_call
