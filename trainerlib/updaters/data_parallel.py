"""DDP and ``torch.compile`` wrappers that an updater hands out while it keeps the plain modules.

An updater keeps its plain models (the reporter's names, ``main/loss``; state dicts
without ``module.`` or ``_orig_mod.``); under a data-parallel trainer it also owns one
``DistributedDataParallel`` wrapper per model with trainable parameters, and
``updater.ddp(name)`` returns it (or the plain model in a single process). A forward
through ``ddp(name)`` whose loss is backpropagated gets that model's gradients
averaged over the ranks by DDP, overlapped with the backward; a forward through the
plain module (evaluation, a frozen discriminator in a generator step, fakes drawn
under ``no_grad``) communicates nothing.

A model given compiled (``torch.compile(model)``, an ``OptimizedModule``) is unwrapped the
same way: the updater keeps ``model._orig_mod`` and ``ddp(name)`` forwards through the
compiled module (under DDP: the DDP wrapper of the compiled module).
"""
from __future__ import annotations

import contextlib
import sys
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

import torch
from torch.nn.parallel import DistributedDataParallel


def is_compiled(module: Any) -> bool:
    """Whether ``module`` is what ``torch.compile(module)`` returns (an ``OptimizedModule``).

    Never imports TorchDynamo (a second of start-up): until it is imported nothing can
    have been compiled.
    """
    eval_frame = sys.modules.get('torch._dynamo.eval_frame')
    return eval_frame is not None and isinstance(module, eval_frame.OptimizedModule)


def uncompiled(module: Any) -> Any:
    """``module`` without its ``torch.compile`` wrappers (``_orig_mod``), else itself."""
    while is_compiled(module):
        module = module._orig_mod
    return module


def unwrap(module: Any) -> Tuple[Any, Optional[torch.nn.Module]]:
    """``(plain, compiled)``: the module inside every DDP and ``torch.compile`` wrapper, and
    the outermost compiled wrapper with no DDP inside it (None if there is none), which
    forwards without any collective."""
    compiled = None
    while True:
        if isinstance(module, DistributedDataParallel):
            module, compiled = module.module, None
        elif is_compiled(module):
            compiled = module if compiled is None else compiled
            module = module._orig_mod
        else:
            return module, compiled


def wrap_models(models: Mapping[str, torch.nn.Module], comm: Any,
                inner: Optional[Mapping[str, torch.nn.Module]] = None
                ) -> Dict[str, torch.nn.Module]:
    """One DDP wrapper per model with a parameter that requires a gradient.

    DDP broadcasts rank 0's parameters and buffers at construction, so the replicas
    start equal whatever each rank built. ``inner[name]``, where given (the compiled
    module of a model passed compiled), is what DDP wraps instead of the plain model.
    """
    device = getattr(comm, 'device', torch.device('cpu'))
    wrapped = {}
    for name, model in models.items():
        if not any(p.requires_grad for p in model.parameters()):
            continue
        ids = [device] if device.type == 'cuda' else None
        module = inner[name] if inner and name in inner else model
        wrapped[name] = DistributedDataParallel(module, device_ids=ids)
    return wrapped


@contextlib.contextmanager
def no_sync(module: Any) -> Iterator[None]:
    """``module.no_sync()`` for a DDP wrapper, compiled or not (gradients accumulate
    locally), else nothing."""
    module = uncompiled(module)
    if isinstance(module, DistributedDataParallel):
        with module.no_sync():
            yield
    else:
        yield
