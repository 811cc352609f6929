"""Per-iteration overhead of trainerlib over a hand-written loop (first version).

Runs, in one process and interleaved shuffled rounds, on a tiny MLP (64-64-10,
batch 32, in-memory tensors, one thread):

  hand      zero_grad / forward / loss / backward / step, no per-step .item()
  bare      Trainer + StandardUpdater + SerialIterator (shuffle=False)
  default   bare + LogReport + PrintReport + ProgressBar (printing to a null sink)

and prints the median time per iteration and the ratio to ``hand``. Every
contestant must end with the same weights as the hand loop (checked).

    python tools/bench_overhead.py [--iterations 2000] [--rounds 7]
"""
from __future__ import annotations

import argparse
import io
import random
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

import extensions as E
from trainerlib import Trainer
from trainerlib.iterators import SerialIterator
from trainerlib.updaters import StandardUpdater

BATCH, N_BATCHES = 32, 50


def make_data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(BATCH * N_BATCHES, 64, generator=g), \
        torch.randint(0, 10, (BATCH * N_BATCHES,), generator=g)


def make_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def hand(iterations, x, t, out):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    batches = [(x[i * BATCH:(i + 1) * BATCH], t[i * BATCH:(i + 1) * BATCH])
               for i in range(N_BATCHES)]
    start = time.perf_counter()
    for i in range(iterations):
        xb, tb = batches[i % N_BATCHES]
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), tb)
        loss.backward()
        opt.step()
    return time.perf_counter() - start, model


def trainerlib_run(iterations, x, t, out, stack):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    dataset = torch.utils.data.TensorDataset(x, t)
    updater = StandardUpdater(SerialIterator(dataset, BATCH, shuffle=False), opt, model,
                              loss_func=lambda xb, tb: F.cross_entropy(model(xb), tb))
    trainer = Trainer(updater, (iterations, 'iteration'), out=out)
    if stack:
        sink = io.StringIO()
        trainer.extend(E.LogReport(trigger=(N_BATCHES, 'iteration')))
        trainer.extend(E.PrintReport(['epoch', 'iteration', 'elapsed_time'], out=sink))
        trainer.extend(E.ProgressBar(out=sink))
    start = time.perf_counter()
    trainer.run()
    return time.perf_counter() - start, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--iterations', type=int, default=2000)
    parser.add_argument('--rounds', type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x, t = make_data()
    out = tempfile.mkdtemp(prefix='bench_overhead_')
    contestants = {
        'hand': hand,
        'bare': lambda n, x, t, o: trainerlib_run(n, x, t, o, False),
        'default': lambda n, x, t, o: trainerlib_run(n, x, t, o, True),
    }
    for run in contestants.values():      # warm-up
        run(200, x, t, out)
    _, reference = hand(args.iterations, x, t, out)
    times = {name: [] for name in contestants}
    ratios = {name: [] for name in contestants}
    for _ in range(args.rounds):
        order = list(contestants)
        random.shuffle(order)
        this_round = {}
        for name in order:
            seconds, model = contestants[name](args.iterations, x, t, out)
            for a, b in zip(model.parameters(), reference.parameters()):
                if not torch.equal(a, b):
                    raise SystemExit(f'{name} did not end with the hand loop\'s weights')
            this_round[name] = seconds / args.iterations
            times[name].append(this_round[name])
        for name in contestants:
            ratios[name].append(this_round[name] / this_round['hand'])
    print(f'{"contestant":<10} {"us/iter":>9} {"ratio":>7}   (median of {args.rounds} rounds, '
          f'{args.iterations} iterations each, ratios paired per round)')
    for name in contestants:
        print(f'{name:<10} {statistics.median(times[name]) * 1e6:9.1f} '
              f'{statistics.median(ratios[name]):7.3f}')


if __name__ == '__main__':
    main()
