"""Graceful stop on SIGTERM / SIGINT: finish the iteration, snapshot, finalize, exit.

A scheduler that reclaims a machine (a spot instance, a Slurm or Kubernetes time
limit) sends SIGTERM and, a grace period later, SIGKILL. While
:meth:`Trainer.run` runs in the main thread, the first such signal only sets a
flag; the trainer ends the current iteration (its extensions included), calls
every extension's ``on_preemption`` (``extensions.snapshot`` writes its file
there), finalizes the extensions and raises :class:`Preempted`. Because
``Preempted`` is a ``SystemExit`` with code ``128 + signal`` (143 for SIGTERM,
130 for SIGINT), a script that does not catch it exits with that status and no
traceback. A second signal, or the grace period running out, ends the process at
once with the default action of the signal.

Under W ranks (``Trainer(comm=...)`` with ``comm.size > 1``) the handler still only
sets this process's flag. The ranks agree on it every K iterations (at iterations
where ``iteration % K == 0``, the same on every rank) in one tiny all-reduce on the
CPU control group (:mod:`trainerlib.distributed.control`); if any rank was
signalled, every rank finishes that same iteration, runs ``on_preemption``,
finalizes and raises :class:`Preempted`. K adapts so that a check comes about every
``check_interval`` seconds (rank 0 measures, and the next K travels in the same
all-reduce), or is fixed with ``check_every``. Once a stop is agreed, further
signals are ignored in that process: when the first rank exits, the launcher
(torchrun) signals the others, which must still finish their snapshot and exit 143.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from typing import Optional, Sequence

KILL_AFTER = 5.0
"""Seconds between the grace period's end and SIGKILL if the handler could not run."""


class Preempted(SystemExit):
    """Training stopped on a signal after a clean iteration (and snapshot).

    Attributes:
        signum: the signal received (e.g. ``signal.SIGTERM``).
        iteration: the last iteration completed (what a resume continues from).
    """

    def __init__(self, signum: int, iteration: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum
        self.iteration = iteration

    def __str__(self) -> str:
        return (f'stopped by {signal.Signals(self.signum).name} after iteration '
                f'{self.iteration}; resume from the snapshot to continue')


class Preemption:
    """How a trainer reacts to termination signals (``trainer.preemption``).

    Args:
        signals: the signals that request a graceful stop (default SIGTERM, SIGINT).
        grace_period: seconds allowed, from the first signal, to finish the
            iteration, snapshot and finalize; then the process is ended by the
            signal's default action. None waits for ever. Default 60.
        check_every: data-parallel runs only: agree on a stop every this many
            iterations (at multiples of it). None (default): adapt K so that the
            ranks agree about every ``check_interval`` seconds.
        check_interval: the target seconds between two checks when ``check_every``
            is None (default 0.5: a stop is agreed within about a second).

    Attributes:
        received: the first signal this process received (None: none yet).
        agreed: the ranks agreed to stop (data-parallel runs; set by the stop check).
    """

    def __init__(self, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT),
                 grace_period: Optional[float] = 60.0, *, check_every: Optional[int] = None,
                 check_interval: float = 0.5) -> None:
        if grace_period is not None and not grace_period > 0:
            raise ValueError(f'grace_period must be > 0 seconds or None, got {grace_period}')
        if check_every is not None and (isinstance(check_every, bool) or
                                        not isinstance(check_every, int) or check_every < 1):
            raise ValueError(f'check_every must be an int >= 1 or None, got {check_every!r}')
        if not check_interval > 0:
            raise ValueError(f'check_interval must be > 0 seconds, got {check_interval}')
        self.signals = tuple(signals)
        self.grace_period = grace_period
        self.check_every = check_every
        self.check_interval = check_interval
        self.received: Optional[int] = None
        self.agreed = False
        self._previous: dict = {}
        self._timer: Optional[threading.Timer] = None

    def __enter__(self) -> 'Preemption':
        self.received = None
        self.agreed = False
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for signum, handler in self._previous.items():
            # after an agreed stop the process is on its way out with 128 + signal: a
            # launcher's signal to the ranks still running must not change that
            signal.signal(signum, signal.SIG_IGN if self.agreed else handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:  # the second signal: stop now ...
            if self.agreed:            # ... unless all ranks are already stopping
                return
            _die(signum)
        self.received = signum
        if self.grace_period is not None:
            self._timer = threading.Timer(self.grace_period, _resend, (signum,))
            self._timer.daemon = True
            self._timer.start()


def _die(signum: int) -> None:
    """End the process as the signal's default action would (no cleanup; main thread)."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _resend(signum: int) -> None:
    """The grace period is over: signal again (the handler then ends the process).

    If the main thread cannot run the handler (stuck in native code), SIGKILL follows
    after :data:`KILL_AFTER` seconds.
    """
    os.kill(os.getpid(), signum)
    time.sleep(KILL_AFTER)
    os.kill(os.getpid(), signal.SIGKILL)
