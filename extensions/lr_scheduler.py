"""LRScheduler: step a ``torch.optim.lr_scheduler`` scheduler on a trigger."""
from __future__ import annotations

import copy
import warnings
from typing import Any, Callable, List, Optional

from torch.optim.lr_scheduler import ReduceLROnPlateau

from trainerlib._state import guess_previous, load_into, state_of
from trainerlib.distributed.context import comm_of
from trainerlib.extension import PRIORITY_READER, Extension
from trainerlib.summary import Summary
from trainerlib.summary_reduce import merge_summary_states, reshard_summary_state
from trainerlib.triggers.get_trigger import TriggerLike, get_trigger

# The trainer always steps the scheduler after the update, so this warning can only
# mean that the update legitimately skipped optimizer.step() (GradScaler found inf).
_BEFORE_OPTIMIZER = r'Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`'


class LRScheduler(Extension):
    """Steps a PyTorch LR scheduler after the update of each iteration where ``trigger`` fires.

    ``scheduler.step()`` is called, or ``scheduler.step(mean)`` when ``monitor`` is
    given (required for ``ReduceLROnPlateau``): ``mean`` is the mean of the values
    reported under ``monitor`` since the previous step. They are accumulated without
    device sync and converted once, when the scheduler steps. The extension is
    called every iteration to accumulate, so give the period as ``trigger`` here,
    not to ``Trainer.extend``. ``scheduler.state_dict()``, the partial mean and the
    trigger are saved, so the learning rate after a resume is exactly the one of an
    uninterrupted run. PyTorch's warning about ``lr_scheduler.step()`` before
    ``optimizer.step()`` is silenced: here it only happens when the update skipped
    the optimizer step (AMP overflow) or on a call before training.

    Data-parallel (``trainer.comm`` of several ranks): it runs on every rank; with
    ``monitor`` each rank accumulates its own values and at a step the sums of all
    ranks are added in one all-reduce, so the scheduler (``ReduceLROnPlateau``) sees
    the same global mean, and sets the same learning rate, on every rank.

    Args:
        scheduler: any ``torch.optim.lr_scheduler`` object.
        trigger: when to step, default ``(1, 'epoch')``.
        stepper: ``stepper(scheduler, trainer)`` replaces the default call.
        monitor: reported key fed to ``step``, e.g. ``'validation/main/loss'``.
    """

    trigger = (1, 'iteration')
    priority = PRIORITY_READER

    def __init__(self, scheduler: Any, trigger: TriggerLike = (1, 'epoch'),
                 stepper: Optional[Callable[[Any, Any], None]] = None, *,
                 monitor: Optional[str] = None) -> None:
        if stepper is not None and monitor is not None:
            raise ValueError('LRScheduler takes monitor= or stepper=, not both')
        if isinstance(scheduler, ReduceLROnPlateau) and stepper is None and monitor is None:
            raise ValueError("ReduceLROnPlateau needs the key of the value it watches: "
                             "LRScheduler(scheduler, monitor='validation/main/loss')")
        self.scheduler = scheduler
        self._trigger = get_trigger(trigger)
        self._stepper = stepper
        self._monitor = monitor
        self._summary = Summary()

    def __call__(self, trainer) -> None:
        if self._monitor is not None and self._monitor in trainer.observation:
            self._summary.add(trainer.observation[self._monitor])
        if not self._trigger(trainer):
            return
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', _BEFORE_OPTIMIZER, UserWarning)
            if self._stepper is not None:
                self._stepper(self.scheduler, trainer)
            elif self._monitor is None:
                self.scheduler.step()
            else:
                self.scheduler.step(self._pop_mean(trainer))

    def _pop_mean(self, trainer) -> float:
        comm = comm_of(trainer)
        if comm.size > 1:   # every rank steps with the mean over all ranks
            self._summary = self._summary.allreduce(comm)
        if not len(self._summary):
            raise KeyError(f'LRScheduler: {self._monitor!r} was not reported since the last '
                           f'step; reported keys: {sorted(trainer.observation)}')
        mean = self._summary.compute_mean()
        self._summary = Summary()
        return mean

    def guess_previous(self) -> None:
        """Its trigger guesses its previous position (the snapshot being resumed has
        no state for this extension: see IntervalTrigger.guess_previous)."""
        guess_previous(self._trigger)

    def state_dict(self) -> dict:
        return {'scheduler': copy.deepcopy(self.scheduler.state_dict()),
                'summary': self._summary.state_dict(), 'trigger': state_of(self._trigger)}

    def reshard_state(self, states: List[dict], rank: int) -> dict:
        """The state to resume from on another world size: the saved ranks' partial
        sums merged on rank 0, none on the others (see :func:`reshard_summary_state`)."""
        return reshard_summary_state(states, rank, merge=merge_summary_states)

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state['scheduler'])
        self._summary.load_state_dict(state['summary'])
        load_into(self._trigger, state['trigger'])
