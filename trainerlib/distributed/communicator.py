"""Communicators: who this process is among the ranks, and the few collectives extensions need.

:func:`create_communicator` reads torchrun's environment and returns a
:class:`Communicator` on ``torch.distributed`` (NCCL for CUDA, gloo on the CPU); without
torchrun, or with one process, it returns a :class:`SingleProcessCommunicator` whose
collectives return their input at once (no process group, nothing to pay). Every
collective also counts itself in :attr:`Communicator.counts`, so a test can check how
many a run needed.
"""
from __future__ import annotations

import collections
import datetime
import os
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist

CONTROL_TIMEOUT = datetime.timedelta(seconds=60)
"""Timeout of the CPU (gloo) control group: a dead peer surfaces as an error, not a hang."""


class SingleProcessCommunicator:
    """The communicator of a single process: rank 0 of 1; every collective is the identity.

    Attributes:
        rank, size: this process's rank (0) and the number of processes (1).
        intra_rank, intra_size: rank and process count on this node (ChainerMN's names).
        inter_rank, inter_size: this node's index and the number of nodes.
        device: ``cuda:LOCAL_RANK`` when CUDA is available to a distributed run, else the CPU.
        counts: number of collectives called, by name (``allreduce``, ``bcast_obj`` …).
    """

    rank = 0
    size = 1
    intra_rank = 0
    intra_size = 1
    inter_rank = 0
    inter_size = 1
    backend: Optional[str] = None

    def __init__(self) -> None:
        self.counts: Dict[str, int] = collections.Counter()
        self.device = torch.device('cpu')

    @property
    def is_distributed(self) -> bool:
        """Whether there is more than one process (collectives actually communicate)."""
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that writes files and prints."""
        return self.rank == 0

    def allreduce(self, tensor: torch.Tensor, op: str = 'sum') -> torch.Tensor:
        """Reduce ``tensor`` in place over all ranks (``op``: 'sum', 'max' or 'min'); returns it."""
        self.counts['allreduce'] += 1
        return tensor

    def control_allreduce(self, tensor: torch.Tensor, op: str = 'max') -> torch.Tensor:
        """:meth:`allreduce` of a small CPU tensor on the gloo control group (no device sync)."""
        self.counts['control_allreduce'] += 1
        return tensor

    def bcast_obj(self, obj: Any, root: int = 0) -> Any:
        """``root``'s ``obj`` on every rank (plain data only: it travels pickled)."""
        self.counts['bcast_obj'] += 1
        return obj

    def allgather_obj(self, obj: Any) -> List[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        self.counts['allgather_obj'] += 1
        return [obj]

    def barrier(self) -> None:
        """Wait until every rank got here."""
        self.counts['barrier'] += 1

    def bcast_tensor(self, tensor: torch.Tensor, root: int = 0) -> torch.Tensor:
        """``root``'s tensor on every rank, in place; returns it."""
        self.counts['bcast_tensor'] += 1
        return tensor

    def finalize(self) -> None:
        """Leave the process group (no-op for a single process)."""

    def __repr__(self) -> str:
        return f'{type(self).__name__}(rank={self.rank}, size={self.size})'


_OPS = {'sum': dist.ReduceOp.SUM, 'max': dist.ReduceOp.MAX, 'min': dist.ReduceOp.MIN}


class Communicator(SingleProcessCommunicator):
    """A communicator over an initialised ``torch.distributed`` process group.

    Args:
        control_timeout: timeout of the gloo control group (default 60 s).
    """

    def __init__(self, control_timeout: datetime.timedelta = CONTROL_TIMEOUT) -> None:
        super().__init__()
        if not dist.is_initialized():
            raise RuntimeError('Communicator needs an initialised process group; use '
                               'trainerlib.distributed.create_communicator()')
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.backend = dist.get_backend()
        self.intra_rank = int(os.environ.get('LOCAL_RANK', self.rank))
        self.intra_size = int(os.environ.get('LOCAL_WORLD_SIZE', self.size))
        self.inter_rank = int(os.environ.get('GROUP_RANK', 0))
        self.inter_size = max(1, self.size // max(1, self.intra_size))
        self.device = (torch.device('cuda', self.intra_rank) if self.backend == 'nccl'
                       else torch.device('cpu'))
        # its own gloo group, also under gloo: small agreements never wait behind the
        # training's collectives, and a dead peer surfaces after control_timeout
        self._control = dist.new_group(backend='gloo', timeout=control_timeout)

    def allreduce(self, tensor: torch.Tensor, op: str = 'sum') -> torch.Tensor:
        self.counts['allreduce'] += 1
        dist.all_reduce(tensor, op=_OPS[op])
        return tensor

    def control_allreduce(self, tensor: torch.Tensor, op: str = 'max') -> torch.Tensor:
        self.counts['control_allreduce'] += 1
        dist.all_reduce(tensor, op=_OPS[op], group=self._control)
        return tensor

    def bcast_obj(self, obj: Any, root: int = 0) -> Any:
        self.counts['bcast_obj'] += 1
        box = [obj if self.rank == root else None]
        dist.broadcast_object_list(box, src=root, group=self._control)
        return box[0]

    def allgather_obj(self, obj: Any) -> List[Any]:
        self.counts['allgather_obj'] += 1
        boxes: List[Any] = [None] * self.size
        dist.all_gather_object(boxes, obj, group=self._control)
        return boxes

    def barrier(self) -> None:
        self.counts['barrier'] += 1
        dist.barrier(group=self._control)

    def bcast_tensor(self, tensor: torch.Tensor, root: int = 0) -> torch.Tensor:
        self.counts['bcast_tensor'] += 1
        dist.broadcast(tensor, src=root)
        return tensor

    def finalize(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def launched_by_torchrun() -> bool:
    """Whether torchrun (or another launcher setting its variables) started this process."""
    return 'TORCHELASTIC_RUN_ID' in os.environ or (
        'RANK' in os.environ and 'WORLD_SIZE' in os.environ and 'MASTER_ADDR' in os.environ)


def create_communicator(backend: Optional[str] = None,
                        timeout: Optional[datetime.timedelta] = None) -> SingleProcessCommunicator:
    """The communicator of this process (ChainerMN's name).

    Under torchrun with ``WORLD_SIZE > 1`` it initialises the default process group from
    the environment (``backend``: ``'nccl'`` when CUDA is available, else ``'gloo'``; NCCL
    ranks use ``cuda:LOCAL_RANK``) unless one is already initialised, and returns a
    :class:`Communicator`. Otherwise (no torchrun, or one process) it returns a
    :class:`SingleProcessCommunicator`, which costs nothing.
    """
    if dist.is_available() and dist.is_initialized():
        return Communicator() if dist.get_world_size() > 1 else SingleProcessCommunicator()
    if int(os.environ.get('WORLD_SIZE', '1')) <= 1 or not dist.is_available():
        return SingleProcessCommunicator()
    if backend is None:
        backend = 'nccl' if torch.cuda.is_available() else 'gloo'
    if backend == 'nccl':
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', '0')))
    kwargs = {} if timeout is None else {'timeout': timeout}
    dist.init_process_group(backend=backend, **kwargs)
    return Communicator()
