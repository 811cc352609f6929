"""Stop training when a monitored value stops improving."""
from __future__ import annotations

import operator
import warnings
from typing import Optional

from trainerlib._state import guess_previous, load_into, state_of
from trainerlib.distributed.context import comm_of
from trainerlib.summary import DictSummary
from trainerlib.triggers.get_trigger import TriggerLike, get_trigger


class EarlyStoppingTrigger:
    """A stop trigger that fires after ``patience`` checks without improvement.

    Use it as the Trainer's ``stop_trigger``. Its best value, patience counter
    and partial mean are saved, so patience survives resume.

    Data-parallel (``trainer.comm`` of several ranks): ask it on every rank; each rank
    accumulates its own values and at a check the sums of all ranks are added in one
    all-reduce, so every rank sees the same global mean and stops after the same
    iteration.

    Args:
        check_trigger: when to compare, default ``(1, 'epoch')``.
        monitor: observation key, default ``'main/loss'``.
        patience: checks without improvement before stopping (default 3).
        patients: Chainer's alias of ``patience``.
        mode: ``'min'``, ``'max'`` or ``'auto'`` (max if 'accuracy' is in the key).
        verbose: print a line when stopping.
        max_trigger: hard stop, default ``(100, 'epoch')``.
    """

    def __init__(self, check_trigger: TriggerLike = (1, 'epoch'), monitor: str = 'main/loss',
                 patience: Optional[int] = None, mode: str = 'auto', verbose: bool = False,
                 max_trigger: TriggerLike = (100, 'epoch'), *,
                 patients: Optional[int] = None) -> None:
        if patience is not None and patients is not None:
            raise TypeError("EarlyStoppingTrigger: both 'patience' and 'patients' are given; "
                            "'patients' is Chainer's alias of 'patience': give only 'patience'")
        patience = next((p for p in (patience, patients) if p is not None), 3)
        if patience < 1:
            raise ValueError(f'patience must be >= 1, got {patience}')
        if mode == 'auto':
            mode = 'max' if 'accuracy' in monitor else 'min'
        if mode not in ('min', 'max'):
            raise ValueError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
        self.monitor = monitor
        self.patience = patience
        self.verbose = verbose
        self._better = operator.lt if mode == 'min' else operator.gt
        self._check_trigger = get_trigger(check_trigger)
        self._max_trigger = get_trigger(max_trigger)
        self._summary = DictSummary()
        self.best: Optional[float] = None
        self.count = 0

    def __call__(self, trainer) -> bool:
        observation = trainer.observation
        if self.monitor in observation:
            self._summary.add({self.monitor: observation[self.monitor]})
        if self._max_trigger(trainer):
            return True
        if not self._check_trigger(trainer):
            return False
        summary = self._summary
        comm = comm_of(trainer)
        if comm.size > 1:   # the same mean, hence the same decision, on every rank
            summary = summary.allreduce(comm, keys=(self.monitor,))
        stats = summary.compute_mean() if len(summary) else {}
        if self.monitor not in stats:
            warnings.warn(f'EarlyStoppingTrigger: {self.monitor!r} was not reported; '
                          f'available keys: {sorted(observation)}')
            return False
        value = float(stats[self.monitor])
        self._summary = DictSummary()
        if self.best is None or self._better(value, self.best):
            self.best, self.count = value, 0
        else:
            self.count += 1
        if self.count >= self.patience:
            if self.verbose:
                print(f'Early stopping: {self.monitor} did not improve for {self.count} checks '
                      f'(best {self.best:g})')
            return True
        return False

    def get_training_length(self):
        return getattr(self._max_trigger, 'get_training_length', lambda: None)()

    def guess_previous(self) -> None:
        """Its inner triggers guess their previous position (see IntervalTrigger)."""
        guess_previous(self._check_trigger)
        guess_previous(self._max_trigger)

    def state_dict(self) -> dict:
        return {'best': self.best, 'count': self.count, 'summary': self._summary.state_dict(),
                'check_trigger': state_of(self._check_trigger),
                'max_trigger': state_of(self._max_trigger)}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.count = state['best'], state['count']
        self._summary.load_state_dict(state['summary'])
        load_into(self._check_trigger, state['check_trigger'])
        load_into(self._max_trigger, state['max_trigger'])
