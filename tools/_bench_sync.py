"""``--check-sync`` of tools/bench_overhead.py: no host-device sync in a steady-state iteration.

The default stack (Classifier with accuracy, StandardUpdater, LogReport + PrintReport +
ProgressBar) trains on CUDA with ``torch.cuda.set_sync_debug_mode('error')`` switched on
for every iteration after a short warm-up except while the extensions of a log
iteration run (they convert the accumulated values to numbers, which must sync).
A synchronizing call anywhere else raises, and is reported with where it came from.
"""
from __future__ import annotations

import io
import os
import tempfile
import traceback
from typing import Callable, List, Optional

import torch

import trainerlib.extensions as E
from _bench_common import LOG_EVERY, LR, Workload
from trainerlib import PRIORITY_SNAPSHOT, PRIORITY_WRITER, Classifier, Trainer, make_extension
from trainerlib.iterators import SerialIterator
from trainerlib.updaters import StandardUpdater

WARM_UP = 5   # iterations before the check starts (lazy initialisation may sync once)


def _origin(exc: BaseException) -> str:
    """The two innermost frames of ``exc`` outside torch: the synchronizing call and its caller."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if f'{os.sep}torch{os.sep}' not in f.filename]
    if not frames:
        return 'inside torch'
    return ' <- '.join(f'{os.path.relpath(f.filename)}:{f.lineno} in {f.name}'
                       for f in reversed(frames[-2:]))


def check_default_stack(w: Workload, iterations: int, device: str, data_on_device: bool,
                        set_mode: Callable[[str], None],
                        extra: Optional[List] = None) -> str:
    """Train ``iterations`` steps of ``w`` on ``device`` under the sync check.

    Args:
        w: the workload (its network and training set).
        iterations: steps to run (log lines every 50).
        device: where the model and the batches go.
        data_on_device: keep the dataset on ``device`` (else the converter copies each batch).
        set_mode: ``torch.cuda.set_sync_debug_mode`` (injectable for a CPU test).
        extra: more extensions to register (a test adds one that syncs on purpose).

    Returns:
        ``'ok: ...'``, or ``'SYNC after i completed updates: ...'`` naming the call that
        synchronized (``'ERROR ...'`` if the run failed otherwise).
    """
    model = Classifier(w.make_model())
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    x, t = (w.x.to(device), w.t.to(device)) if data_on_device else (w.x, w.t)
    iterator = SerialIterator(torch.utils.data.TensorDataset(x, t), w.batch, shuffle=True)
    updater = StandardUpdater(iterator, optimizer, model, device=device)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(updater, (iterations, 'iteration'), out=out)
        sink = io.StringIO()
        trainer.extend(E.LogReport(trigger=(LOG_EVERY, 'iteration')))
        trainer.extend(E.PrintReport(['epoch', 'iteration', 'main/loss', 'main/accuracy'],
                                     out=sink))
        trainer.extend(E.ProgressBar(out=sink))
        for extension in extra or []:
            trainer.extend(extension)

        def off(*args):
            set_mode('default')

        # first after the update; first to be told of an error and to be finalized
        @make_extension(trigger=(1, 'iteration'), priority=PRIORITY_WRITER + 1,
                        on_error=off, finalizer=off)
        def open_log_iteration(trainer):
            if trainer.updater.iteration % LOG_EVERY == 0:
                set_mode('default')

        @make_extension(trigger=(1, 'iteration'), priority=PRIORITY_SNAPSHOT - 1)
        def arm(trainer):                      # last: the next update runs checked
            set_mode('error' if trainer.updater.iteration >= WARM_UP else 'default')

        trainer.extend(open_log_iteration)
        trainer.extend(arm)
        try:
            trainer.run()
        except Exception as exc:    # reported, so the other configurations still run
            kind = 'SYNC' if 'synchroniz' in str(exc) else f'ERROR {type(exc).__name__}'
            return (f'{kind} after {trainer.updater.iteration} completed updates: '
                    f'{str(exc).splitlines()[0]} ({_origin(exc)})')
        finally:
            set_mode('default')
    return (f'ok: no sync in updates {WARM_UP + 1}-{iterations} and in the extensions of '
            f'their non-log iterations ({len(trainer.get_extension("LogReport").log)} '
            'log lines)')


def check_sync(workloads: List[Workload], iterations: int = 300) -> List[str]:
    """Report lines for every workload, with the dataset in host and in device memory."""
    if not torch.cuda.is_available():
        return ['sync check: skipped, CUDA is not available']
    lines = [f'sync check on {torch.cuda.get_device_name()} '
             f"(torch.cuda.set_sync_debug_mode('error') outside log iterations):"]
    for w in workloads:
        for on_device in (False, True):
            where = 'dataset on GPU' if on_device else 'dataset on CPU'
            result = check_default_stack(w, iterations, 'cuda', on_device,
                                         torch.cuda.set_sync_debug_mode)
            lines.append(f'  {w.name} ({where}): {result}')
    return lines
