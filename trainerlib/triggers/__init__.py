"""Triggers decide when an extension runs and when training stops."""
from trainerlib.triggers.early_stopping_trigger import EarlyStoppingTrigger
from trainerlib.triggers.get_trigger import get_trigger
from trainerlib.triggers.interval_trigger import IntervalTrigger
from trainerlib.triggers.manual_schedule_trigger import ManualScheduleTrigger
from trainerlib.triggers.minmax_value_trigger import (BestValueTrigger, MaxValueTrigger,
                                                      MinValueTrigger)
from trainerlib.triggers.once_trigger import OnceTrigger
from trainerlib.triggers.schedule import TriggerSchedule
from trainerlib.triggers.time_trigger import TimeTrigger

__all__ = ['BestValueTrigger', 'EarlyStoppingTrigger', 'IntervalTrigger',
           'ManualScheduleTrigger', 'MaxValueTrigger', 'MinValueTrigger', 'OnceTrigger',
           'TimeTrigger', 'TriggerSchedule', 'get_trigger']
