"""(g) of tools/bench_overhead.py: batches per second from an in-memory tensor dataset.

SerialIterator + concat_examples (trainerlib) against torch's DataLoader, both
shuffling every epoch, single process (``num_workers=0``): the DataLoader as usually
written (``batch_size=``, which fetches and collates example by example) and with a
BatchSampler as its sampler (``batch_size=None``, one indexing per batch).
"""
from __future__ import annotations

import random
import statistics
from typing import Callable, Dict, List

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from _bench_clock import now
from trainerlib.convert import concat_examples
from trainerlib.iterators import SerialIterator


def _serial(dataset: TensorDataset, batch: int, n: int) -> None:
    iterator = SerialIterator(dataset, batch, shuffle=True, seed=0)
    for _ in range(n):
        concat_examples(iterator.next())


def _loop(loader: DataLoader, n: int) -> None:
    count = 0
    while count < n:
        for _ in loader:
            count += 1
            if count == n:
                return


def _dataloader(dataset: TensorDataset, batch: int, n: int) -> None:
    _loop(DataLoader(dataset, batch_size=batch, shuffle=True), n)


def _dataloader_batched(dataset: TensorDataset, batch: int, n: int) -> None:
    sampler = BatchSampler(RandomSampler(dataset), batch, drop_last=False)
    _loop(DataLoader(dataset, sampler=sampler, batch_size=None), n)


CONTESTANTS: Dict[str, Callable[[TensorDataset, int, int], None]] = {
    'SerialIterator + concat_examples': _serial,
    'DataLoader(batch_size=B, shuffle=True)': _dataloader,
    'DataLoader(sampler=BatchSampler)': _dataloader_batched,
}


def measure(x: torch.Tensor, t: torch.Tensor, batch: int, n: int,
            rounds: int) -> Dict[str, List[float]]:
    """Batches per second of each contestant in each of ``rounds`` shuffled rounds of
    ``n`` batches (one warm-up run of each first)."""
    dataset = TensorDataset(x, t)
    for fn in CONTESTANTS.values():
        fn(dataset, batch, min(n, 20))
    rates: Dict[str, List[float]] = {name: [] for name in CONTESTANTS}
    order = list(CONTESTANTS)
    for _ in range(rounds):
        random.shuffle(order)
        for name in order:
            start = now()
            CONTESTANTS[name](dataset, batch, n)
            rates[name].append(n / (now() - start))
    return rates


def report(rates: Dict[str, List[float]], title: str) -> List[str]:
    """Table lines: median batches/s and the median per-round ratio to the first contestant."""
    names = list(rates)
    ref = names[0]
    lines = [title, f'  {"loader":40s} {"batches/s":>10s} {"vs SerialIterator":>18s}']
    for name in names:
        ratio = statistics.median(a / b for a, b in zip(rates[name], rates[ref]))
        lines.append(f'  {name:40s} {statistics.median(rates[name]):10.0f} {ratio:18.3f}')
    return lines
