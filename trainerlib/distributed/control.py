"""The agreed stop of a data-parallel run: one tiny control all-reduce every K iterations.

A signal handler only sets its process's flag (never a collective in a handler or a
thread). Under W ranks the trainer adds one more entry to its trigger schedule, a
:class:`StopCheck`, due at the multiples of K (the same iterations on every rank): there
every rank contributes ``[stop flag, signal number, next K]`` to one int64
``comm.control_allreduce(..., 'max')`` on the CPU gloo control group (no device sync).
If any rank was signalled, all of them finish that iteration, run ``on_preemption``,
finalize and raise :class:`~trainerlib.preemption.Preempted` (exit 143 for SIGTERM).
On the other iterations it costs nothing beyond the schedule's one integer comparison.

K: with ``Preemption(check_every=K)`` it is fixed; by default rank 0 measures the
seconds per iteration since the previous check and proposes the K that makes the next
interval last about ``Preemption.check_interval`` (0.5 s), which every rank receives in
the same all-reduce (the others contribute 0). The first check is one iteration after
the start (nothing is measured yet). A stop is agreed within about one interval; it is
then bounded by the snapshot time and the grace period.

Telling a preemption from a failure in a job script
----------------------------------------------------
torchrun exits with status 1 whenever a worker exits non-zero, also after a clean
preemption (every rank exits 143; torchrun raises ``ChildFailedError``, or
``SignalException`` when the agent itself was signalled), so its status does not say
what happened. After a preemption, rank 0 writes ``OUT/preempted`` (JSON:
``{"event": "preempted", "iteration": i, "signal": "SIGTERM", "exit_status": 143,
"world_size": W}``) after the snapshot was committed, and every rank prints
``trainerlib: rank r of W preempted at iteration i by SIGTERM (exit status 143)`` on
stderr. The file is removed when a run starts, so it describes the latest run only::

    torchrun --standalone --nproc-per-node=2 train.py --out OUT; status=$?
    if [ $status -eq 0 ]; then echo finished
    elif [ -f OUT/preempted ]; then echo preempted; exit 143   # requeue: autoload resumes
    else echo failed; exit $status
    fi

(torchrun's error summary also lists ``exitcode: 143`` per rank.) With
``--max-restarts=N`` a rank's 143 makes the agent restart the group, which resumes by
autoload.

Faults: an exception on one rank ends that rank (no control message: it cannot be
agreed). Its peers then fail in their next collective: gloo raises as soon as the
dead rank's sockets close; a peer that cannot notice (stuck in NCCL) is ended by
torchrun, which signals the remaining workers when one fails and kills them after its
shutdown timeout. Collectives on the control group (always its own gloo group) time
out after ``CONTROL_TIMEOUT`` (60 s). Under W > 1 the
trainer does not call ``on_error`` of collective extensions nor of a snapshot with
``snapshot_on_error``: whether every rank failed at the same point cannot be known,
and a set written by some ranks would be a snapshot of a half-done iteration.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any, Optional

import torch

MAX_CHECK_EVERY = 10000
"""The largest adaptive K (iterations between two checks)."""

RECORD = 'preempted'
"""The file rank 0 writes in ``out`` after an agreed preemption."""


class StopCheck:
    """The trigger of the stop check: due at multiples of K; asking it is the collective.

    It never fires (there is no extension to run); asking it all-reduces the flags and
    sets :attr:`received` to the agreed signal, and ``preemption.agreed``.

    Attributes:
        every: the current K.
        received: the agreed signal (None: no rank was signalled at the last check).
        checks: how many checks (control all-reduces) ran.
        last: the iteration of the last check (None: none yet).
    """

    def __init__(self, comm: Any, preemption: Any) -> None:
        self.comm = comm
        self.preemption = preemption
        self.fixed = preemption.check_every
        self.every = self.fixed or 1
        self.received: Optional[int] = None
        self.checks = 0
        self.last: Optional[int] = None
        self._since_iteration = 0
        self._since_time = 0.0

    def start(self, iteration: int) -> None:
        """Training starts (or resumes) after ``iteration``: measure from here."""
        self._since_iteration, self._since_time = iteration, time.perf_counter()

    def next_fire(self, iteration: int) -> int:
        return (iteration // self.every + 1) * self.every

    def _propose(self, iteration: int) -> int:
        if self.fixed is not None:
            return self.fixed
        now = time.perf_counter()
        done = iteration - self._since_iteration
        per_iteration = (now - self._since_time) / max(done, 1)
        self._since_iteration, self._since_time = iteration, now
        k = int(self.preemption.check_interval / per_iteration) if per_iteration > 0 \
            else MAX_CHECK_EVERY
        return min(max(k, 1), MAX_CHECK_EVERY)

    def __call__(self, trainer: Any) -> bool:
        iteration = trainer.updater.iteration
        local = self.preemption.received
        proposal = self._propose(iteration) if self.comm.rank == 0 else 0
        vector = torch.tensor([local is not None, local or 0, proposal], dtype=torch.int64)
        self.comm.control_allreduce(vector, 'max')
        stop, signum, every = vector.tolist()
        self.checks += 1
        self.last = iteration
        self.every = max(int(every), 1)
        if stop:
            self.received = int(signum)
            self.preemption.agreed = True
        return False


class Nothing:
    """The extension of the stop check's schedule entry (never called)."""
    name = '_stop_check'

    def __call__(self, trainer: Any) -> None:
        pass


def report_preempted(trainer: Any, signum: int) -> None:
    """Say on stderr (every rank) and in ``out/preempted`` (rank 0) that the run was
    preempted after ``trainer.updater.iteration``."""
    comm, iteration = trainer.comm, trainer.updater.iteration
    name = signal.Signals(signum).name
    sys.stderr.write(f'trainerlib: rank {comm.rank} of {comm.size} preempted at iteration '
                     f'{iteration} by {name} (exit status {128 + signum})\n')
    sys.stderr.flush()
    if comm.rank != 0:
        return
    path = os.path.join(trainer.out, RECORD)
    record = {'event': 'preempted', 'iteration': iteration, 'signal': name,
              'exit_status': 128 + signum, 'world_size': comm.size}
    try:
        with open(path + '.tmp', 'w') as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + '.tmp', path)
    except OSError as e:  # the exit status still says it
        sys.stderr.write(f'trainerlib: could not write {path}: {e}\n')


def clear_record(trainer: Any) -> None:
    """Rank 0 removes a previous run's ``out/preempted`` when a run starts."""
    if trainer.comm.rank == 0:
        try:
            os.remove(os.path.join(trainer.out, RECORD))
        except FileNotFoundError:
            pass
