"""The clock of tools/bench_overhead.py: when a run's iterations are timed, how two runs take
turns (lockstep), and how the process is kept steady (one CPU, one malloc arena)."""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import os
import threading
import time
from typing import Callable, Iterator, Optional, Set, Tuple, TypeVar

import torch

M_ARENA_MAX = -8         # glibc mallopt parameter
CLOCKS = {'wall': time.perf_counter, 'cpu': time.process_time}
_timer = time.perf_counter
R = TypeVar('R')


def use_clock(name: str) -> None:
    """Time with ``'wall'`` (perf_counter, default) or ``'cpu'`` (this process's CPU time:
    blind to time spent waiting, e.g. for fsync, and counting the CPU time of every thread,
    background writers included)."""
    global _timer
    _timer = CLOCKS[name]


def now() -> float:
    """Seconds on the selected clock (see :func:`use_clock`)."""
    return _timer()


class _Pinning:
    """Which threads are timed (pinned to one CPU) and where the others may run."""
    timed: Set[int] = set()          # native ids of the timed threads
    others: Optional[Set[int]] = None  # CPUs for any other thread (None: not pinning)
    seen: Set[int] = set()           # native ids already released


def release_other_threads() -> None:
    """Let every thread but the timed ones run on any allowed CPU, as the threads a
    framework starts (log and snapshot writers, progress monitors) do on a multi-core
    machine; they inherit the pinned CPU of the thread that starts them."""
    if _Pinning.others is None:
        return
    for thread in threading.enumerate():
        tid = thread.native_id
        if tid is not None and tid not in _Pinning.timed and tid not in _Pinning.seen:
            _Pinning.seen.add(tid)
            try:
                os.sched_setaffinity(tid, _Pinning.others)
            except OSError:  # the thread has just ended
                pass


@contextlib.contextmanager
def steady_process(cpu: Optional[int]) -> Iterator[str]:
    """Pin the timed threads to one CPU (until the end of the ``with``) and give all
    threads one malloc arena; yields what was done, for the report. Other threads run
    on any CPU (see :func:`release_other_threads`).

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
        chosen = max(allowed) if cpu is None else cpu   # (--cpu is checked by the parser)
        os.sched_setaffinity(0, {chosen})
        _Pinning.timed, _Pinning.others, _Pinning.seen = {threading.get_native_id()}, allowed, set()
        done.append(f'timed threads pinned to CPU {chosen}, others free')
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
            _Pinning.timed, _Pinning.others = set(), None


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
    at nearly the same moments, and a drift of its speed (tens of percent over seconds
    on a shared host) cancels in their ratio.
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


def lockstep(first: Callable[[], R], second: Callable[[], R]) -> Tuple[R, R]:
    """Run ``first`` in a helper thread and ``second`` in this one, taking turns one
    iteration each (their clocks pace them, see :class:`Turns`); returns both runs.

    ``second`` starts when ``first`` ends its first turn, so the two never set up
    at the same time (both seed the global RNG to build their model).
    """
    turns, result = Turns(), {}

    def helper() -> None:
        _paced.turns, _paced.side = turns, 0
        tid = threading.get_native_id()
        _Pinning.timed.add(tid)
        try:
            result['run'] = first()
        except BaseException as e:  # re-raised in this thread below
            result['error'] = e
        finally:
            _Pinning.timed.discard(tid)
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
        release_other_threads()
        if self.turns is not None and self.count <= self.last:
            self.turns.next(self.side, self.count == self.last)
        self.resumed = now()

    def per_iteration(self) -> float:
        """Seconds per steady-state iteration."""
        if self.count != self.last:
            raise RuntimeError(f'the run made {self.count} optimizer steps, expected {self.last}')
        return self.elapsed / (self.last - self.first)


def period_of(log_every: int, snapshot_every: int) -> int:
    """The clock's window unit: the lcm of the log and snapshot intervals."""
    return log_every * snapshot_every // math.gcd(log_every, snapshot_every)
