"""DDP wrappers that an updater hands out while it keeps the plain modules.

An updater keeps its plain models (the reporter's names, ``main/loss``; state dicts
without ``module.``); under a data-parallel trainer it also owns one
``DistributedDataParallel`` wrapper per model with trainable parameters, and
``updater.ddp(name)`` returns it (or the plain model in a single process). A forward
through ``ddp(name)`` whose loss is backpropagated gets that model's gradients
averaged over the ranks by DDP, overlapped with the backward; a forward through the
plain module (evaluation, a frozen discriminator in a generator step, fakes drawn
under ``no_grad``) communicates nothing.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, Mapping

import torch
from torch.nn.parallel import DistributedDataParallel


def wrap_models(models: Mapping[str, torch.nn.Module], comm: Any) -> Dict[str, torch.nn.Module]:
    """One DDP wrapper per model with a parameter that requires a gradient.

    DDP broadcasts rank 0's parameters and buffers at construction, so the replicas
    start equal whatever each rank built.
    """
    device = getattr(comm, 'device', torch.device('cpu'))
    wrapped = {}
    for name, model in models.items():
        if not any(p.requires_grad for p in model.parameters()):
            continue
        ids = [device] if device.type == 'cuda' else None
        wrapped[name] = DistributedDataParallel(model, device_ids=ids)
    return wrapped


@contextlib.contextmanager
def no_sync(module: Any) -> Iterator[None]:
    """``module.no_sync()`` for a DDP wrapper (gradients accumulate locally), else nothing."""
    if isinstance(module, DistributedDataParallel):
        with module.no_sync():
            yield
    else:
        yield
