"""A 2-rank training run for the kill -9 tests of snapshot sets (launched by torchrun).

    torchrun --standalone --nproc-per-node=2 tests/dist_fault_worker.py OUT
             [--kill RANK:ITER:PHASE]

It always autoloads, so launching it again after a kill continues the run; at the end
every rank writes ``OUT/final_rank{r}`` (its parameters). ``--kill`` makes rank RANK
SIGKILL itself at one point of iteration ITER:

    update       after the update, before any extension ran (any rank)
    rank-file    rank >= 1: its rank file is renamed, the digests not yet gathered
    post-gather  rank >= 1: the digests were gathered (rank 0 is committing)
    pre-gather   rank 0: before the digests are gathered
    mid-write    rank 0: half of the main file written (a temporary file)
    pre-rename   rank 0: the main file is complete, not yet renamed (not committed)
    retention    rank 0: committed, the old sets not yet deleted
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import extensions as E  # noqa: E402
from extensions import _writer, snapshot_writers  # noqa: E402
from trainerlib import Classifier, Trainer, serialization  # noqa: E402
from trainerlib.datasets import TupleDataset  # noqa: E402
from trainerlib.distributed import commit, create_communicator  # noqa: E402
from trainerlib.extension import FunctionExtension  # noqa: E402
from trainerlib.iterators import SerialIterator  # noqa: E402
from trainerlib.updaters import StandardUpdater  # noqa: E402
from tests.fault_worker import die, write_half_and_die  # noqa: E402

ITERATIONS = 30
SNAPSHOT_EVERY = 6
LOG_EVERY = 7


def arm(phase: str, iteration: int) -> None:
    """Patch the set-writing path of this rank to SIGKILL it at ``phase``."""
    main = f'snapshot_iter_{iteration}'
    write_set = commit.write_set

    def patched_write_set(comm, trainer, path, it):
        if phase == 'pre-gather' and it == iteration:
            die()
        header = write_set(comm, trainer, path, it)
        if phase == 'post-gather' and it == iteration:
            die()
        return header
    commit.write_set = patched_write_set
    rank_write = commit.write_file

    def patched_rank_write(data, path):
        rank_write(data, path)
        if phase == 'rank-file' and os.path.basename(path).endswith(f'_iter{iteration}'):
            die()
    commit.write_file = patched_rank_write
    main_write = _writer.write_file

    def patched_main_write(data, path):
        if phase == 'mid-write' and os.path.basename(path) == main:
            write_half_and_die(data, path)
        return main_write(data, path)
    _writer.write_file = patched_main_write
    replace = os.replace

    def patched_replace(src, dst):
        if phase == 'pre-rename' and os.path.basename(dst) == main:
            die()
        return replace(src, dst)
    serialization.os.replace = patched_replace
    remove_old = snapshot_writers.Snapshot._remove_old

    def patched_remove_old(self, out, keep):
        if phase == 'retention' and keep == main:
            die()
        return remove_old(self, out, keep)
    snapshot_writers.Snapshot._remove_old = patched_remove_old


def build(comm, out: str) -> Trainer:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(50, 10, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    model = Classifier(torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(),
                                           torch.nn.Dropout(0.3), torch.nn.Linear(16, 3)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    iterator = SerialIterator(TupleDataset(x, y), 4, seed=1, comm=comm)
    trainer = Trainer(StandardUpdater(iterator, optimizer, model=model),
                      (ITERATIONS, 'iteration'), out=out, comm=comm)
    trainer.extend(E.ExponentialShift('lr', 0.97), trigger=(1, 'iteration'))
    trainer.extend(E.LogReport(trigger=(LOG_EVERY, 'iteration')))
    trainer.extend(E.snapshot(n_retains=2, autoload=True), trigger=(SNAPSHOT_EVERY, 'iteration'))
    return trainer


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument('out')
    parser.add_argument('--kill', default=None, help='RANK:ITER:PHASE')
    args = parser.parse_args()
    torch.set_num_threads(1)
    comm = create_communicator(backend='gloo')
    trainer = build(comm, args.out)
    kill_rank, kill_iteration, phase = None, None, None
    if args.kill:
        rank_text, iteration_text, phase = args.kill.split(':')
        kill_rank, kill_iteration = int(rank_text), int(iteration_text)
        if comm.rank == kill_rank and phase != 'update':
            arm(phase, kill_iteration)

    def each_iteration(tr):
        if phase == 'update' and comm.rank == kill_rank and \
                tr.updater.iteration == kill_iteration:
            die()

    def report_start(tr):
        print(f'rank {comm.rank} started at iteration {tr.updater.iteration}', flush=True)

    trainer.extend(FunctionExtension(each_iteration, trigger=(1, 'iteration'), priority=1000,
                                     initializer=report_start), name='fault_hook')
    trainer.run()
    model = trainer.updater.get_model('main')
    serialization.save_state(model.state_dict(),
                             os.path.join(args.out, f'final_rank{comm.rank}'))
    comm.finalize()
    return 0


if __name__ == '__main__':
    sys.exit(main())
