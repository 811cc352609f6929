"""Fire at explicitly listed iterations or epochs."""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

from trainerlib.triggers.interval_trigger import check_unit, position

Number = Union[int, float]


class ManualScheduleTrigger:
    """Fires when the position crossed one of ``points`` since the previous call.

    Counted from 0 at the first call, as Chainer's (first asked at iteration 5 with
    ``points=[2, 4]``: fires once); after :meth:`guess_previous` the previous position
    is guessed, as :class:`IntervalTrigger` does.

    Args:
        points: a number or a sequence of numbers (iterations or epochs).
        unit: ``'iteration'`` or ``'epoch'``.

    Attributes:
        finished: True once the last point has been passed.
    """

    def __init__(self, points: Union[Number, Sequence[Number]], unit: str) -> None:
        check_unit(unit)
        self.points = sorted(points) if isinstance(points, (list, tuple)) else [points]
        if not self.points:
            raise ValueError('ManualScheduleTrigger needs at least one point')
        self.unit = unit
        self.finished = False
        self._previous: Optional[Number] = 0   # None: guess it at the next call

    def __call__(self, trainer) -> bool:
        guess, current = position(trainer.updater, self.unit)
        previous = guess if self._previous is None else self._previous
        self._previous = current
        self.finished = self.points[-1] <= current
        return any(previous < p <= current for p in self.points)

    def next_fire(self, iteration: int) -> Optional[float]:
        """The first point after ``iteration`` (``math.inf`` past the last one) in the
        ``'iteration'`` unit, where the Trainer asks only then; None for ``'epoch'``."""
        if self.unit != 'iteration':
            return None
        return next((p for p in self.points if p > iteration), math.inf)

    def guess_previous(self) -> None:
        """Forget the previous position: the next call guesses it from the updater."""
        self._previous = None

    def state_dict(self) -> dict:
        return {'previous': self._previous, 'finished': self.finished, 'unit': self.unit}

    def load_state_dict(self, state: dict) -> None:
        same_unit = state.get('unit', self.unit) == self.unit
        self._previous = state['previous'] if same_unit else None
        self.finished = state['finished']
