"""ChainerMN's ``scatter_dataset``, for porting ChainerMN scripts (fixed shards)."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from trainerlib.datasets.sub_dataset import SubDataset
from trainerlib.distributed.sharding import equal_length_bounds, shard_bounds


def scatter_dataset(dataset: Any, comm: Any, shuffle: bool = False, seed: Optional[int] = 0,
                    force_equal_length: bool = True) -> SubDataset:
    """This rank's fixed shard of ``dataset`` (ChainerMN's spelling, for porting).

    Every rank passes the whole dataset (nothing is sent: each rank builds a view of its
    part). With ``shuffle`` the examples are first permuted by
    ``numpy.random.RandomState(seed).permutation`` (ChainerMN's rule, so a ported run gets
    ChainerMN's shards; ``seed=None`` draws a seed on rank 0 from torch's global RNG and
    broadcasts it: one collective). ``force_equal_length=True`` gives every rank
    ``ceil(n / W)`` examples, neighbouring shards overlapping by an example where ``n`` is
    not a multiple of ``W`` (training); ``False`` splits without duplicates as
    ``numpy.array_split`` does (some shards one shorter: evaluation).

    The shards are fixed by the world size: a run resumed on another number of ranks would
    see other shards, and each rank's iterator shuffles its shard on its own. Prefer
    ``SerialIterator(dataset, batch_size, comm=comm)`` on the whole dataset: one global order
    shared by all ranks, exact resume, and resume on another world size.
    """
    n, rank, size = len(dataset), int(comm.rank), int(comm.size)
    order = None
    if shuffle:
        if seed is None:
            seed = int(torch.randint(0, 2 ** 32, (), dtype=torch.int64))
            if size > 1:
                seed = comm.bcast_obj(seed)
        order = np.random.RandomState(seed).permutation(n)
    bounds = equal_length_bounds if force_equal_length else shard_bounds
    start, stop = bounds(n, rank, size)
    return SubDataset(dataset, start, stop, order)
