"""Normalise trigger specifications."""
from __future__ import annotations

from typing import Any, Callable

TriggerLike = Any  # Callable[[Trainer], bool] or (period, unit) or None


def _never_fire(trainer) -> bool:
    return False


def get_trigger(trigger: TriggerLike) -> Callable[..., bool]:
    """Return a trigger callable.

    Args:
        trigger: a callable ``trigger(trainer) -> bool`` (returned as is),
            ``(period, unit)`` (an :class:`IntervalTrigger`), or ``None``
            (a trigger that never fires).
    """
    from trainerlib.triggers.interval_trigger import IntervalTrigger
    if trigger is None:
        return _never_fire
    if callable(trigger):
        return trigger
    if isinstance(trigger, (tuple, list)) and len(trigger) == 2:
        return IntervalTrigger(*trigger)
    raise TypeError(f"a trigger must be a callable or (period, unit) such as (1, 'epoch'); "
                    f'got {trigger!r}')
