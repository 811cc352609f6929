"""Cost of Path-SGD over plain SGD per training step (CPU).

A 784-1000-1000-10 ReLU MLP, batch 128 of random data, float32. One step is
zero_grad / forward / cross-entropy / backward / optimizer.step(); Path-SGD adds
one forward + backward of the squared network at batch 1 and the division by γ.
Each round builds both models (same weights) and runs them step by step in turn, in
a random order per pair, so that the two steps of a pair see the machine at the same
speed (it drifts by tens of percent over seconds on a shared host); the ratio is the
median over all pairs of Path-SGD's step time over SGD's (target ≤ 1.3). The median
step times and the optimizer.step() alone are printed too.

    python tools/bench_path_sgd.py [--threads 2] [--steps 20] [--rounds 9]
"""
from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

from trainerlib.optimizers import PathSGD

BATCH, SIZES = 128, (784, 1000, 1000, 10)


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    layers: List[torch.nn.Module] = []
    for n_in, n_out in zip(SIZES, SIZES[1:]):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


class _Stepper:
    """One model and its optimizer, stepped on the same batch and timed."""

    def __init__(self, make_opt: Callable[[torch.nn.Module], torch.optim.Optimizer],
                 x: torch.Tensor, t: torch.Tensor, timer: Callable[[], float]) -> None:
        self.model = make_model()
        self.opt = make_opt(self.model)
        self.x, self.t, self.timer = x, t, timer

    def step(self) -> Dict[str, float]:
        """Seconds of the whole step (``'step'``) and of ``optimizer.step()`` (``'opt'``)."""
        timer = self.timer
        start = timer()
        self.opt.zero_grad()
        F.cross_entropy(self.model(self.x), self.t).backward()
        mid = timer()
        self.opt.step()
        end = timer()
        return {'step': end - start, 'opt': end - mid}


def measure(steps: int = 20, rounds: int = 9,
            timer: Callable[[], float] = time.perf_counter) -> Dict[str, Dict[str, float]]:
    """Median seconds per whole step (``'step'``) and per ``optimizer.step()`` (``'opt'``)
    of SGD and Path-SGD, and the median of their paired ratio (``['ratio']['step']``):
    ``rounds`` rounds of ``steps`` pairs of steps (after one warm-up pair per round),
    with the current ``torch.get_num_threads()``, on ``timer`` (default wall clock)."""
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(BATCH, SIZES[0], generator=g), torch.randint(0, 10, (BATCH,), generator=g)
    contestants = {'sgd': lambda m: torch.optim.SGD(m.parameters(), lr=0.01),
                   'path_sgd': lambda m: PathSGD(m, lr=0.01)}
    times: Dict[str, List[Dict[str, float]]] = {name: [] for name in contestants}
    ratios: List[float] = []
    for _ in range(rounds):
        steppers = {name: _Stepper(make, x, t, timer) for name, make in contestants.items()}
        for stepper in steppers.values():
            stepper.step()   # warm-up
        order = list(steppers)
        for _ in range(steps):
            random.shuffle(order)
            pair = {name: steppers[name].step() for name in order}
            for name, timed in pair.items():
                times[name].append(timed)
            ratios.append(pair['path_sgd']['step'] / pair['sgd']['step'])
    result = {name: {k: statistics.median(r[k] for r in runs) for k in ('step', 'opt')}
              for name, runs in times.items()}
    result['ratio'] = {'step': statistics.median(ratios)}
    return result


def report(med: Dict[str, Dict[str, float]], steps: int, rounds: int) -> List[str]:
    """The printed lines for the result of :func:`measure`."""
    lines = [f'784-1000-1000-10 MLP, batch {BATCH}, float32, {torch.get_num_threads()} '
             f'thread(s), {rounds} rounds x {steps} paired steps (medians)']
    for name in ('sgd', 'path_sgd'):
        m = med[name]
        lines.append(f'  {name:9s} step {1e3 * m["step"]:8.2f} ms   optimizer.step() '
                     f'{1e3 * m["opt"]:7.2f} ms')
    lines.append(f'  ratio path_sgd/sgd per step (median of pairs): {med["ratio"]["step"]:.3f}'
                 ' (target <= 1.3)')
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--threads', type=int, default=2, help='torch.set_num_threads')
    parser.add_argument('--steps', type=int, default=20, help='steps per round')
    parser.add_argument('--rounds', type=int, default=9, help='interleaved rounds')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    print('\n'.join(report(measure(args.steps, args.rounds), args.steps, args.rounds)))


if __name__ == '__main__':
    main()
