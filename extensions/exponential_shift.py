"""ExponentialShift: multiply a hyperparameter by ``rate`` after each update."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from trainerlib.extensions._shift import Attr, Shift, clamp


class ExponentialShift(Shift):
    """Sets ``attr`` to ``init * rate ** t`` after the ``t``-th call, as Chainer's.

    Typical use: exponential decay of the learning rate. Called every iteration by
    default; ``init`` (None: each group's value when training starts) and the counter
    are saved, so a resumed run continues the same sequence. See
    :class:`~extensions._shift.Shift` for ``attr``, ``optimizer``, ``param_groups``.

    Args:
        attr: param-group key, e.g. ``'lr'``, or ``(key, index)`` such as ``('betas', 0)``.
        rate: factor per call (>= 0).
        init: initial value; None reads each selected group's own.
        target: bound of the shift: the value stays at ``target`` once it goes past it.
        optimizer: the optimizer; None: ``trainer.updater.get_optimizer('main')``.
        param_groups: indices of the groups to shift; None: all.
    """

    def __init__(self, attr: Attr, rate: float, init: Optional[float] = None,
                 target: Optional[float] = None,
                 optimizer: Optional[torch.optim.Optimizer] = None, *,
                 param_groups: Optional[Sequence[int]] = None) -> None:
        if rate < 0:
            raise ValueError(f'ExponentialShift needs rate >= 0, got {rate!r}')
        super().__init__(attr, init, optimizer, param_groups)
        self._rate = rate
        self._target = target

    def value(self, t: float, init: float) -> float:
        return clamp(init * self._rate ** t, self._target, self._rate > 1)
