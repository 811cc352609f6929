"""ChainerMN's spellings, for porting a ChainerMN script without restructuring it.

In trainerlib the gradients are averaged by DDP inside the updater once the Trainer has
a communicator (``Trainer(..., comm=comm)``), so the multi-node optimizer of ChainerMN
needs no wrapper of its own: :func:`create_multi_node_optimizer` checks its arguments
and returns the optimizer. ``create_multi_node_evaluator`` is in ``extensions``;
``scatter_dataset`` in :mod:`trainerlib.distributed.scatter`.
"""
from __future__ import annotations

from typing import Any

import torch


def create_multi_node_optimizer(optimizer: torch.optim.Optimizer,
                                comm: Any) -> torch.optim.Optimizer:
    """ChainerMN's ``create_multi_node_optimizer(actual_optimizer, comm)``: ``optimizer``
    itself. Pass ``comm`` to the Trainer as well: its updater then forwards through DDP,
    which averages the gradients over the ranks (one bucketed all-reduce per backward)."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f'create_multi_node_optimizer expects a torch.optim.Optimizer, got '
                        f'{type(optimizer).__name__}')
    if not hasattr(comm, 'size'):
        raise TypeError('create_multi_node_optimizer expects a communicator '
                        '(trainerlib.distributed.create_communicator()) as comm')
    return optimizer
