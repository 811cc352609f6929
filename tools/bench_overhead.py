"""Per-iteration overhead of trainerlib over a hand-written loop, and over its peers.

In one process, its timed threads pinned to one CPU (one torch thread, one malloc arena),
rounds in a shuffled order:

  hand / hand-none               (a) the hand loop; (a) clearing grads by p.grad = None (as
                                 trainerlib does) instead of opt.zero_grad()
  hand-item / hand-full          (b) (a) with .item() each step; (a) with eval + save
  bare / default / ... / full    (c)-(e) trainerlib: no extension; LogReport + PrintReport +
                                 ProgressBar; + snapshot every N; + Evaluator + snapshot every N
  ppe*, ignite*, lightning*      peers, minimal and logging (only if installed: pip install .[bench])
  hand-compiled, default-compiled  (a) and (d) with torch.compile (inductor; with --compile)

on an MLP 64-64-10 (batch 32) and a small CNN (1x28x28, batch 64), in-memory batches,
plain SGD. A run's time per iteration is its steady state (see _bench_clock.Clock);
each contestant runs in lockstep with a hand run, the two taking turns one iteration each (the
machine's speed drifts over seconds; runs that alternate see the same speed), and its ratio is
taken to that hand run; medians over rounds are shown.
Every contestant must end with exactly the hand loop's weights (else exit status 1).
Then (f) Path-SGD vs SGD step time and (g) SerialIterator vs DataLoader batches/s.

    python tools/bench_overhead.py [--rounds 7] [--iterations 2000] [--cnn-iterations 300]
                                   [--cpu N] [--workloads mlp cnn] [--only NAME ...]
                                   [--compile]
    python tools/bench_overhead.py --profile default     # where (d)'s extra time goes (MLP)
    python tools/bench_overhead.py --pieces --workloads mlp   # the cost of each piece, in place
    python tools/bench_overhead.py --check-sync          # no host-device sync (needs CUDA)
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import random
import statistics
import sys
import tempfile
from typing import Dict, List, Optional, Sequence

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # the _bench_* modules

import _bench_ddp  # noqa: E402
import _bench_loader  # noqa: E402
import _bench_own  # noqa: E402
import _bench_peers  # noqa: E402
import _bench_pieces  # noqa: E402
import bench_path_sgd  # noqa: E402
from _bench_clock import (events_in_window, lockstep, now, steady_process,  # noqa: E402
                          use_clock, window)
from _bench_common import (LOG_EVERY, Contestant, Run, Settings, Workload,  # noqa: E402
                           make_workload)
from _bench_profile import profile  # noqa: E402
from _bench_sync import check_sync  # noqa: E402

DESCRIPTIONS = {**_bench_own.DESCRIPTIONS, **_bench_peers.DESCRIPTIONS}
TOLERANCE = _bench_own.WEIGHT_TOLERANCE


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


def load() -> str:
    try:
        return f'{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs'
    except OSError:
        return 'unknown'


def header(args: argparse.Namespace) -> List[str]:
    versions = []
    for dist in ('pytorch-pfn-extras', 'pytorch-ignite', 'lightning'):
        try:
            versions.append(f'{dist} {importlib.metadata.version(dist)}')
        except importlib.metadata.PackageNotFoundError:
            pass
    missing = _bench_peers.missing_peers()
    return [f'device: cpu ({cpu_name()}); torch {torch.__version__}; python '
            f'{platform.python_version()}; torch threads {torch.get_num_threads()}; '
            f'{args.process}',
            f'clock: {args.clock}; rounds: {args.rounds} in shuffled order after one warm-up run '
            'of each contestant; each run in lockstep with a hand run (one iteration each in '
            'turn), ratio to that hand run; medians over rounds (hand row: hand vs hand)',
            f'peers: {", ".join(versions) or "none"}; missing: '
            f'{", ".join(missing) if missing else "none"}',
            f'load average at start: {load()} (timings on a busy machine are noise)']


def same_weights(run: Run, ref: Run) -> Optional[float]:
    """None if the weights are bit-identical, else the largest absolute difference."""
    if all(torch.equal(a, b) for a, b in zip(run.params, ref.params)):
        return None
    return max((a - b).abs().max().item() for a, b in zip(run.params, ref.params))


def too_far(name: str, result: Dict[str, object]) -> bool:
    """Whether a contestant's weights differ from the hand loop's by more than allowed
    (nothing, but rounding for the compiled ones: :data:`TOLERANCE`)."""
    return result['differ'] is not None and result['differ'] > TOLERANCE.get(name, 0.0)


def measure(w: Workload, contestants: Dict[str, Contestant], n: int, rounds: int,
            s: Settings) -> Dict[str, Dict[str, object]]:
    """Median per-iteration seconds, ratio to ``'hand'`` (median, min, max over rounds) and
    the largest weight difference from hand (None: identical).

    Each round runs every contestant, in a shuffled order, in :func:`lockstep` with a
    hand run (one iteration each in turn), and takes the ratio of the two: the speed of
    a shared machine drifts by tens of percent over seconds, and runs that alternate
    iteration by iteration see the same speed. Hand's own row pairs hand with hand:
    the resolution of the measurement.
    """
    hand = contestants['hand']
    for fn in contestants.values():
        fn(w, min(n, 200), s)
        torch.set_num_threads(1)   # in case a framework changed it
    runs: Dict[str, List[Run]] = {name: [] for name in contestants}
    ratios: Dict[str, List[float]] = {name: [] for name in contestants}
    differ: Dict[str, Optional[float]] = {name: None for name in contestants}
    order = list(contestants)
    for _ in range(rounds):
        random.shuffle(order)
        for name in order:
            ref, run = lockstep(lambda: hand(w, n, s), lambda: contestants[name](w, n, s))
            torch.set_num_threads(1)
            runs[name].append(run)
            ratios[name].append(run.per_iteration / ref.per_iteration)
            diff = same_weights(run, ref)
            if diff is not None:
                differ[name] = max(diff, differ[name] or 0.0)
    return {name: {'us': 1e6 * statistics.median(r.per_iteration for r in rs),
                   'ratio': statistics.median(ratios[name]), 'lo': min(ratios[name]),
                   'hi': max(ratios[name]), 'differ': differ[name]}
            for name, rs in runs.items()}


def table(w: Workload, n: int, s: Settings, result: Dict[str, Dict[str, object]],
          descriptions: Dict[str, str]) -> List[str]:
    first, last = window(n, s.period)
    snaps = events_in_window(n, s.period, s.snapshot_every)
    lines = [f'{w.name}: {w.title}; {n} iterations per run, timed from step {first} to {last} '
             f'with {events_in_window(n, s.period, LOG_EVERY)} log lines and {snaps} '
             f'snapshots/evaluations (every {s.snapshot_every}) inside'
             + (' -- too few iterations to time them' if snaps == 0 else ''),
             f'  {"contestant":17s} {"us/iter":>9s} {"ratio":>6s} {"(min-max)":>13s}  '
             f'{"weights":14s} what']
    for name, r in result.items():
        weights = 'reference' if name == 'hand' else (
            '== hand' if r['differ'] is None else f'~= hand {r["differ"]:.0e}'
            if not too_far(name, r) else f'DIFFER {r["differ"]:.1e}')
        lines.append(f'  {name:17s} {r["us"]:9.1f} {r["ratio"]:6.3f} '
                     f'({r["lo"]:5.3f}-{r["hi"]:5.3f})  {weights:14s} '
                     f'{descriptions.get(name, "")}')
    return lines


def parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--rounds', type=int, default=7, help='interleaved rounds (default 7)')
    parser.add_argument('--iterations', type=int, default=2000, help='MLP iterations per run')
    parser.add_argument('--cnn-iterations', type=int, default=300, help='CNN iterations per run')
    parser.add_argument('--clock', choices=['wall', 'cpu'], default='wall',
                        help="'cpu': this process's CPU time, all threads (default wall)")
    parser.add_argument('--snapshot-every', type=int, default=100,
                        help='iterations between snapshots/evaluations (default 100)')
    parser.add_argument('--cpu', type=int, metavar='N',
                        help='the CPU to pin the benchmark to (default: the last one allowed)')
    parser.add_argument('--workloads', nargs='+', choices=['mlp', 'cnn'], default=['mlp', 'cnn'])
    parser.add_argument('--only', nargs='+', metavar='NAME',
                        help='run only these contestants (hand is always run)')
    parser.add_argument('--no-peers', action='store_true', help='leave out the peer frameworks')
    parser.add_argument('--compile', action='store_true',
                        help='also run the torch.compile contestants (hand-compiled, '
                        'default-compiled; inductor, compiled once per process)')
    parser.add_argument('--path-sgd-steps', type=int, default=10,
                        help='(f) steps per round, 0 to skip (default 10)')
    parser.add_argument('--loader-batches', type=int, default=500,
                        help='(g) batches per round, 0 to skip (default 500)')
    parser.add_argument('--pieces', action='store_true',
                        help='time the hand loop plus one piece of trainerlib at a time instead '
                        'of the contestants above (see tools/_bench_pieces.py)')
    parser.add_argument('--profile', metavar='NAME',
                        help='only profile this contestant against hand on the MLP')
    parser.add_argument('--ddp', action='store_true',
                        help='only compare the default stack under DDP with a hand-written DDP '
                        'loop on 2 gloo ranks (see tools/_bench_ddp.py)')
    parser.add_argument('--check-sync', action='store_true',
                        help='only check that the default stack does not sync on CUDA')
    args = parser.parse_args(argv)
    for key in ('rounds', 'snapshot_every'):
        if getattr(args, key) < 1:
            parser.error(f'--{key.replace("_", "-")} must be >= 1')
    allowed = os.sched_getaffinity(0) if hasattr(os, 'sched_getaffinity') else None
    if args.cpu is not None and allowed is not None and args.cpu not in allowed:
        parser.error(f'--cpu {args.cpu}: this process may only use CPUs {sorted(allowed)}')
    if min(args.iterations, args.cnn_iterations) < 2:
        parser.error('--iterations and --cnn-iterations must be >= 2')
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse(argv)
    with steady_process(args.cpu) as args.process:
        return run(args)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)
    use_clock(args.clock)
    workloads = [make_workload(name) for name in args.workloads]
    if args.ddp:
        print(f'load average at start: {load()}')
        print('\n'.join(_bench_ddp.measure(args.iterations, args.rounds)))
        print(f'load average at end: {load()}')
        return 0
    if args.check_sync:
        lines = check_sync(workloads)
        print('\n'.join(lines))
        return 1 if any(': SYNC' in line or ': ERROR' in line for line in lines) else 0
    descriptions = _bench_pieces.DESCRIPTIONS if args.pieces else DESCRIPTIONS
    if args.pieces:
        contestants = _bench_pieces.piece_contestants()
    else:
        contestants = dict(_bench_own.own_contestants())
        contestants.update(_bench_own.compiled_contestants())
        if not args.no_peers:
            contestants.update(_bench_peers.peer_contestants())
    unknown = sorted(set(args.only or []) - set(contestants) | (
        {args.profile} - set(contestants) if args.profile else set()))
    if unknown:
        print(f'error: unknown contestant(s) {", ".join(unknown)}; known: '
              f'{", ".join(contestants)}', file=sys.stderr)
        return 2
    if args.only:
        contestants = {k: v for k, v in contestants.items() if k == 'hand' or k in args.only}
    elif not args.compile and not args.profile:
        contestants = {k: v for k, v in contestants.items() if k not in TOLERANCE}
    with tempfile.TemporaryDirectory(prefix='bench_overhead_') as tmp, \
            open(os.devnull, 'w') as sink:
        settings = Settings(args.snapshot_every, sink, tmp)
        if args.profile:
            w = make_workload('mlp')
            print(f'clock: {args.clock}; torch threads {torch.get_num_threads()}; load average '
                  f'{load()}')
            print('\n'.join(profile(args.profile, contestants[args.profile],
                                    contestants['hand'], w, args.iterations, settings)))
            return 0
        print('\n'.join(header(args)))
        failed = False
        for w in workloads:
            n = args.iterations if w.name == 'mlp' else args.cnn_iterations
            result = measure(w, contestants, n, args.rounds, settings)
            print('\n'.join(table(w, n, settings, result, descriptions)), flush=True)
            failed |= any(too_far(name, r) for name, r in result.items())
    if args.loader_batches:
        for w in workloads:
            rates = _bench_loader.measure(w.x, w.t, w.batch, args.loader_batches, args.rounds)
            print('\n'.join(_bench_loader.report(
                rates, f'(g) {w.name} data {tuple(w.x.shape[1:])}, batch {w.batch}, '
                f'{args.loader_batches} batches per round, shuffled')), flush=True)
    if args.path_sgd_steps:
        torch.set_flush_denormal(True)
        med = bench_path_sgd.measure(args.path_sgd_steps, args.rounds, now)
        torch.set_flush_denormal(False)
        print('(f) Path-SGD vs SGD: ' + '\n'.join(
            bench_path_sgd.report(med, args.path_sgd_steps, args.rounds)))
    print(f'load average at end: {load()}')
    if failed:
        print('error: some contestants did not end with the hand loop\'s weights',
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
