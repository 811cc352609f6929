"""PolynomialShift: ``init * (1 - t / max_count) ** rate`` (the ``poly`` policy)."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch

from trainerlib.triggers.interval_trigger import check_unit

from trainerlib.extensions._shift import Attr, Shift, clamp


class PolynomialShift(Shift):
    """Sets ``attr`` to ``init * max(1 - t / max_count, 0) ** rate``, as Chainer's.

    ``t`` is the number of calls (iterations, by default) when ``max_count`` is an int,
    as in Chainer, or the trainer's position in the unit of ``max_count`` when it is
    ``(N, 'iteration')`` or ``(N, 'epoch')`` (then ``t = updater.epoch_detail``: the
    decay reaches 0 exactly at the end of epoch ``N``, whatever the batch size).

    Args:
        attr: param-group key, e.g. ``'lr'``, or ``(key, index)`` such as ``('betas', 0)``.
        rate: exponent of the decay.
        max_count: calls until the value reaches 0, or ``(N, unit)``.
        init: initial value; None reads each selected group's own when training starts.
        target: bound of the shift: the value stays at ``target`` once it goes past it.
        optimizer: the optimizer; None: ``trainer.updater.get_optimizer('main')``.
        param_groups: indices of the groups to shift; None: all.
    """

    def __init__(self, attr: Attr, rate: float, max_count: Union[int, Tuple[float, str]],
                 init: Optional[float] = None, target: Optional[float] = None,
                 optimizer: Optional[torch.optim.Optimizer] = None, *,
                 param_groups: Optional[Sequence[int]] = None) -> None:
        super().__init__(attr, init, optimizer, param_groups)
        self._max_count, self._unit = max_count if isinstance(max_count, (tuple, list)) \
            else (max_count, None)
        if self._unit is not None:
            check_unit(self._unit)
        if not self._max_count > 0:
            raise ValueError(f'PolynomialShift needs max_count > 0, got {max_count!r}')
        self._rate = rate
        self._target = target

    def position(self, trainer) -> float:
        if self._unit is None:
            return self._t
        updater = trainer.updater
        return updater.iteration if self._unit == 'iteration' else updater.epoch_detail

    def value(self, t: float, init: float) -> float:
        decay = max(1 - t / self._max_count, 0)
        return clamp(init * decay ** self._rate, self._target, self._rate <= 0)
