"""Fire every ``period`` iterations or epochs."""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

UNITS = ('iteration', 'epoch')


def check_unit(unit: str) -> None:
    if unit not in UNITS:
        raise ValueError(f"unknown trigger unit {unit!r}: use 'iteration' or 'epoch', "
                         "e.g. (1, 'epoch') or (100, 'iteration')")


def position(updater, unit: str) -> Tuple[float, float]:
    """``(previous, current)`` position of the updater in ``unit`` (guessing previous)."""
    if unit == 'iteration':
        it = updater.iteration
        return max(it - 1, 0), it
    prev = getattr(updater, 'previous_epoch_detail', None)   # Chainer's updaters may lack it
    return (0.0 if prev is None else prev), updater.epoch_detail


class IntervalTrigger:
    """Fires when the iteration count (or ``epoch_detail``) crosses a multiple of ``period``.

    Stateful, as Chainer's: it fires when a boundary was crossed since its previous
    call, counting from 0 at the first call (first asked at iteration 3,
    ``(2, 'iteration')`` fires), so it works when called every iteration, sparsely
    (from inside an extension), for fractional epochs, and for epochs that are not a
    whole number of batches. It never fires at iteration 0. After
    :meth:`guess_previous` (a resumed snapshot had no state for it) the previous
    position is guessed: one iteration back, or the updater's ``previous_epoch_detail``.

    Args:
        period: length of the interval (> 0; an integer for ``'iteration'``).
        unit: ``'iteration'`` or ``'epoch'``.
    """

    def __init__(self, period: Union[int, float], unit: str) -> None:
        check_unit(unit)
        if not period > 0:
            raise ValueError(f'trigger period must be positive, got {period!r}')
        if unit == 'iteration' and int(period) != period:
            raise ValueError(f"an 'iteration' period must be an integer, got {period!r}; "
                             "use the 'epoch' unit for fractional periods")
        self.period = period
        self.unit = unit
        self._previous: Optional[float] = 0   # None: guess it at the next call

    def __call__(self, trainer) -> bool:
        updater = trainer.updater
        previous = self._previous
        if self.unit == 'iteration':     # the common case, kept short: it runs every iteration
            current = updater.iteration
            if previous is None:
                previous = max(current - 1, 0)
            self._previous = current
            return previous // self.period != current // self.period
        current = updater.epoch_detail
        if previous is None:
            previous = getattr(updater, 'previous_epoch_detail', None) or 0.0
        self._previous = current
        return self._epochs(previous) != self._epochs(current)

    @property
    def fires_every_iteration(self) -> bool:
        """True for ``(1, 'iteration')``: the Trainer, which calls it once per
        iteration, then skips the call (it would always fire)."""
        return self.unit == 'iteration' and self.period == 1

    def next_fire(self, iteration: int) -> Optional[float]:
        """The first iteration after ``iteration`` that is a multiple of the period
        (``'iteration'`` unit); None for ``'epoch'``, which must be asked every iteration.

        The Trainer then asks this trigger only at that iteration: skipping the calls in
        between does not change when it fires (its state then moves only at those calls)."""
        if self.unit != 'iteration':
            return None
        return (iteration // self.period + 1) * self.period

    def _epochs(self, x: float) -> int:
        """Whole periods in ``x`` epochs, tolerant of rounding (0.3 / 0.1 < 3)."""
        return math.floor(x / self.period + 1e-9)

    def guess_previous(self) -> None:
        """Forget the previous position: the next call guesses it from the updater."""
        self._previous = None

    def get_training_length(self) -> Tuple[Union[int, float], str]:
        return self.period, self.unit

    def state_dict(self) -> dict:
        return {'previous': self._previous, 'unit': self.unit}

    def load_state_dict(self, state: dict) -> None:
        # a position saved in another unit means nothing here: guess it instead
        self._previous = state['previous'] if state.get('unit', self.unit) == self.unit else None

    def __repr__(self) -> str:
        return f'IntervalTrigger({self.period!r}, {self.unit!r})'
