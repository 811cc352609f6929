"""IntervalTrigger and ManualScheduleTrigger asked sparsely, as Chainer 7.8.1 defines it.

A trigger fires when a boundary was crossed since its previous call, the first call
counting from position 0; a trigger the resumed snapshot knows nothing about guesses its
previous position instead (Chainer: its ``serialize`` found no key). Tables first, then
random call patterns against a brute-force reference in exact rational arithmetic.
"""
import io
import random
from fractions import Fraction
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import TensorDataset

import extensions as E
from trainerlib import Classifier, Trainer
from trainerlib.iterators import SerialIterator
from trainerlib.serialization import load_snapshot, save_state
from trainerlib.triggers import (EarlyStoppingTrigger, IntervalTrigger, ManualScheduleTrigger,
                                 MaxValueTrigger)
from trainerlib.updaters import StandardUpdater


def at(iteration, per_epoch=10):
    """A fake trainer at ``iteration``, ``per_epoch`` iterations per epoch."""
    e = Fraction(iteration, per_epoch)
    prev = float(Fraction(iteration - 1, per_epoch)) if iteration else None
    return SimpleNamespace(updater=SimpleNamespace(
        iteration=iteration, epoch_detail=float(e), previous_epoch_detail=prev), observation={})


def roundtrip(trigger, make):
    buf = io.BytesIO()
    torch.save(trigger.state_dict(), buf)
    buf.seek(0)
    fresh = make()
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    return fresh


@pytest.mark.parametrize('make, calls, expected', [
    # Chainer's rule: first asked at 3, (2, 'iteration') fires (2 was crossed since 0)
    (lambda: IntervalTrigger(2, 'iteration'), [3], [True]),
    (lambda: IntervalTrigger(2, 'iteration'), [1], [False]),
    (lambda: IntervalTrigger(2, 'iteration'), [3, 4, 7, 8], [True] * 4),
    (lambda: IntervalTrigger(2, 'iteration'), [3, 3, 5, 5], [True, False, True, False]),
    (lambda: IntervalTrigger(5, 'iteration'), [4, 6, 9, 10, 16], [False, True, False, True, True]),
    (lambda: IntervalTrigger(1, 'epoch'), [25], [True]),                 # epoch 2.5: crossed 1, 2
    (lambda: IntervalTrigger(1, 'epoch'), [9, 11, 19, 30], [False, True, False, True]),
    (lambda: IntervalTrigger(0.5, 'epoch'), [4, 7, 12, 13], [False, True, True, False]),
    (lambda: ManualScheduleTrigger([2, 4], 'iteration'), [5], [True]),   # both points at once
    (lambda: ManualScheduleTrigger([2, 4], 'iteration'), [1, 3, 3, 9], [False, True, False, True]),
    (lambda: ManualScheduleTrigger([0.5, 2], 'epoch'), [3, 6, 21, 25], [False, True, True, False]),
])
def test_sparse_calls_count_from_zero(make, calls, expected):
    for split in [None] + list(range(len(calls) + 1)):   # a save -> load before any call
        trigger, fired = make(), []
        for k, it in enumerate(calls):
            if k == split:
                trigger = roundtrip(trigger, make)
            fired.append(trigger(at(it)))
        assert fired == expected, f'resumed before call {split}'


@pytest.mark.parametrize('make, first, fires', [
    (lambda: IntervalTrigger(2, 'iteration'), 3, False),   # guesses previous = 2
    (lambda: IntervalTrigger(2, 'iteration'), 4, True),
    (lambda: IntervalTrigger(1, 'epoch'), 25, False),      # guesses the updater's 2.4
    (lambda: IntervalTrigger(1, 'epoch'), 20, True),
    (lambda: ManualScheduleTrigger([2, 4], 'iteration'), 5, False),
    (lambda: ManualScheduleTrigger([2, 4], 'iteration'), 4, True),
    (lambda: MaxValueTrigger('v', (1, 'epoch')), 25, False),
    (lambda: EarlyStoppingTrigger((1, 'epoch'), 'v', max_trigger=(2, 'epoch')), 25, False),
])
def test_guess_previous_guesses_from_the_updater(make, first, fires):
    trigger = make()
    trigger.guess_previous()
    assert bool(trigger(at(first))) is fires


# ------------------------------------------------- random call patterns vs brute force

PERIODS = {'iteration': [1, 2, 3, 5, 7], 'epoch': [Fraction(1, 10), Fraction(1, 4),
                                                   Fraction(1, 2), 1, Fraction(3, 2), 2]}


