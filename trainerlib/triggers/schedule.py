"""TriggerSchedule: ask a trigger only at the iterations where it can fire."""
from __future__ import annotations

import math
from typing import Any, Optional


def next_fire(trigger: Any, iteration: int) -> Optional[float]:
    """The first iteration after ``iteration`` at which ``trigger`` can fire (``math.inf``:
    never), or None when the trigger cannot tell (it has no ``next_fire`` method)."""
    ask = getattr(trigger, 'next_fire', None)
    return None if ask is None else ask(iteration)


class TriggerSchedule:
    """Wraps a trigger so that asking it costs nothing on iterations where it cannot fire.

    A trigger whose ``fires_every_iteration`` is true is never asked (it fires at
    every call; not so for a stop trigger, which is asked before the first update
    too). One with a ``next_fire(iteration)`` method (``(period, 'iteration')``,
    ``ManualScheduleTrigger`` in iterations) is asked only at the iteration it names:
    it fires there as if it had been asked every iteration in between, and its state
    moves only when it is asked, so a resumed run that starts the schedule at the
    same iteration asks it, and saves it, exactly as a run never interrupted.
    Any other trigger is asked at every call.

    Args:
        trigger: the trigger.
        after_update: it is asked after each update (an extension's trigger), so
            ``fires_every_iteration`` holds at every call; False for the stop trigger.

    Attributes:
        trigger: the wrapped trigger.
        always: it fires every iteration and is never asked.
        due: the iteration at which it is next asked (``-math.inf``: at every call).
    """

    __slots__ = ('trigger', 'always', 'due')

    def __init__(self, trigger: Any, after_update: bool = True) -> None:
        self.trigger = trigger
        self.always = after_update and bool(getattr(trigger, 'fires_every_iteration', False))
        self.due = -math.inf

    @property
    def scheduled(self) -> bool:
        """Whether the trigger is asked only at ``due`` (neither ``always`` nor asked at
        every call)."""
        return self.due != -math.inf and not self.always

    def start(self, iteration: int) -> None:
        """Schedule the first question after ``iteration`` (where training starts or resumes:
        a resumed run then asks at the same iterations as one never interrupted)."""
        due = None if self.always else next_fire(self.trigger, iteration)
        self.due = -math.inf if due is None else due

    def __call__(self, trainer: Any, iteration: int) -> bool:
        """Whether the trigger fires at ``iteration`` (the updater's current iteration)."""
        if self.always:
            return True
        if iteration < self.due:
            return False
        fired = self.trigger(trainer)
        if self.due != -math.inf:
            due = next_fire(self.trigger, iteration)
            self.due = iteration + 1 if due is None else due
        return fired
