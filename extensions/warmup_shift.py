"""WarmupShift: raise a hyperparameter linearly to its value over the first updates."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from trainerlib.extensions._shift import Attr, Shift


class WarmupShift(Shift):
    """Moves ``attr`` evenly from ``warmup_start`` to ``init`` in ``warmup_iter`` calls.

    After the ``t``-th call the value is
    ``(t * init + (warmup_iter - t) * warmup_start) / warmup_iter`` for ``t < warmup_iter``
    and ``init`` at ``t == warmup_iter``; after that it is left alone (another shift or
    scheduler may take over), as Chainer's.

    Args:
        attr: param-group key, e.g. ``'lr'``, or ``(key, index)`` such as ``('betas', 0)``.
        warmup_start: value before the first update (the same for every group).
        warmup_iter: calls (iterations, by default) the warm-up lasts.
        init: value reached at the end; None: each selected group's own value when
            training starts (groups with lr 0.1 and 0.01 warm up to their own).
        optimizer: the optimizer; None: ``trainer.updater.get_optimizer('main')``.
        param_groups: indices of the groups to shift; None: all.
    """

    def __init__(self, attr: Attr, warmup_start: float, warmup_iter: int,
                 init: Optional[float] = None,
                 optimizer: Optional[torch.optim.Optimizer] = None, *,
                 param_groups: Optional[Sequence[int]] = None) -> None:
        if warmup_iter < 0:
            raise ValueError(f'WarmupShift needs warmup_iter >= 0, got {warmup_iter!r}')
        super().__init__(attr, init, optimizer, param_groups)
        self._warmup_start = warmup_start
        self._warmup_iter = warmup_iter

    def value(self, t: float, init: float) -> Optional[float]:
        n = self._warmup_iter
        if t >= n:
            return init if t == n else None
        return (t * init + (n - t) * self._warmup_start) / n
