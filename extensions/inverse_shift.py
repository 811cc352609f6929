"""InverseShift: Caffe's ``inv`` policy, ``init * (1 + gamma * t) ** -power``."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from trainerlib.extensions._shift import Attr, Shift, clamp


class InverseShift(Shift):
    """Sets ``attr`` to ``init * (1 + gamma * t) ** (-power)`` after the ``t``-th call.

    Args:
        attr: param-group key, e.g. ``'lr'``, or ``(key, index)`` such as ``('betas', 0)``.
        gamma: growth of the denominator per call (>= 0).
        power: exponent of the decay (negative: the value grows).
        init: initial value; None reads each selected group's own when training starts.
        target: bound of the shift: the value stays at ``target`` once it goes past it.
        optimizer: the optimizer; None: ``trainer.updater.get_optimizer('main')``.
        param_groups: indices of the groups to shift; None: all.
    """

    def __init__(self, attr: Attr, gamma: float, power: float, init: Optional[float] = None,
                 target: Optional[float] = None,
                 optimizer: Optional[torch.optim.Optimizer] = None, *,
                 param_groups: Optional[Sequence[int]] = None) -> None:
        if gamma < 0:
            raise ValueError(f'InverseShift needs gamma >= 0, got {gamma!r}')
        super().__init__(attr, init, optimizer, param_groups)
        self._gamma = gamma
        self._power = power
        self._target = target

    def value(self, t: float, init: float) -> float:
        value = init * (1 + self._gamma * t) ** (-self._power)
        return clamp(value, self._target, self._power < 0)
