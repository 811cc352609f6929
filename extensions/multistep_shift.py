"""MultistepShift: multiply a hyperparameter by ``gamma`` at given iterations."""
from __future__ import annotations

import bisect
from typing import Optional, Sequence

import torch

from trainerlib.extensions._shift import Attr, Shift


class MultistepShift(Shift):
    """Sets ``attr`` to ``init * gamma ** n`` where ``n`` counts the steps ``<= t``.

    With ``step_value=(s1, s2)``: ``init`` until call ``s1 - 1``, ``init * gamma`` from
    call ``s1``, ``init * gamma ** 2`` from call ``s2``, as Chainer's.

    Args:
        attr: param-group key, e.g. ``'lr'``, or ``(key, index)`` such as ``('betas', 0)``.
        gamma: factor applied at each step.
        step_value: the calls (iterations, by default) where a step begins.
        init: initial value (required, as in Chainer, but may be None: then each
            selected group's own value when training starts).
        optimizer: the optimizer; None: ``trainer.updater.get_optimizer('main')``.
        param_groups: indices of the groups to shift; None: all.
    """

    def __init__(self, attr: Attr, gamma: float, step_value: Sequence[int],
                 init: Optional[float], optimizer: Optional[torch.optim.Optimizer] = None, *,
                 param_groups: Optional[Sequence[int]] = None) -> None:
        super().__init__(attr, init, optimizer, param_groups)
        self._gamma = gamma
        self._steps = sorted(step_value)

    def value(self, t: float, init: float) -> float:
        return init * self._gamma ** bisect.bisect_right(self._steps, t)
