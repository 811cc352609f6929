"""The optim_study recipe's numbers from a trajectory (steps to tolerance, oscillation) and
its figure (trajectories over the Rosenbrock contours; distance to the minimum per step)."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from trainerlib.extensions.plot_report import new_figure, require_matplotlib, save_png
from trainerlib.recipes._optim_study_core import LABELS

OSCILLATION_TEXT = (
    'across-valley backtracking: the valley floor of the Rosenbrock function is y = x^2 and '
    'r = y - x^2 is the coordinate across it (f = (a - x)^2 + b r^2); over the first '
    '`oscillation_window` steps, backtrack = sum_k |r_(k+1) - r_k| - |r_W - r_0|, the '
    'distance travelled across the valley that was travelled back (0 for a path that '
    'descends into the valley without turning back). floor_crossings: steps in that window '
    'where r changes sign. backtrack_all_steps: the same over the whole run.')
COLORS = {'sgd': 'tab:red', 'momentum_sgd': 'tab:orange', 'rmsprop': 'tab:green',
          'adam': 'tab:blue', 'newton': 'black', 'lbfgs': 'tab:purple'}


def backtrack(r: np.ndarray) -> float:
    """Total variation of ``r`` minus its net change (0 for a monotone sequence)."""
    if len(r) < 2:
        return 0.0
    return float(np.abs(np.diff(r)).sum() - abs(r[-1] - r[0]))


def path_numbers(path: np.ndarray, minimum: Sequence[float], tolerance: float,
                 window: int) -> Dict[str, Any]:
    """Numbers of one path (``(steps + 1, 2)``: the start, then the point after each step).

    ``steps_to_tolerance``: the first step after which the distance to the minimum is
    below ``tolerance`` (None: never); ``within_tolerance_from``: the step from which it
    stays below (None: it ends outside); the oscillation measures (see
    :data:`OSCILLATION_TEXT`) over the first ``window`` steps and over all steps.
    Non-finite points (a diverged run) end the path.
    """
    with np.errstate(all='ignore'):   # a diverged path overflows: inf/NaN numbers (null)
        return _path_numbers(path, minimum, tolerance, window)


def _path_numbers(path: np.ndarray, minimum: Sequence[float], tolerance: float,
                  window: int) -> Dict[str, Any]:
    finite = np.isfinite(path).all(axis=1)
    end = len(path) if finite.all() else int(np.argmin(finite))
    path = path[:end]
    distance = np.linalg.norm(path - np.asarray(minimum, dtype=path.dtype), axis=1)
    inside = distance < tolerance
    first = int(np.argmax(inside)) if inside.any() else None
    outside = np.flatnonzero(~inside)
    stays = None if not inside.any() or not inside[-1] else (
        int(outside[-1]) + 1 if len(outside) else 0)
    r = path[:, 1] - path[:, 0] ** 2
    early = r[:window + 1]
    crossings = int((np.sign(early[1:]) * np.sign(early[:-1]) < 0).sum())
    return {
        'steps_to_tolerance': first, 'within_tolerance_from': stays,
        'final_distance': float(distance[-1]) if finite.all() else math.nan,
        'min_distance': float(distance.min()),
        'final_point': path[-1].tolist() if finite.all() else None,
        'oscillation': {'window': min(window, len(path) - 1),
                        'backtrack': backtrack(early), 'floor_crossings': crossings,
                        'backtrack_all_steps': backtrack(r)},
    }


def _box(paths: Dict[str, np.ndarray]) -> List[float]:
    """The seed's plot box (x in [-2, 2], y in [-1, 3]), grown to hold every finite point
    (within [-10, 10] x [-10, 20])."""
    lo, hi = np.array([-2.0, -1.0]), np.array([2.0, 3.0])
    for path in paths.values():
        finite = path[np.isfinite(path).all(axis=1)]
        if len(finite):
            lo = np.minimum(lo, finite.min(0) - 0.1)
            hi = np.maximum(hi, finite.max(0) + 0.1)
    lo, hi = np.maximum(lo, [-10.0, -10.0]), np.minimum(hi, [10.0, 20.0])
    return [lo[0], hi[0], lo[1], hi[1]]


def plot_paths(paths: Dict[str, np.ndarray], a: float, b: float, tolerance: float,
               title: str, path: str) -> None:
    """Two panels written to ``path`` (PNG, atomically).

    Left: every method's path over the contours of f (20 log-spaced levels from 1e-4 to
    1e4, as the seed's figure), the start (square) and the minimum (star). Right: the
    distance to the minimum against the step (log-log; the tolerance dashed).
    """
    require_matplotlib('optim_study')
    from matplotlib.colors import LogNorm
    figure = new_figure(figsize=(14, 6))
    ax, dist_ax = figure.subplots(1, 2)
    x0, x1, y0, y1 = _box(paths)
    xs, ys = np.meshgrid(np.linspace(x0, x1, 300), np.linspace(y0, y1, 300))
    f = (a - xs) ** 2 + b * (ys - xs ** 2) ** 2
    levels = np.logspace(-4, 4, 20)
    filled = ax.contourf(xs, ys, np.clip(f, 1e-4, 1e4), levels=levels, norm=LogNorm(),
                         cmap='viridis', alpha=0.85)
    ax.contour(xs, ys, f, levels=levels, colors='white', linewidths=0.4)
    figure.colorbar(filled, ax=ax, ticks=np.logspace(-4, 4, 9), label='f(x, y)')
    minimum = (a, a * a)
    for method, points in paths.items():
        finite = points[np.isfinite(points).all(axis=1)]
        few = len(finite) <= 300   # Newton, L-BFGS: a marker per step
        ax.plot(finite[:, 0], finite[:, 1], color=COLORS.get(method, 'gray'),
                linewidth=1.0 if few else 1.6, marker='o' if few else None, markersize=2.5,
                zorder=3 if few else 2, label=LABELS.get(method, method))
        with np.errstate(all='ignore'):   # a diverged path's last points overflow
            distance = np.linalg.norm(finite - np.asarray(minimum), axis=1)
        steps = np.arange(len(distance))
        dist_ax.plot(steps[1:], np.maximum(distance[1:], 1e-17),
                     color=COLORS.get(method, 'gray'), label=LABELS.get(method, method))
    if paths:
        start = next(iter(paths.values()))[0]
        ax.plot([start[0]], [start[1]], 's', color='white', markeredgecolor='black',
                markersize=8, zorder=5, label='start')
    ax.plot([minimum[0]], [minimum[1]], '*', color='gold', markeredgecolor='black',
            markersize=14, zorder=5, label=f'minimum ({minimum[0]:g}, {minimum[1]:g})')
    ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel='x', ylabel='y', title=title)
    ax.legend(fontsize='small', loc='lower left')
    dist_ax.axhline(tolerance, color='gray', linestyle='--', linewidth=1,
                    label=f'tolerance {tolerance:g}')
    dist_ax.set(xscale='log', yscale='log', xlabel='step', ylabel='distance to the minimum',
                title='Convergence')
    dist_ax.grid(True, which='both', alpha=0.3)
    dist_ax.legend(fontsize='small')
    figure.tight_layout()
    save_png(figure, path, dpi=100)


def table(methods: Dict[str, Dict[str, Any]]) -> str:
    """A text table of the headline numbers, one row per method."""
    def show(value: Optional[float], fmt: str) -> str:
        return '-' if value is None or (isinstance(value, float) and math.isnan(value)) \
            else format(value, fmt)
    lines = [f"{'method':<14}{'steps':>7}{'evals':>7}{'to tol':>9}{'stays':>7}"
             f"{'final dist':>12}{'backtrack':>11}{'crossings':>11}{'backtrack all':>15}"]
    for name, m in methods.items():
        osc = m['oscillation']
        lines.append(f"{LABELS.get(name, name):<14}{m['steps']:>7}{m['function_evaluations']:>7}"
                     f"{show(m['steps_to_tolerance'], 'd'):>9}"
                     f"{show(m['within_tolerance_from'], 'd'):>7}"
                     f"{show(m['final_distance'], '.3g'):>12}{osc['backtrack']:>11.4f}"
                     f"{osc['floor_crossings']:>11}{osc['backtrack_all_steps']:>15.4f}")
    return '\n'.join(lines)
