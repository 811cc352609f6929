"""Shared pieces of tools/bench_overhead.py: the workloads, the clock, one run's result.

Every contestant trains a fresh copy of the same network (same seed) with plain
SGD on the same batches in the same order, so all must end with the same weights.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional, Tuple

import torch

LR = 0.01
LOG_EVERY = 50          # iterations between log lines, for every contestant that logs
N_BATCHES = 50          # batches in one epoch of the training set
N_VAL_BATCHES = 5       # batches of the validation set (contestants that evaluate)
M_ARENA_MAX = -8         # glibc mallopt parameter
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


@contextlib.contextmanager
def steady_process(cpu: Optional[int]) -> Iterator[str]:
    """Pin this process to one CPU (until the end of the ``with``) and give all its
    threads one malloc arena; yields what was done, for the report.

    Measured here (hand loop vs hand loop in :func:`lockstep`, CNN): a thread of its own
    ran persistently 10-15 % faster or slower than the main thread, by its glibc malloc
    arena (one per thread) and by the CPU it ran on (the vCPUs of a shared host differ in
    speed); one arena and one CPU bring the two within ~1 %.

    Args:
        cpu: the CPU to run on (default: the highest-numbered one allowed).
    """
    done, allowed = [], None
    if hasattr(os, 'sched_setaffinity'):
        allowed = os.sched_getaffinity(0)
        chosen = max(allowed) if cpu is None else cpu
        if chosen not in allowed:
            raise ValueError(f'--cpu {chosen}: this process may only use CPUs {sorted(allowed)}')
        os.sched_setaffinity(0, {chosen})
        done.append(f'pinned to CPU {chosen}')
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        if libc.mallopt(M_ARENA_MAX, 1) == 1:
            done.append('one malloc arena')
    except (OSError, AttributeError):  # not glibc
        pass
    try:
        yield ', '.join(done) or 'not pinned (no sched_setaffinity), default malloc'
    finally:
        if allowed is not None:
            os.sched_setaffinity(0, allowed)


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


class Turns:
    """Two threads that take turns, one iteration each (see :func:`lockstep`).

    A run's clock calls :meth:`next` from its step pre-hook: the thread stops, the other
    one runs its next iteration, then this one goes on. So the two runs see the machine
    at the same moments, and a drift of its speed (tens of percent over seconds on a
    shared host) cancels in their ratio.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._turn = 0
        self._done = [False, False]

    def next(self, side: int, last: bool) -> None:
        """Side ``side`` ends an iteration (``last``: its final one): the other side runs."""
        with self._cond:
            self._done[side] = self._done[side] or last
            self._turn = 1 - side
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._turn == side or self._done[1 - side])

    def wait(self, side: int) -> None:
        """Wait until it is side ``side``'s turn (or the other side has returned)."""
        with self._cond:
            self._cond.wait_for(lambda: self._turn == side or self._done[1 - side])

    def finish(self, side: int) -> None:
        """Side ``side`` has returned (or failed): never wait for it again."""
        with self._cond:
            self._done[side] = True
            self._turn = 1 - side
            self._cond.notify_all()


_paced = threading.local()   # .turns, .side: set in the threads of a lockstep pair


def lockstep(first: Callable[[], 'Run'], second: Callable[[], 'Run']) -> Tuple['Run', 'Run']:
    """Run ``first`` in a helper thread and ``second`` in this one, taking turns per
    iteration (their clocks pace them, see :class:`Turns`); returns both runs.

    ``second`` starts when ``first`` has made its first step, so the two never set up
    at the same time (both seed the global RNG to build their model).
    """
    turns, result = Turns(), {}

    def helper() -> None:
        _paced.turns, _paced.side = turns, 0
        try:
            result['run'] = first()
        except BaseException as e:  # re-raised in this thread below
            result['error'] = e
        finally:
            turns.finish(0)
    thread = threading.Thread(target=helper, name='bench-lockstep')
    thread.start()
    _paced.turns, _paced.side = turns, 1
    try:
        turns.wait(1)
        run = second()
    finally:
        turns.finish(1)
        _paced.turns = None
        thread.join()
    if 'error' in result:
        raise result['error']
    return result['run'], run


class Clock:
    """Times the steady state of one run from the optimizer's step pre-hook.

    The hook fires once per iteration in every framework (for Lightning before the
    forward, which runs inside ``step(closure)``; elsewhere after the backward), so the
    time between the pre-hooks of steps ``first`` and ``last`` covers ``last - first``
    whole iterations, whatever each framework does around them. The first ~10 % of
    the run (at least one step) is left out as warm-up, and the window is a multiple of
    ``period`` (the log/snapshot interval) when the run is long enough, so periodic
    work is counted at its true rate. In a :func:`lockstep` pair the hook also hands
    the turn to the other run, and the time the other run's iteration takes is left out.

    Args:
        optimizer: the optimizer whose ``step`` ends each iteration.
        iterations: steps the run makes (>= 2).
        period: iterations between periodic events (log lines, snapshots).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, iterations: int, period: int) -> None:
        self.first, self.last = window(iterations, period)
        self.count = 0
        self.elapsed = 0.0
        self.resumed = 0.0
        self.turns: Optional[Turns] = getattr(_paced, 'turns', None)
        self.side: int = getattr(_paced, 'side', 0)
        optimizer.register_step_pre_hook(self)

    def __call__(self, optimizer, args, kwargs) -> None:
        self.count += 1
        if self.first < self.count <= self.last:
            self.elapsed += now() - self.resumed
        if self.turns is not None and self.count <= self.last:
            self.turns.next(self.side, self.count == self.last)
        self.resumed = now()

    def per_iteration(self) -> float:
        """Seconds per steady-state iteration."""
        if self.count != self.last:
            raise RuntimeError(f'the run made {self.count} optimizer steps, expected {self.last}')
        return self.elapsed / (self.last - self.first)


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
