"""Per-rank random streams, derived when training starts.

The usual script seeds the same value on every rank (``torch.manual_seed(0)``) and
then builds its model, so the replicas start equal. Dropout masks and other random
draws must then differ across ranks, while the data order (the iterators' own
generators) stays shared: :func:`derive_rank_streams` reseeds torch (CPU and CUDA),
NumPy and Python's ``random`` of rank r from ``(torch.initial_seed(), r)``. The
Trainer calls it once, at the start of a fresh (not resumed) distributed run;
rank 0's streams are reseeded too, so a run does not depend on which rank is which.
"""
from __future__ import annotations

import random

import numpy as np
import torch


def rank_seed(base: int, rank: int) -> int:
    """A 63-bit seed for ``rank`` derived from ``base`` (NumPy's SeedSequence)."""
    words = np.random.SeedSequence([int(base) % 2 ** 64, int(rank)]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def derive_rank_streams(rank: int) -> int:
    """Reseed torch, NumPy and Python for ``rank`` from ``torch.initial_seed()``; returns
    the seed used."""
    seed = rank_seed(torch.initial_seed(), rank)
    torch.manual_seed(seed)          # CPU and every CUDA device
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)
    return seed