def reference(kind, spec, positions):
    """Exact fire sequence: a boundary in (previous position, current position], from 0."""
    fired, previous = [], Fraction(0)
    for x in positions:
        if kind == 'interval':
            fired.append(previous // spec != x // spec)
        else:
            fired.append(any(previous < p <= x for p in spec))
        previous = x
    return fired


def random_case(seed):
    rng = random.Random(seed)
    kind, unit = rng.choice(['interval', 'manual']), rng.choice(['iteration', 'epoch'])
    per_epoch = rng.choice([1, 3, 4, 7, 10])
    if kind == 'interval':
        spec = Fraction(rng.choice(PERIODS[unit]))
        make = lambda: IntervalTrigger(float(spec) if unit == 'epoch' else int(spec), unit)  # noqa
    else:
        scale = 1 if unit == 'iteration' else rng.choice([2, 4, 10])
        spec = sorted({Fraction(rng.randint(0, 40), scale) for _ in range(rng.randint(1, 5))})
        make = lambda: ManualScheduleTrigger(  # noqa: E731
            [float(p) if unit == 'epoch' else int(p) for p in spec], unit)
    calls = sorted(rng.choices(range(0, 60), k=rng.randint(1, 12)))   # repeats allowed
    split = rng.randint(0, len(calls))
    positions = [Fraction(i) if unit == 'iteration' else Fraction(i, per_epoch) for i in calls]
    return make, calls, split, per_epoch, reference(kind, spec, positions)


@pytest.mark.parametrize('seed', range(300))
def test_random_sparse_calls_match_the_brute_force_reference(seed):
    make, calls, split, per_epoch, expected = random_case(seed)
    trigger, fired = make(), []
    for k, it in enumerate(calls):
        if k == split:
            trigger = roundtrip(trigger, make)
        fired.append(bool(trigger(at(it, per_epoch))))
    assert fired == expected, (trigger, calls, split, per_epoch)


# ------------------------------------------------- inside a Trainer

def tiny_trainer(out, stop):
    torch.manual_seed(0)
    model = Classifier(torch.nn.Linear(2, 2))
    data = TensorDataset(torch.randn(12, 2), torch.randint(0, 2, (12,)))
    updater = StandardUpdater(SerialIterator(data, 3, seed=0),      # 4 iterations per epoch
                              torch.optim.SGD(model.parameters(), lr=0.1), model)
    return Trainer(updater, stop, out=str(out))


def test_a_trigger_asked_from_inside_an_extension(tmp_path):
    """An extension run every 3 iterations asks its own (2, 'iteration') trigger."""
    trainer = tiny_trainer(tmp_path, (12, 'iteration'))
    inner, seen = IntervalTrigger(2, 'iteration'), []
    trainer.extend(lambda tr: seen.append((tr.updater.iteration, inner(tr))),
                   trigger=(3, 'iteration'))
    trainer.run()
    # 3: crossed 2; 6: 4, 6; 9: 8; 12: 10, 12
    assert seen == [(3, True), (6, True), (9, True), (12, True)]


def test_a_trigger_added_on_resume_does_not_count_from_zero(tmp_path):
    """An epoch trigger of an extension the snapshot does not know first fires at the next
    epoch end, not at the first iteration after the resume (Chainer guesses there too)."""
    first = tiny_trainer(tmp_path, (6, 'iteration'))
    first.run()
    save_state(first.state_dict(), str(tmp_path / 'snap'))
    resumed, calls = tiny_trainer(tmp_path, (3, 'epoch')), []
    resumed.extend(lambda tr: calls.append(tr.updater.iteration), name='new',
                   trigger=(1, 'epoch'))
    load_snapshot(str(tmp_path / 'snap'), resumed)
    resumed.run()
    assert calls == [8, 12]


def test_an_extension_added_on_resume_does_not_count_from_zero(tmp_path):
    """A LogReport the snapshot does not know writes its first entry at the next epoch end."""
    first = tiny_trainer(tmp_path / 'a', (6, 'iteration'))
    first.run()
    save_state(first.state_dict(), str(tmp_path / 'snap'))
    resumed = tiny_trainer(tmp_path / 'b', (3, 'epoch'))
    log = E.LogReport(trigger=(1, 'epoch'))
    resumed.extend(log)
    load_snapshot(str(tmp_path / 'snap'), resumed)
    resumed.run()
    assert [e['iteration'] for e in log.log] == [8, 12]
