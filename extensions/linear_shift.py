"""LinearShift: move a hyperparameter linearly from one value to another."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from trainerlib.extensions._shift import Attr, Shift


class LinearShift(Shift):
    """Keeps ``attr`` at ``v1`` up to call ``t1``, moves it linearly to ``v2`` at ``t2``.

    With ``value_range=(v1, v2)`` and ``time_range=(t1, t2)``, after the ``t``-th call
    (iteration, by default) the value is ``v1`` for ``t <= t1``, ``v2`` for
    ``t >= t2`` and ``v1 + (t - t1) / (t2 - t1) * (v2 - v1)`` in between, as Chainer's.
    The values are absolute: every selected group gets the same value.

    Args:
        attr: param-group key, e.g. ``'momentum'``, or ``(key, index)`` such as
            ``('betas', 0)``.
        value_range: ``(v1, v2)``, the first and the last value.
        time_range: ``(t1, t2)``, the calls where the change starts and ends.
        optimizer: the optimizer; None: ``trainer.updater.get_optimizer('main')``.
        param_groups: indices of the groups to shift; None: all.
    """

    def __init__(self, attr: Attr, value_range: Tuple[float, float],
                 time_range: Tuple[int, int],
                 optimizer: Optional[torch.optim.Optimizer] = None, *,
                 param_groups: Optional[Sequence[int]] = None) -> None:
        super().__init__(attr, None, optimizer, param_groups)
        self._value_range = value_range
        self._time_range = time_range

    def value(self, t: float, init: float) -> float:
        (t1, t2), (v1, v2) = self._time_range, self._value_range
        if t <= t1:
            return v1
        if t >= t2:
            return v2
        return v1 + (t - t1) / (t2 - t1) * (v2 - v1)
