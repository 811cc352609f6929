"""Fire when a reported value reaches a new best (max or min)."""
from __future__ import annotations

import operator
from typing import Callable, Optional

from trainerlib._state import guess_previous, load_into, state_of
from trainerlib.distributed.context import comm_of
from trainerlib.summary import DictSummary
from trainerlib.triggers.get_trigger import TriggerLike, get_trigger


class BestValueTrigger:
    """Fires at the checks (of ``trigger``) where the mean of ``key`` beats the best so far.

    The best value and the partial mean are saved, so the trigger survives resume.

    Data-parallel (``trainer.comm`` of several ranks): ask it on every rank; each rank
    accumulates its own values and at a check the sums of all ranks are added in one
    all-reduce, so every rank compares the same global mean and takes the same
    decision (a ``snapshot_object`` it drives can then write on rank 0 alone).

    Args:
        key: observation key, e.g. ``'validation/main/accuracy'``.
        compare: ``compare(best, new)`` is True when ``new`` is better.
        trigger: when to check, default ``(1, 'epoch')``.
    """

    def __init__(self, key: str, compare: Callable[[float, float], bool],
                 trigger: TriggerLike = (1, 'epoch')) -> None:
        self.key = key
        self._compare = compare
        self._interval_trigger = get_trigger(trigger)
        self._summary = DictSummary()
        self.best_value: Optional[float] = None

    def __call__(self, trainer) -> bool:
        key = self.key
        if key in trainer.observation:
            self._summary.add({key: trainer.observation[key]})
        if not self._interval_trigger(trainer):
            return False
        summary = self._summary
        comm = comm_of(trainer)
        if comm.size > 1:   # the same mean, hence the same decision, on every rank
            summary = summary.allreduce(comm, keys=(key,))
        stats = summary.compute_mean()
        if key not in stats:
            raise KeyError(f'{type(self).__name__}: key {key!r} was not reported since the last '
                           f'check; reported keys: {sorted(trainer.observation)}')
        value = float(stats[key])
        self._summary = DictSummary()
        if self.best_value is None or self._compare(self.best_value, value):
            self.best_value = value
            return True
        return False

    def guess_previous(self) -> None:
        """Its inner triggers guess their previous position (see IntervalTrigger)."""
        guess_previous(self._interval_trigger)

    def state_dict(self) -> dict:
        return {'best_value': self.best_value, 'summary': self._summary.state_dict(),
                'interval_trigger': state_of(self._interval_trigger)}

    def load_state_dict(self, state: dict) -> None:
        self.best_value = state['best_value']
        self._summary.load_state_dict(state['summary'])
        load_into(self._interval_trigger, state['interval_trigger'])


class MaxValueTrigger(BestValueTrigger):
    """Fires when the mean of ``key`` is the largest seen so far at a check."""

    def __init__(self, key: str, trigger: TriggerLike = (1, 'epoch')) -> None:
        super().__init__(key, operator.lt, trigger)


class MinValueTrigger(BestValueTrigger):
    """Fires when the mean of ``key`` is the smallest seen so far at a check."""

    def __init__(self, key: str, trigger: TriggerLike = (1, 'epoch')) -> None:
        super().__init__(key, operator.gt, trigger)
