"""Triggers with an updater that lacks ``previous_epoch_detail`` (Chainer's may)."""
from types import SimpleNamespace

from trainerlib.triggers import IntervalTrigger, ManualScheduleTrigger

EPOCH_LENGTH = 7     # iterations per epoch of the simulated updater (epoch_detail = i / 7)


def at(iteration):
    return SimpleNamespace(updater=SimpleNamespace(iteration=iteration,
                                                   epoch_detail=iteration / EPOCH_LENGTH))


def test_an_epoch_trigger_works_with_an_updater_lacking_previous_epoch_detail():
    trigger = IntervalTrigger(1, 'epoch')
    fired = [trigger(at(i)) for i in range(1, 15)]   # no previous_epoch_detail
    assert [i for i, f in zip(range(1, 15), fired) if f] == [7, 14]


def test_a_manual_epoch_schedule_works_with_an_updater_lacking_previous_epoch_detail():
    trigger = ManualScheduleTrigger([1, 1.5], 'epoch')
    fired = [trigger(at(i)) for i in range(1, 15)]
    assert [i for i, f in zip(range(1, 15), fired) if f] == [7, 11]
