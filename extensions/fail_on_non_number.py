"""FailOnNonNumber: stop training as soon as a parameter becomes NaN or infinite."""
from __future__ import annotations

from typing import Dict, Iterator, List, Tuple

import torch
from trainerlib.errors import NonFiniteError
from trainerlib.extension import PRIORITY_WRITER, Extension, TriggerLike

_Checked = Tuple[str, str, str, torch.Tensor]   # (model, parameter, 'data'|'gradient', tensor)


def _all_finite(tensors: List[torch.Tensor]) -> bool:
    """One reduction and one host transfer per device (normally a single device)."""
    flags: Dict[torch.device, List[torch.Tensor]] = {}
    for t in tensors:
        flags.setdefault(t.device, []).append(torch.isfinite(t).all())
    return all(bool(torch.stack(f).all()) for f in flags.values())


class FailOnNonNumber(Extension):
    """Raises :class:`~trainerlib.errors.NonFiniteError` if a parameter is NaN or Inf.

    When it fires, every parameter (and gradient, with ``check_grad``) of the
    updater's models (``updater.get_all_models()``) is checked on the device at
    the cost of one host-device sync; only if something is not finite are the
    tensors inspected one by one to name the first offender in the error:
    model, parameter, data or gradient, iteration, and what to try.

    Its priority is ``PRIORITY_WRITER``: it runs before the evaluators and
    readers of the iteration (no time spent evaluating a diverged model), and,
    like every extension above ``PRIORITY_SNAPSHOT``, before the snapshot
    writers, which the trainer runs last: the exception leaves the loop before
    they run, so a diverged state is never written by a periodic snapshot. Check
    at least as often as snapshots are taken (the default checks every iteration).

    The gradients checked are those of the update that just ran (``StandardUpdater``
    clears them before the forward). With float16 AMP, infinite (scaled) gradients
    are expected, the GradScaler skipping those steps: use ``check_grad=False``.

    Args:
        check_grad: also check the gradients that are present (default True).
        trigger: when to check, default ``(1, 'iteration')``.
    """

    priority = PRIORITY_WRITER

    def __init__(self, check_grad: bool = True, trigger: TriggerLike = (1, 'iteration')) -> None:
        self.check_grad = check_grad
        self.trigger = trigger

    def _tensors(self, trainer) -> Iterator[_Checked]:
        for model_name, model in trainer.updater.get_all_models().items():
            for name, param in model.named_parameters():
                yield model_name, name, 'data', param.detach()
                if self.check_grad and param.grad is not None:
                    yield model_name, name, 'gradient', param.grad

    def __call__(self, trainer) -> None:
        checked = list(self._tensors(trainer))
        if _all_finite([t for *_, t in checked]):
            return
        for model_name, name, kind, t in checked:
            finite = torch.isfinite(t)
            if not bool(finite.all()):
                bad = int((~finite).sum())
                what = 'NaN' if bool(torch.isnan(t).any()) else 'Inf'
                raise NonFiniteError(
                    f'FailOnNonNumber: {what} in the {kind} of parameter {name!r} of model '
                    f'{model_name!r} at iteration {trainer.updater.iteration} ({bad} of '
                    f'{t.numel()} values are not finite). Training diverged: try a lower '
                    'learning rate, gradient clipping (StandardUpdater(clip_grad_norm=1.0)), '
                    'or check the input data for NaN/Inf.')
