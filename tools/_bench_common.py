"""Shared pieces of tools/bench_overhead.py: the workloads, the clock, one run's result.

Every contestant trains a fresh copy of the same network (same seed) with plain
SGD on the same batches in the same order, so all must end with the same weights.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import torch

LR = 0.01
LOG_EVERY = 50          # iterations between log lines, for every contestant that logs
N_BATCHES = 50          # batches in one epoch of the training set
N_VAL_BATCHES = 5       # batches of the validation set (contestants that evaluate)
CLOCKS = {'wall': time.perf_counter, 'cpu': time.process_time}
_timer = time.perf_counter


def use_clock(name: str) -> None:
    """Time with ``'wall'`` (perf_counter, default) or ``'cpu'`` (this process's CPU time:
    steadier on a shared machine, but blind to time spent waiting, e.g. for fsync)."""
    global _timer
    _timer = CLOCKS[name]


def now() -> float:
    """Seconds on the selected clock (see :func:`use_clock`)."""
    return _timer()


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


def window(iterations: int, period: int) -> Tuple[int, int]:
    """Steps ``(first, last)`` whose pre-hooks start and stop the clock (see :class:`Clock`)."""
    if iterations < 2:
        raise ValueError(f'a timed run needs >= 2 iterations, got {iterations}')
    warm = max(1, iterations // 10)
    size = (iterations - warm) // period * period or iterations - warm
    return iterations - size, iterations


def events_in_window(iterations: int, period: int, every: int) -> int:
    """How many iterations that are multiples of ``every`` run their extensions inside the
    timed window (those of iterations ``first`` .. ``last - 1``)."""
    first, last = window(iterations, period)
    return (last - 1) // every - (first - 1) // every


class Clock:
    """Times the steady state of one run from the optimizer's step pre-hook.

    The hook fires once per iteration in every framework (for Lightning before the
    forward, which runs inside ``step(closure)``; elsewhere after the backward), so the
    time between the pre-hooks of steps ``first`` and ``last`` covers ``last - first``
    whole iterations, whatever each framework does around them. The first ~10 % of
    the run (at least one step) is left out as warm-up, and the window is a multiple of
    ``period`` (the log/snapshot interval) when the run is long enough, so periodic
    work is counted at its true rate. Setup and teardown are timed apart (``Run.fixed``).

    Args:
        optimizer: the optimizer whose ``step`` ends each iteration.
        iterations: steps the run makes (>= 2).
        period: iterations between periodic events (log lines, snapshots).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, iterations: int, period: int) -> None:
        self.first, self.last = window(iterations, period)
        self.count = 0
        self.start: Optional[float] = None
        self.end: Optional[float] = None
        optimizer.register_step_pre_hook(self)

    def __call__(self, optimizer, args, kwargs) -> None:
        self.count += 1
        if self.count == self.first:
            self.start = now()
        elif self.count == self.last:
            self.end = now()

    def per_iteration(self) -> float:
        """Seconds per steady-state iteration."""
        if self.count != self.last:
            raise RuntimeError(f'the run made {self.count} optimizer steps, expected {self.last}')
        return (self.end - self.start) / (self.last - self.first)


@dataclass
class Run:
    """One timed run of a contestant.

    Attributes:
        per_iteration: seconds per steady-state iteration (see :class:`Clock`).
        fixed: seconds of the whole call not explained by ``iterations * per_iteration``
            (setup, warm-up excess, teardown).
        params: the trained network's parameters at the end (compared with the hand loop's).
    """
    per_iteration: float
    fixed: float
    params: List[torch.Tensor]


def finish(clock: Clock, started: float, iterations: int, model: torch.nn.Module) -> Run:
    """The :class:`Run` of a call that began at ``started`` (:func:`now`)."""
    total = now() - started
    per = clock.per_iteration()
    return Run(per, total - iterations * per, [p.detach().clone() for p in model.parameters()])


def period_of(log_every: int, snapshot_every: int) -> int:
    """The clock's window unit: the lcm of the log and snapshot intervals."""
    return log_every * snapshot_every // math.gcd(log_every, snapshot_every)


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
