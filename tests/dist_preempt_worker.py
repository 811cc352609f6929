"""A small data-parallel training run for the preemption tests (run under torchrun).

    torchrun --standalone --nproc-per-node=2 tests/dist_preempt_worker.py OUT
        [--iterations N] [--check-every K] [--reached N] [--fail-at ITER --fail-rank R]
        [--snapshot-every S] [--snapshot-on-error] [--autoload] [--hold]
        [--die-at ITER --fail-rank R]

Each rank writes ``OUT/rank{r}.pid`` (its pid) at the start, ``OUT/rank{r}.reached``
once iteration ``--reached`` is done (so a test can wait for that state, then signal),
and at the end ``OUT/rank{r}.json``: ``{"rank", "status"`` ('done', 'preempted' or
'error'), ``"iteration"``, ``"exit"`` (the status it exits with), ``"checks"`` (control
all-reduces), ``"last_check"``, ``"every"``}. ``--fail-at`` raises in the update of
iteration ITER on rank R. ``--hold``: after writing ``reached``, each rank waits (at
most 120 s) for the file ``OUT/go``, so a test can signal a rank at a known iteration.
``--die-at``: rank R SIGKILLs itself after iteration ITER in torchrun's first attempt
only (``TORCHELASTIC_RESTART_COUNT`` 0), for ``--max-restarts``. ``--autoload``: resume
from the newest snapshot; at the end each rank writes ``OUT/final_rank{r}`` (its
parameters).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import extensions as E  # noqa: E402
from trainerlib import Classifier, Trainer, serialization  # noqa: E402
from trainerlib.datasets import TupleDataset  # noqa: E402
from trainerlib.distributed import create_communicator  # noqa: E402
from trainerlib.extension import FunctionExtension  # noqa: E402
from trainerlib.iterators import SerialIterator  # noqa: E402
from trainerlib.preemption import Preempted, Preemption  # noqa: E402
from trainerlib.updaters import StandardUpdater  # noqa: E402


class FailingUpdater(StandardUpdater):
    fail_at = None

    def update_core(self) -> None:
        if self.iteration + 1 == self.fail_at:
            raise RuntimeError(f'injected failure in the update of iteration {self.fail_at}')
        super().update_core()


def write_json(path: str, value) -> None:
    with open(path + '.tmp', 'w') as f:
        json.dump(value, f)
    os.replace(path + '.tmp', path)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument('out')
    parser.add_argument('--iterations', type=int, default=10 ** 7)
    parser.add_argument('--check-every', type=int, default=None)
    parser.add_argument('--reached', type=int, default=10)
    parser.add_argument('--fail-at', type=int, default=None)
    parser.add_argument('--fail-rank', type=int, default=1)
    parser.add_argument('--snapshot-every', type=int, default=10 ** 6)
    parser.add_argument('--snapshot-on-error', action='store_true')
    parser.add_argument('--autoload', action='store_true')
    parser.add_argument('--hold', action='store_true')
    parser.add_argument('--die-at', type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    comm = create_communicator(backend='gloo')
    rank = comm.rank
    os.makedirs(args.out, exist_ok=True)
    mine = lambda suffix: os.path.join(args.out, f'rank{rank}.{suffix}')  # noqa: E731
    write_json(mine('pid'), os.getpid())

    torch.manual_seed(0)
    x = torch.randn(64, 6)
    t = (x[:, 0] > 0).long()
    model = Classifier(torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(),
                                           torch.nn.Dropout(0.2), torch.nn.Linear(8, 2)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    updater = FailingUpdater(SerialIterator(TupleDataset(x, t), 4, seed=1, comm=comm),
                             optimizer, model=model)
    if rank == args.fail_rank:
        updater.fail_at = args.fail_at
    trainer = Trainer(updater, (args.iterations, 'iteration'), out=args.out, comm=comm)
    trainer.preemption = Preemption(check_every=args.check_every)
    trainer.extend(E.LogReport(trigger=(10, 'iteration')))
    trainer.extend(E.snapshot(snapshot_on_error=args.snapshot_on_error, autoload=args.autoload),
                   trigger=(args.snapshot_every, 'iteration'))

    def reached(tr):
        write_json(mine('reached'), tr.updater.iteration)
        deadline = time.monotonic() + 120
        while args.hold and not os.path.exists(os.path.join(args.out, 'go')):
            if time.monotonic() > deadline:
                raise RuntimeError('--hold: no OUT/go file within 120 s')
            time.sleep(0.02)
    trainer.extend(FunctionExtension(reached, trigger=(args.reached, 'iteration')),
                   name='reached')

    first_attempt = os.environ.get('TORCHELASTIC_RESTART_COUNT', '0') == '0'
    if args.die_at is not None and rank == args.fail_rank and first_attempt:
        def die(tr):
            if tr.updater.iteration == args.die_at:
                os.kill(os.getpid(), signal.SIGKILL)
        trainer.extend(FunctionExtension(die, trigger=(1, 'iteration'), priority=1000),
                       name='die')

    record = {'rank': rank, 'world_size': comm.size}

    def finish(status, code):
        control = getattr(trainer, '_control', None)
        record.update(status=status, exit=code, iteration=trainer.updater.iteration,
                      checks=control.checks if control else 0,
                      last_check=control.last if control else None,
                      every=control.every if control else None)
        write_json(mine('json'), record)
    try:
        trainer.run()
    except Preempted as e:
        finish('preempted', e.code)
        raise
    except BaseException:
        traceback.print_exc()
        finish('error', 1)
        return 1
    finish('done', 0)
    if args.autoload:
        serialization.save_state(model.state_dict(), os.path.join(args.out, f'final_rank{rank}'))
    comm.finalize()
    return 0


if __name__ == '__main__':
    sys.exit(main())
