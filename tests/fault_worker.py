"""A small training run for the fault-injection tests (run as a subprocess).

    python tests/fault_worker.py OUT [--iterations N] [--kill-at ITER:PHASE]
                                     [--sigterm-at ITER] [--hang-on-preemption S]

It always resumes from the newest snapshot in OUT (autoload), so running it again
after a crash continues the run; at the end it writes ``OUT/final`` (the model's
parameters). ``--kill-at`` sends SIGKILL to itself at one point of iteration ITER:

    update      after the update, before any extension ran
    mid-write   while the snapshot of ITER is being written (half the bytes written)
    pre-rename  the snapshot's temporary file is complete, not yet renamed
    post-rename renamed, the directory not yet fsynced
    retention   the new snapshot is written, the old ones not yet deleted

The model uses dropout and an lr schedule and the data are shuffled, so any state
the snapshot failed to restore (RNG, iterator, optimizer, schedule) shows up in
the final parameters.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import extensions as E  # noqa: E402
from extensions import _writer, snapshot_writers  # noqa: E402
from trainerlib import Classifier, Trainer, serialization  # noqa: E402
from trainerlib.datasets import TupleDataset  # noqa: E402
from trainerlib.extension import FunctionExtension  # noqa: E402
from trainerlib.iterators import SerialIterator  # noqa: E402
from trainerlib.updaters import StandardUpdater  # noqa: E402

SNAPSHOT_EVERY = 6
LOG_EVERY = 5


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def write_half_and_die(data, path: str) -> None:
    """Write half of ``data`` to ``path``'s temporary file, flushed and fsynced, then die."""
    with serialization.atomic_open(path) as f:
        f.write(data[:len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        die()


def arm(phase: str, iteration: int) -> None:
    """Patch the snapshot writing path to SIGKILL this process at ``phase``."""
    target = f'snapshot_iter_{iteration}'
    state = {'writing': None}
    write_file = serialization.write_file

    def tracking_write_file(data, path):
        state['writing'] = os.path.basename(path)
        if phase == 'mid-write' and state['writing'] == target:
            write_half_and_die(data, path)
        return write_file(data, path)
    _writer.write_file = tracking_write_file
    if phase == 'pre-rename':
        replace = os.replace

        def replace_then_die(src, dst):
            if os.path.basename(dst) == target:
                die()
            return replace(src, dst)
        serialization.os.replace = replace_then_die
    if phase == 'post-rename':
        fsync_dir = serialization._fsync_dir

        def fsync_dir_then_die(directory):
            if state['writing'] == target:
                die()
            return fsync_dir(directory)
        serialization._fsync_dir = fsync_dir_then_die
    if phase == 'retention':
        remove_old = snapshot_writers.Snapshot._remove_old

        def die_before_removing(self, out, keep):
            if keep == target:
                die()
            return remove_old(self, out, keep)
        snapshot_writers.Snapshot._remove_old = die_before_removing


def build(out: str, iterations: int) -> Trainer:
    torch.manual_seed(0)
    x = torch.randn(240, 12)
    t = (x[:, :3].sum(1) > 0).long() + (x[:, 3] > 1).long()
    model = Classifier(torch.nn.Sequential(
        torch.nn.Linear(12, 32), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(32, 3)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train_iter = SerialIterator(TupleDataset(x, t), 16, shuffle=True, seed=1)
    trainer = Trainer(StandardUpdater(train_iter, optimizer, model=model),
                      (iterations, 'iteration'), out=out)
    trainer.extend(E.ExponentialShift('lr', 0.97), trigger=(1, 'iteration'))
    trainer.extend(E.LogReport(trigger=(LOG_EVERY, 'iteration')))
    trainer.extend(E.snapshot(n_retains=2, autoload=True), trigger=(SNAPSHOT_EVERY, 'iteration'))
    return trainer


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument('out')
    parser.add_argument('--iterations', type=int, default=60)
    parser.add_argument('--kill-at', default=None, help='ITER:PHASE')
    parser.add_argument('--sigterm-at', type=int, default=None)
    parser.add_argument('--hang-on-preemption', type=float, default=0.0)
    parser.add_argument('--grace-period', type=float, default=60.0)
    parser.add_argument('--sleep', type=float, default=0.0, help='seconds per iteration')
    args = parser.parse_args()
    torch.set_num_threads(1)
    trainer = build(args.out, args.iterations)
    trainer.preemption.grace_period = args.grace_period
    kill_iteration, phase = None, None
    if args.kill_at:
        text, phase = args.kill_at.split(':')
        kill_iteration = int(text)
        if phase != 'update':
            arm(phase, kill_iteration)

    def each_iteration(tr):
        i = tr.updater.iteration
        if phase == 'update' and i == kill_iteration:
            die()
        if i == args.sigterm_at:
            os.kill(os.getpid(), signal.SIGTERM)
        print(f'iteration {i}', flush=True)
        time.sleep(args.sleep)

    def report_start(tr):
        print(f'started at iteration {tr.updater.iteration}', flush=True)

    def hang(tr):
        print('hanging in on_preemption', flush=True)
        time.sleep(args.hang_on_preemption)

    ext = FunctionExtension(each_iteration, trigger=(1, 'iteration'), priority=1000,
                            initializer=report_start)
    if args.hang_on_preemption:
        ext.on_preemption = hang
    trainer.extend(ext, name='fault_hook')
    trainer.run()
    serialization.save_state(trainer.updater.get_all_models()['main'].state_dict(),
                             os.path.join(args.out, 'final'))
    print('done', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
