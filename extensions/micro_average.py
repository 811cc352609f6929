"""MicroAverage: sum(numerators) / sum(denominators) over a period, as Chainer's."""
from __future__ import annotations

import math
from typing import Any

import torch
from trainerlib import reporter
from trainerlib._state import load_into, state_of
from trainerlib.extension import PRIORITY_EDITOR, Extension, TriggerLike
from trainerlib.triggers import get_trigger


def _divide(numerator: Any, denominator: Any) -> Any:
    if isinstance(numerator, torch.Tensor) or isinstance(denominator, torch.Tensor):
        return torch.true_divide(numerator, denominator)   # on the device: no sync
    return numerator / denominator if denominator else math.nan


def _saved(value: Any) -> Any:
    return value.detach().cpu() if isinstance(value, torch.Tensor) else value


class MicroAverage(Extension):
    """Reports the micro-average ``sum_i n_i / sum_i d_i`` of two reported values.

    With ``n_i`` the number of correct predictions and ``d_i`` the number of
    examples of batch ``i``, this is the accuracy over all the examples of the
    period, which differs from the mean of the per-batch ratios when batches
    have different sizes. Each call where both keys were reported adds them to
    running sums (tensors stay on their device, in their dtype: no sync); when
    ``trigger`` fires, the ratio is reported under ``result_key`` (a tensor if
    a value was a tensor) and the sums restart. Priority ``PRIORITY_EDITOR``: it
    runs after writers (an Evaluator) and before readers (a LogReport) see the
    observation. The partial sums are saved in snapshots.

    Args:
        numerator_key: observation key of the numerator, e.g. ``'main/correct'``.
        denominator_key: observation key of the denominator, e.g. ``'main/total'``.
        result_key: key to report the ratio under, e.g. ``'main/accuracy'``.
        trigger: when to report and restart, default ``(1, 'epoch')``; it is
            checked only at calls where both keys were reported.
    """

    priority = PRIORITY_EDITOR

    def __init__(self, numerator_key: str, denominator_key: str, result_key: str,
                 trigger: TriggerLike = (1, 'epoch')) -> None:
        self._numerator_key = numerator_key
        self._denominator_key = denominator_key
        self._result_key = result_key
        self._trigger = get_trigger(trigger)
        self._numerator: Any = 0
        self._denominator: Any = 0

    def __call__(self, trainer) -> None:
        observation = trainer.observation
        if self._numerator_key not in observation or self._denominator_key not in observation:
            return
        self._numerator = self._numerator + observation[self._numerator_key]
        self._denominator = self._denominator + observation[self._denominator_key]
        if self._trigger(trainer):
            result = _divide(self._numerator, self._denominator)
            self._numerator = self._denominator = 0
            reporter.report({self._result_key: result})

    def state_dict(self) -> dict:
        return {'numerator': _saved(self._numerator), 'denominator': _saved(self._denominator),
                'trigger': state_of(self._trigger)}

    def load_state_dict(self, state: dict) -> None:
        self._numerator, self._denominator = state['numerator'], state['denominator']
        load_into(self._trigger, state['trigger'])
