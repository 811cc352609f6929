"""Building blocks for updaters with several optimizers (multi-head, GAN, Path-SGD …)."""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, List, Optional

import torch

from trainerlib.updaters.amp import AmpContext

Optimizers = Iterable[torch.optim.Optimizer]
_TORCH_ZERO_GRAD = torch.optim.Optimizer.zero_grad
_profiler_enabled = torch._C._autograd._profiler_enabled


def parameters_of(optimizers: Optimizers) -> List[torch.Tensor]:
    """Every parameter of the optimizers, once each, in group order."""
    seen, params = set(), []
    for opt in optimizers:
        for group in opt.param_groups:
            for p in group['params']:
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
    return params


def zero_grad(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.zero_grad(set_to_none=True)``: every parameter's gradient becomes None.

    For an optimizer that keeps torch's own ``zero_grad``, and while no profiler
    runs, the gradients are set to None here directly: the same effect, without the
    profiler range and the TorchDynamo guard that torch wraps the method in (their
    Python costs ≈ 27 µs per call here, 6% of a 64-64-10 MLP's CPU iteration; see
    ``tools/bench_overhead.py``'s ``hand-none`` row). An optimizer that overrides
    ``zero_grad`` (in its class or on the instance), or a running profiler, which
    records the range, gets the method itself.
    """
    if type(optimizer).zero_grad is not _TORCH_ZERO_GRAD or 'zero_grad' in vars(optimizer) \
            or _profiler_enabled():
        optimizer.zero_grad(set_to_none=True)
        return
    for group in optimizer.param_groups:
        for p in group['params']:
            p.grad = None


def zero_grads(optimizers: Optimizers) -> None:
    """:func:`zero_grad` on each optimizer."""
    for opt in optimizers:
        zero_grad(opt)


def clip_grads(optimizers: Optimizers, max_norm: Optional[float] = None,
               max_value: Optional[float] = None, amp: Optional[AmpContext] = None) -> None:
    """Clip the gradients of all the optimizers' parameters together.

    Args:
        optimizers: the optimizers whose parameters are clipped.
        max_norm: clip the global 2-norm of all the gradients to this value.
        max_value: clamp every gradient element to ``±max_value`` (applied first).
        amp: unscale the gradients of each optimizer first (float16 AMP); with several
            optimizers, an overflow anywhere makes all of them skip (see
            :func:`skip_all_on_overflow`).
    """
    optimizers = list(optimizers)
    skip_all_on_overflow(optimizers, amp)   # before a global clip spreads one inf to all
    if amp is not None:
        for opt in optimizers:
            amp.unscale_(opt)
    params = parameters_of(optimizers)
    if max_value is not None:
        torch.nn.utils.clip_grad_value_(params, max_value)
    if max_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, max_norm)


def skip_all_on_overflow(optimizers: Optimizers, amp: Optional[AmpContext]) -> None:
    """With a GradScaler and several optimizers: if any gradient overflowed, make them all
    NaN, so that every optimizer skips this step (the scaler decides per optimizer).

    No host-device sync: the decision stays on the device. A no-op without a scaler.
    """
    optimizers = list(optimizers)
    if amp is None or amp.scaler is None or len(optimizers) < 2:
        return
    grads = [p.grad for p in parameters_of(optimizers) if p.grad is not None]
    if grads:
        finite = torch.nn.utils.get_total_norm(grads).isfinite()
        factor = torch.where(finite, 1.0, float('nan'))
        for g in grads:
            g.mul_(factor)


def step_all(optimizers: Optimizers, amp: Optional[AmpContext] = None) -> None:
    """Step each optimizer (through the GradScaler if any), then update the scale once."""
    amp = amp or AmpContext(False)
    for opt in optimizers:
        amp.step(opt)
    amp.update()


@contextlib.contextmanager
def requires_grad(module: torch.nn.Module, flag: bool) -> Iterator[None]:
    """Set ``requires_grad`` of the module's parameters to ``flag`` for a block, then restore.

    E.g. freeze the discriminator while backpropagating the generator's loss through it.
    """
    params = list(module.parameters())
    saved = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(flag)
    try:
        yield
    finally:
        for p, flag_before in zip(params, saved):
            p.requires_grad_(flag_before)
