"""``--profile NAME`` of tools/bench_overhead.py: where a contestant's extra time per iteration goes.

Runs the contestant and the hand loop under cProfile (after a warm-up) and prints
(1) the functions whose own time per iteration grew most over the hand loop's and
(2) the trainerlib / extensions functions by cumulative time per iteration. cProfile
adds roughly a microsecond per Python call, so Python-heavy code looks costlier than
it is; use the differences to find the hot spots, the timed table for the real cost.
"""
from __future__ import annotations

import cProfile
import os
import pstats
from typing import Dict, List, Tuple

from _bench_clock import now
from _bench_common import Contestant, Settings, Workload

Key = Tuple[str, int, str]
OWN = (f'{os.sep}trainerlib{os.sep}', f'{os.sep}extensions{os.sep}')


def _label(key: Key) -> str:
    path, line, name = key
    if path == '~':
        return name
    for marker in ('site-packages' + os.sep, os.sep + 'lib' + os.sep + 'python'):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        path = os.path.relpath(path)
    return f'{path}:{line}({name})'


def _profiled(fn: Contestant, w: Workload, n: int, s: Settings) -> Tuple[Dict, float]:
    profiler = cProfile.Profile(now)
    start = now()
    profiler.enable()
    fn(w, n, s)
    profiler.disable()
    return pstats.Stats(profiler).stats, now() - start


def profile(name: str, fn: Contestant, hand: Contestant, w: Workload, n: int, s: Settings,
            top: int = 15) -> List[str]:
    """Report lines comparing contestant ``name`` with the hand loop, per iteration in µs."""
    for f in (fn, hand):
        f(w, min(n, 200), s)
    stats, wall = _profiled(fn, w, n, s)
    ref, ref_wall = _profiled(hand, w, n, s)
    us = 1e6 / n
    lines = [f'cProfile of {name!r} vs hand on {w.name}, {n} iterations: '
             f'{wall * us:.1f} vs {ref_wall * us:.1f} us/iteration under the profiler',
             f'  (1) own time per iteration, largest growth over hand (top {top})',
             f'  {"us/it":>8s} {"hand":>8s} {"delta":>8s} {"calls/it":>8s}  function']
    rows = []
    for key, (_, calls, tottime, _, _) in stats.items():
        base = ref.get(key, (0, 0, 0.0, 0.0, None))[2]
        rows.append((tottime - base, tottime, base, calls, key))
    for delta, tottime, base, calls, key in sorted(rows, reverse=True)[:top]:
        lines.append(f'  {tottime * us:8.2f} {base * us:8.2f} {delta * us:8.2f} '
                     f'{calls / n:8.2f}  {_label(key)}')
    lines += [f'  (2) trainerlib/extensions functions by cumulative time per iteration '
              f'(top {top})', f'  {"cum us/it":>9s} {"own us/it":>9s} {"calls/it":>8s}  function']
    own = [(cum, tottime, calls, key) for key, (_, calls, tottime, cum, _) in stats.items()
           if any(marker in key[0] for marker in OWN)]
    for cum, tottime, calls, key in sorted(own, reverse=True)[:top]:
        lines.append(f'  {cum * us:9.2f} {tottime * us:9.2f} {calls / n:8.2f}  {_label(key)}')
    return lines
