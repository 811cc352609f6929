"""Normalise trigger specifications."""
from __future__ import annotations

import math
from typing import Any, Callable

TriggerLike = Any  # Callable[[Trainer], bool] or (period, unit) or None


class _NeverFire:
    """The trigger of ``None``: never fires (and the Trainer never asks it)."""

    def __call__(self, trainer) -> bool:
        return False

    def next_fire(self, iteration: int) -> float:
        return math.inf

    def __repr__(self) -> str:
        return 'never'


def get_trigger(trigger: TriggerLike) -> Callable[..., bool]:
    """Return a trigger callable.

    Args:
        trigger: a callable ``trigger(trainer) -> bool`` (returned as is),
            ``(period, unit)`` (an :class:`IntervalTrigger`), or ``None``
            (a trigger that never fires).
    """
    from trainerlib.triggers.interval_trigger import IntervalTrigger
    if trigger is None:
        return _NeverFire()
    if callable(trigger):
        return trigger
    if isinstance(trigger, (tuple, list)) and len(trigger) == 2:
        return IntervalTrigger(*trigger)
    raise TypeError(f"a trigger must be a callable or (period, unit) such as (1, 'epoch'); "
                    f'got {trigger!r}')
