"""Shared pieces of tools/bench_overhead.py: the workloads, one run's result, the settings.

Every contestant trains a fresh copy of the same network (same seed) with plain
SGD on the same batches in the same order, so all must end with the same weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Tuple

import torch

from _bench_clock import Clock, period_of

LR = 0.01
LOG_EVERY = 50          # iterations between log lines, for every contestant that logs
N_BATCHES = 50          # batches in one epoch of the training set
N_VAL_BATCHES = 5       # batches of the validation set (contestants that evaluate)


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def _cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(16 * 7 * 7, 10))


@dataclass
class Workload:
    """A network and in-memory random data (only the time per iteration matters here).

    Attributes:
        name: 'mlp' or 'cnn'.
        title: one line for the table header.
        make_model: returns the network, initialised from seed 0 on every call.
        batch: examples per batch.
        x, t: training inputs and labels, ``N_BATCHES * batch`` rows.
        val_x, val_t: validation inputs and labels, ``N_VAL_BATCHES * batch`` rows.
    """
    name: str
    title: str
    make_model: Callable[[], torch.nn.Module]
    batch: int
    x: torch.Tensor
    t: torch.Tensor
    val_x: torch.Tensor
    val_t: torch.Tensor
    batches: List[Tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    def __post_init__(self) -> None:
        b = self.batch
        self.batches = [(self.x[i * b:(i + 1) * b], self.t[i * b:(i + 1) * b])
                        for i in range(len(self.x) // b)]

    def val_batches(self) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        b = self.batch
        return [(self.val_x[i * b:(i + 1) * b], self.val_t[i * b:(i + 1) * b])
                for i in range(len(self.val_x) // b)]


class Batches:
    """The in-memory batches as a re-iterable with a length (what a DataLoader offers):
    every framework iterates the same ready batches, as the hand loop does."""

    def __init__(self, batches: List[Tuple[torch.Tensor, torch.Tensor]]) -> None:
        self._batches = batches

    def __iter__(self):
        return iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)


def make_workload(name: str) -> Workload:
    """``'mlp'``: 64-64-10, batch 32; ``'cnn'``: two 3x3 convs on 1x28x28, batch 64."""
    shape, batch, make, title = {
        'mlp': ((64,), 32, _mlp, 'MLP 64-64-10, batch 32'),
        'cnn': ((1, 28, 28), 64, _cnn, 'CNN conv8-pool-conv16-pool-fc10 on 1x28x28, batch 64'),
    }[name]
    g = torch.Generator().manual_seed(1)
    n, n_val = N_BATCHES * batch, N_VAL_BATCHES * batch
    return Workload(name, title, make, batch,
                    torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g),
                    torch.randn(n_val, *shape, generator=g),
                    torch.randint(0, 10, (n_val,), generator=g))


@dataclass
class Run:
    """One timed run of a contestant.

    Attributes:
        per_iteration: seconds per steady-state iteration (see :class:`Clock`).
        params: the trained network's parameters at the end (compared with the hand loop's).
    """
    per_iteration: float
    params: List[torch.Tensor]


def finish(clock: Clock, model: torch.nn.Module) -> Run:
    """The :class:`Run` of a finished contestant."""
    return Run(clock.per_iteration(), [p.detach().clone() for p in model.parameters()])


@dataclass
class Settings:
    """What every contestant of one benchmark run shares.

    Attributes:
        snapshot_every: iterations between snapshots/evaluations (contestants that do them).
        sink: the null text stream that logging contestants print to.
        tmp: a scratch directory; each run writes into its own fresh subdirectory.
    """
    snapshot_every: int
    sink: object
    tmp: str

    @property
    def period(self) -> int:
        return period_of(LOG_EVERY, self.snapshot_every)


Contestant = Callable[[Workload, int, Settings], Run]
