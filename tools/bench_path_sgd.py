"""Cost of Path-SGD over plain SGD per training step (CPU).

A 784-1000-1000-10 ReLU MLP, batch 128 of random data, float32. One step is
zero_grad / forward / cross-entropy / backward / optimizer.step(); Path-SGD adds
one forward + backward of the squared network at batch 1 and the division by γ.
SGD and Path-SGD alternate in shuffled rounds; the median time per step of each
and their ratio (target ≤ 1.3) are printed, plus the optimizer.step() alone.

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


def timed_steps(make_opt: Callable[[torch.nn.Module], torch.optim.Optimizer],
                x: torch.Tensor, t: torch.Tensor, steps: int,
                timer: Callable[[], float] = time.perf_counter) -> Dict[str, float]:
    """Seconds per whole step and per ``optimizer.step()`` (medians over ``steps``)."""
    model = make_model()
    opt = make_opt(model)
    whole, step_only = [], []
    for _ in range(steps + 1):   # the first step warms up and is dropped
        start = timer()
        opt.zero_grad()
        F.cross_entropy(model(x), t).backward()
        mid = timer()
        opt.step()
        end = timer()
        whole.append(end - start)
        step_only.append(end - mid)
    return {'step': statistics.median(whole[1:]), 'opt': statistics.median(step_only[1:])}


def measure(steps: int = 20, rounds: int = 9,
            timer: Callable[[], float] = time.perf_counter) -> Dict[str, Dict[str, float]]:
    """Median seconds per whole step (``'step'``) and per ``optimizer.step()`` (``'opt'``)
    of SGD and Path-SGD, alternating in ``rounds`` shuffled rounds of ``steps`` steps,
    with the current ``torch.get_num_threads()``, on ``timer`` (default wall clock)."""
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(BATCH, SIZES[0], generator=g), torch.randint(0, 10, (BATCH,), generator=g)
    contestants = {'sgd': lambda m: torch.optim.SGD(m.parameters(), lr=0.01),
                   'path_sgd': lambda m: PathSGD(m, lr=0.01)}
    results: Dict[str, List[Dict[str, float]]] = {name: [] for name in contestants}
    order = list(contestants)
    for _ in range(rounds):
        random.shuffle(order)
        for name in order:
            results[name].append(timed_steps(contestants[name], x, t, steps, timer))
    return {name: {k: statistics.median(r[k] for r in runs) for k in ('step', 'opt')}
            for name, runs in results.items()}


def report(med: Dict[str, Dict[str, float]], steps: int, rounds: int) -> List[str]:
    """The printed lines for the result of :func:`measure`."""
    lines = [f'784-1000-1000-10 MLP, batch {BATCH}, float32, {torch.get_num_threads()} '
             f'thread(s), {rounds} rounds x {steps} steps (median)']
    for name, m in med.items():
        lines.append(f'  {name:9s} step {1e3 * m["step"]:8.2f} ms   optimizer.step() '
                     f'{1e3 * m["opt"]:7.2f} ms')
    lines.append(f'  ratio path_sgd/sgd per step: {med["path_sgd"]["step"] / med["sgd"]["step"]:.3f}'
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
