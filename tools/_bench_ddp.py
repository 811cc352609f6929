"""The 2-rank mode of tools/bench_overhead.py: trainerlib's default stack under DDP against a
hand-written DDP loop, on W gloo ranks of this machine.

Both contestants train the MLP workload with DDP over the same per-rank batches (rank r
takes its slice of each global batch). Collectives must match on every rank, so the two
cannot run in lockstep inside one process: each round runs a whole hand run, then a
whole trainerlib run (in an order shuffled by round, the same on every rank), and the
ratio of their steady-state times per iteration (after ``WARMUP`` iterations, on rank
0's clock) is that round's figure; the table gives the median over rounds.
"""
from __future__ import annotations

import os
import random
import socket
import statistics
import tempfile
import time
from typing import Dict, List

import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

import trainerlib.extensions as E
from _bench_common import LOG_EVERY, LR, Batches, make_workload
from trainerlib import Classifier, Trainer
from trainerlib.distributed import create_communicator
from trainerlib.iterators import DataLoaderIterator
from trainerlib.updaters import StandardUpdater

WARMUP = 200


class _Timer:
    """Time from the end of iteration ``WARMUP`` to the end of the run (hooked on the
    optimizer's step, the same point in both contestants)."""

    def __init__(self, optimizer: torch.optim.Optimizer, n: int) -> None:
        self.count, self.n, self.start = 0, n, None
        optimizer.register_step_post_hook(self._tick)

    def _tick(self, *_) -> None:
        self.count += 1
        if self.count == WARMUP:
            self.start = time.perf_counter()
        elif self.count == self.n:
            self.seconds = time.perf_counter() - self.start

    def per_iteration(self) -> float:
        return self.seconds / (self.n - WARMUP)


def _rank_batches(rank: int, size: int):
    w = make_workload('mlp')
    half = w.batch // size
    return w, [(x[rank * half:(rank + 1) * half], t[rank * half:(rank + 1) * half])
               for x, t in w.batches]


def hand_ddp(rank: int, size: int, n: int) -> float:
    """zero_grad / forward through DDP / loss / backward / step: the plain DDP loop."""
    w, batches = _rank_batches(rank, size)
    model = DistributedDataParallel(w.make_model())
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    timer = _Timer(opt, n)
    for i in range(n):
        x, t = batches[i % len(batches)]
        opt.zero_grad()
        F.cross_entropy(model(x), t).backward()
        opt.step()
    return timer.per_iteration()


def default_ddp(rank: int, size: int, n: int, comm, out: str, sink) -> float:
    """Trainer(comm=) + StandardUpdater + LogReport/PrintReport/ProgressBar every 50."""
    w, batches = _rank_batches(rank, size)
    model = w.make_model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    timer = _Timer(opt, n)
    updater = StandardUpdater(DataLoaderIterator(Batches(batches)), opt,
                              Classifier(model, accfun=None))
    trainer = Trainer(updater, (n, 'iteration'), out=out, comm=comm)
    trainer.extend(E.LogReport(trigger=(LOG_EVERY, 'iteration')))
    trainer.extend(E.PrintReport(['epoch', 'iteration', 'main/loss', 'elapsed_time'], out=sink))
    trainer.extend(E.ProgressBar(out=sink))
    trainer.run()
    return timer.per_iteration()


def _rank(rank: int, size: int, port: int, n: int, rounds: int, queue) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    comm = create_communicator(backend='gloo')
    order = random.Random(0)
    ratios: List[float] = []
    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, 'w') as sink:
        for k in range(rounds + 1):          # round 0 warms both up and is not counted
            times: Dict[str, float] = {}
            for name in order.sample(['hand', 'default'], 2):
                times[name] = hand_ddp(rank, size, n) if name == 'hand' else \
                    default_ddp(rank, size, n, comm, os.path.join(tmp, f'r{k}'), sink)
            if k:
                ratios.append(times['default'] / times['hand'])
            if rank == 0 and k:
                queue.put((times['hand'], times['default']))
    comm.finalize()
    if rank == 0:
        queue.put(ratios)


def measure(n: int, rounds: int, size: int = 2) -> List[str]:
    """The table lines of the DDP comparison on ``size`` gloo ranks."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(r, size, port, n, rounds, queue))
             for r in range(size)]
    for p in procs:
        p.start()
    runs = [queue.get(timeout=1800) for _ in range(rounds)]
    ratios = queue.get(timeout=600)
    for p in procs:
        p.join(60)
    hand = statistics.median(h for h, _ in runs) * 1e6
    default = statistics.median(d for _, d in runs) * 1e6
    med = statistics.median(ratios)
    return [f'(h) DDP on {size} gloo ranks, MLP batch 32 global ({32 // size} per rank), {n} '
            f'iterations per run, timed after {WARMUP}, {rounds} rounds (whole runs in turn)',
            f'  hand DDP loop      {hand:9.1f} us/iter',
            f'  default under DDP  {default:9.1f} us/iter  ratio {med:.3f} '
            f'({min(ratios):.3f}-{max(ratios):.3f})']
