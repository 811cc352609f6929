"""MicroAverage: sum(numerators) / sum(denominators) over a period, as Chainer's."""
from __future__ import annotations

import math
from typing import Any, List

import torch
from trainerlib import reporter
from trainerlib._state import guess_previous, load_into, state_of
from trainerlib.distributed.context import comm_of
from trainerlib.extension import PRIORITY_EDITOR, Extension, TriggerLike
from trainerlib.triggers import get_trigger


def _divide(numerator: Any, denominator: Any) -> Any:
    if isinstance(numerator, torch.Tensor) or isinstance(denominator, torch.Tensor):
        return torch.true_divide(numerator, denominator)   # on the device: no sync
    return numerator / denominator if denominator else math.nan


def _allreduced(numerator: Any, denominator: Any, comm: Any) -> Any:
    """The ratio of the sums over every rank (one float64 all-reduce of both sums);
    None when no rank added anything since the last report."""
    device = getattr(comm, 'device', None) or torch.device('cpu')
    parts = [v.detach().to(device, torch.float64).reshape(()) if isinstance(v, torch.Tensor)
             else torch.tensor(float(v), dtype=torch.float64, device=device)
             for v in (numerator, denominator)]
    added = 0.0 if isinstance(numerator, int) and isinstance(denominator, int) and \
        numerator == 0 and denominator == 0 else 1.0   # (0, 0): nothing was added here
    payload = torch.stack(parts + [torch.tensor(added, dtype=torch.float64, device=device)])
    comm.allreduce(payload, op='sum')
    total_n, total_d, ranks = payload.cpu().unbind(0)
    if ranks.item() == 0:
        return None
    return torch.true_divide(total_n, total_d)


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

    Data-parallel (``trainer.comm`` of several ranks): each rank keeps its own sums;
    the trigger is then checked at every call on every rank (so that the ranks agree
    on when to report, without a collective per iteration), and when it fires the sums
    of all ranks are added in one float64 all-reduce; every rank reports the same
    ratio (a float64 tensor; nothing when no rank saw the keys in the period). With
    the keys reported at every iteration, as usual, the periods are those of a single
    process. The values must be scalars.

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
            if getattr(trainer, 'comm', None) is None or trainer.comm.size <= 1:
                return
            # data-parallel: the ranks must check the trigger together (see above)
        else:
            self._numerator = self._numerator + observation[self._numerator_key]
            self._denominator = self._denominator + observation[self._denominator_key]
        if self._trigger(trainer):
            comm = comm_of(trainer)
            if comm.size > 1:
                result = _allreduced(self._numerator, self._denominator, comm)
            else:
                result = _divide(self._numerator, self._denominator)
            self._numerator = self._denominator = 0
            if result is not None:
                reporter.report({self._result_key: result})

    def guess_previous(self) -> None:
        """Its trigger guesses its previous position (the snapshot being resumed has
        no state for this extension: see IntervalTrigger.guess_previous)."""
        guess_previous(self._trigger)

    def state_dict(self) -> dict:
        return {'numerator': _saved(self._numerator), 'denominator': _saved(self._denominator),
                'trigger': state_of(self._trigger)}

    def reshard_state(self, states: List[dict], rank: int) -> dict:
        """The state to resume from on another world size: rank 0 the sums of every
        saved rank it could read, the other ranks none (each value counts once)."""
        state = dict(states[0])
        for key in ('numerator', 'denominator'):
            state[key] = sum((s[key] for s in states), 0) if rank == 0 else 0
        return state

    def load_state_dict(self, state: dict) -> None:
        self._numerator, self._denominator = state['numerator'], state['denominator']
        load_into(self._trigger, state['trigger'])
