"""StepShift: multiply a hyperparameter by ``gamma`` every ``step`` updates."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from trainerlib.extensions._shift import Attr, Shift, clamp


class StepShift(Shift):
    """Sets ``attr`` to ``init * gamma ** (t // step)`` after the ``t``-th call, as Chainer's.

    Args:
        attr: param-group key, e.g. ``'lr'``, or ``(key, index)`` such as ``('betas', 0)``.
        gamma: the multiplier.
        step: calls (iterations, by default) between two multiplications.
        init: initial value; None reads each selected group's own when training starts.
        target: bound of the shift: the value stays at ``target`` once it goes past it.
        optimizer: the optimizer; None: ``trainer.updater.get_optimizer('main')``.
        param_groups: indices of the groups to shift; None: all.
    """

    def __init__(self, attr: Attr, gamma: float, step: int, init: Optional[float] = None,
                 target: Optional[float] = None,
                 optimizer: Optional[torch.optim.Optimizer] = None, *,
                 param_groups: Optional[Sequence[int]] = None) -> None:
        if step < 1:
            raise ValueError(f'StepShift needs step >= 1, got {step!r}')
        super().__init__(attr, init, optimizer, param_groups)
        self._gamma = gamma
        self._step = step
        self._target = target

    def value(self, t: float, init: float) -> float:
        return clamp(init * self._gamma ** (t // self._step), self._target, self._gamma > 1)
