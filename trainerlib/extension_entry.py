"""A registered extension as the trainer keeps it: trigger, priority, schedule, hooks."""
from __future__ import annotations

import math
from typing import Any, List

from trainerlib.extension import Extension
from trainerlib.function_extension import Hook, trainer_hook
from trainerlib.triggers.schedule import TriggerSchedule


class Entry:
    """One registered extension.

    Attributes:
        extension: the :class:`Extension` the loop calls (the registered object, or
            its :class:`~trainerlib.extension.FunctionExtension` adapter).
        registered: what was passed to ``Trainer.extend`` (``get_extension`` returns it).
        trigger, priority, call_before_training, schedule: as registered.
        initialize, finalize: the extension's hooks, both called ``hook(trainer)``;
            a Chainer-style ``finalize(self)`` is adapted here, once.
    """

    __slots__ = ('extension', 'registered', 'trigger', 'priority', 'call_before_training',
                 'schedule', 'initialize', 'finalize')

    def __init__(self, extension: Extension, trigger: Any, priority: int,
                 call_before_training: bool, registered: Any = None) -> None:
        self.extension = extension
        self.registered = extension if registered is None else registered
        self.trigger = trigger
        self.priority = priority
        self.call_before_training = call_before_training
        self.schedule = TriggerSchedule(trigger)
        self.initialize: Hook = trainer_hook(getattr(extension, 'initialize', None))
        self.finalize: Hook = trainer_hook(getattr(extension, 'finalize', None))

    def replaced(self, extension: Any) -> 'Entry':
        """The same registration running ``extension`` instead (another rank's role)."""
        if extension is self.extension:
            return self
        return Entry(extension, self.trigger, self.priority, self.call_before_training,
                     self.registered)


def earliest(entries: List[Entry]) -> float:
    """The first iteration at which a scheduled trigger is due (inf: none is scheduled)."""
    return min((e.schedule.due for e in entries if e.schedule.scheduled), default=math.inf)
