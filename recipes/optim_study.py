"""SGD, Momentum-SGD, RMSprop, Adam, Newton and L-BFGS on the Rosenbrock function (seed 004 §10).

The seed computes gradients and Hessians by autograd, runs Newton's method on
f(x, y) = (a - x)^2 + b (y - x^2)^2 (a = 1, b = 100) from (-1, 1.5) with half steps,
compares four torch optimizers at lr 2e-3 on the same problem ("SGD oscillates across the
valley early on, Momentum a little less, RMSprop and Adam follow the valley"), and asks
to compare Newton with gradient descent and a quasi-Newton method. Here every method is a
Trainer run (:mod:`recipes._optim_study_core`: an updater doing one optimizer step on the
point per iteration, over a data-free iterator), with trainerlib's Newton optimizer and
torch's L-BFGS (one L-BFGS iteration with a strong-Wolfe line search per step)::

    python -m recipes.optim_study --out result/optim_study
    python -m recipes.optim_study --set newton.damping=1 --set start=[-1.5,2] --out r2
    python -m recipes.optim_study --out result/optim_study --resume   # continue / re-report

Writes ``out/<method>/`` per method (``log``: loss, x, y and distance to the minimum,
``snapshot_iter_*``), ``out/optim_study.png`` (the paths over the contours of f; the
distance to the minimum per step) and ``out/summary.json`` (per method: the steps to reach
the tolerance, the final distance, the oscillation measures, evaluations of f).
"""
from __future__ import annotations

import math
import sys
from typing import Any, Dict, List, Optional

import numpy as np
import torch

import trainerlib.extensions as E
from trainerlib.recipes import _optim_study_report as report
from trainerlib.recipes._optim_study_core import (FIRST_ORDER, LABELS, METHODS, FullBatchIterator,
                                                  PointUpdater, RosenbrockPoint, Trajectory,
                                                  budget_of, function_evaluations, make_optimizer)
from trainerlib.recipes.launcher import Context, launch, torch_threads
from trainerlib import Trainer, triggers
from trainerlib.config import Choice
from trainerlib.errors import ConfigError, NonFiniteError
from trainerlib.optimizers import NewtonStepError

NAME = 'optim_study'
DEFAULTS: Dict[str, Any] = {
    'device': 'cpu',
    'threads': 1,           # torch CPU threads (0: torch's default); a 2-D problem needs one
    'dtype': Choice('float64', 'float32'),   # float64: the seed's numpy start point
    'function': {'a': 1.0, 'b': 100.0},      # f = (a - x)^2 + b (y - x^2)^2, min at (a, a^2)
    'start': [-1.0, 1.5],                    # the seed's initial_x
    'methods': list(METHODS),
    'lr': {'sgd': 0.002, 'momentum_sgd': 0.002, 'rmsprop': 0.002, 'adam': 0.002,
           'newton': 0.5, 'lbfgs': 1.0},
    'momentum': 0.9,        # momentum_sgd
    'newton': {'damping': 0.0, 'fallback': Choice('gradient', 'raise'),
               'require_descent': False},
    'lbfgs': {'history_size': 10, 'max_eval': 25,
              'line_search': Choice('strong_wolfe', 'none')},
    'budget': {
        'first_order': {'steps': 20000, 'log_every': 100, 'snapshot_every': 5000},
        'newton': {'steps': 100, 'log_every': 1, 'snapshot_every': 50},
        'lbfgs': {'steps': 100, 'log_every': 1, 'snapshot_every': 50},
    },
    'tolerance': 0.001,     # "reached": distance to the minimum below this
    'oscillation_window': 1000,   # steps over which the oscillation is measured
}
# What a resumed study may change (every other setting must equal the saved config: the
# methods are compared with each other); methods may be added, budgets extended.
RESUME_MAY_CHANGE = ('device', 'threads', 'methods', 'budget', 'tolerance',
                     'oscillation_window')


def check_values(cfg: Dict[str, Any]) -> None:
    """Range checks the schema cannot express."""
    def need(ok: bool, key: str, what: str, value: Any) -> None:
        if not ok:
            raise ConfigError(f'config key {key!r} must be {what}, got {value!r}')

    def finite(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    need(cfg['threads'] >= 0, 'threads', 'an integer >= 0 (0: torch default)', cfg['threads'])
    need(len(cfg['start']) == 2 and all(finite(v) for v in cfg['start']), 'start',
         'a list of two finite numbers [x, y]', cfg['start'])
    chosen = cfg['methods']
    need(bool(chosen) and all(m in METHODS for m in chosen) and len(set(chosen)) == len(chosen),
         'methods', f'a non-empty list of distinct methods from {", ".join(METHODS)}', chosen)
    for key, lr in cfg['lr'].items():
        need(lr > 0, f'lr.{key}', '> 0 (a step size)', lr)
    need(cfg['function']['b'] > 0, 'function.b', '> 0 (the valley)', cfg['function']['b'])
    need(0 <= cfg['momentum'] < 1, 'momentum', 'in [0, 1)', cfg['momentum'])
    need(cfg['newton']['damping'] >= 0, 'newton.damping', '>= 0', cfg['newton']['damping'])
    for key in ('history_size', 'max_eval'):
        need(cfg['lbfgs'][key] >= 1, f'lbfgs.{key}', 'an integer >= 1', cfg['lbfgs'][key])
    for section, budget in cfg['budget'].items():
        for key, value in budget.items():
            need(value >= 1, f'budget.{section}.{key}', 'an integer >= 1', value)
    need(cfg['tolerance'] > 0, 'tolerance', '> 0', cfg['tolerance'])
    need(cfg['oscillation_window'] >= 1, 'oscillation_window', 'an integer >= 1',
         cfg['oscillation_window'])


def _every(k: int, steps: int) -> triggers.ManualScheduleTrigger:
    """Every ``k`` iterations and at the last one."""
    return triggers.ManualScheduleTrigger(sorted(set(range(k, steps + 1, k)) | {steps}),
                                          'iteration')


def run_method(method: str, cfg: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    """One Trainer run in ``out/<method>/``; its numbers and path (``(steps + 1, 2)``)."""
    f = cfg['function']
    model = RosenbrockPoint(cfg['start'], f['a'], f['b'], getattr(torch, cfg['dtype']))
    model.to(ctx.device)
    optimizer = make_optimizer(method, model, cfg)
    updater = PointUpdater(FullBatchIterator(), optimizer, model)
    budget = cfg['budget'][budget_of(method)]
    steps = budget['steps']
    trainer = Trainer(updater, (steps, 'iteration'), out=ctx.path(method))
    trainer.extend(E.FailOnNonNumber())
    trajectory = Trajectory(model)
    trainer.extend(trajectory)
    trainer.extend(E.LogReport(trigger=_every(budget['log_every'], steps)))
    trainer.extend(E.snapshot(n_retains=2, autoload=ctx.resume),
                   trigger=_every(budget['snapshot_every'], steps))
    shown = max(budget['log_every'], steps // 10)   # about ten printed rows
    trainer.extend(E.PrintReport(['iteration', 'main/loss', 'main/x', 'main/y',
                                  'main/distance', 'elapsed_time'],
                                 log_report=E.LogReport(trigger=_every(shown, steps),
                                                        filename=None),
                                 out=sys.stdout))
    status, error = 'finished', None
    try:
        trainer.run()
    except (NonFiniteError, NewtonStepError) as e:
        status, error = ('diverged' if isinstance(e, NonFiniteError) else 'stopped'), str(e)
        print(f'{method}: {status} at iteration {updater.iteration}: {error}')
    start = torch.tensor([cfg['start']], dtype=torch.float64)
    path = torch.cat([start, trajectory.points().cpu().double()]).numpy()
    numbers = report.path_numbers(path, (f['a'], f['a'] ** 2), cfg['tolerance'],
                                  cfg['oscillation_window'])
    with torch.no_grad():
        final_loss = float(model().item())
    result = {'method': method, 'label': LABELS[method], 'optimizer': type(optimizer).__name__,
              'lr': cfg['lr'][method], 'status': status, 'error': error,
              'steps': updater.iteration,
              'function_evaluations': function_evaluations(method, optimizer, updater.iteration),
              **numbers, 'final_loss': final_loss, 'elapsed_time': trainer.elapsed_time}
    if method == 'newton':
        result['newton'] = {'non_descent_steps': optimizer.non_descent,
                            'fallback_steps': optimizer.fallbacks}
    return {'result': result, 'path': path}


def verdict(methods: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """Whether SGD backtracks across the valley most among the first-order methods, and
    which method reached the tolerance in the fewest steps."""
    out: Dict[str, Any] = {}
    others = [m for m in FIRST_ORDER[1:] if m in methods]
    if 'sgd' in methods and others:
        sgd = methods['sgd']['oscillation']['backtrack']
        out['sgd_backtracks_most'] = all(sgd > methods[m]['oscillation']['backtrack']
                                         for m in others)
    reached = {m: r['steps_to_tolerance'] for m, r in methods.items()
               if r['steps_to_tolerance'] is not None}
    out['fewest_steps'] = min(reached, key=reached.get) if reached else None
    out['never_reached'] = [m for m in methods if m not in reached]
    return out


def run(cfg: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    """Run every method, plot the paths, return the summary (``cfg['threads']`` threads)."""
    with torch_threads(cfg['threads']):
        return _run(cfg, ctx)


def _run(cfg: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    f, start = cfg['function'], cfg['start']
    print(f"Rosenbrock f = ({f['a']:g} - x)^2 + {f['b']:g} (y - x^2)^2 from ({start[0]:g}, "
          f"{start[1]:g}); minimum ({f['a']:g}, {f['a'] ** 2:g}); {cfg['dtype']}, "
          f'device {ctx.device}')
    methods: Dict[str, Dict[str, Any]] = {}
    paths: Dict[str, np.ndarray] = {}
    for method in cfg['methods']:
        steps = cfg['budget'][budget_of(method)]['steps']
        print(f"== {LABELS[method]} (lr {cfg['lr'][method]:g}), {steps} steps ==")
        done = run_method(method, cfg, ctx)
        methods[method], paths[method] = done['result'], done['path']
    plot_path = ctx.path('optim_study.png')
    first = [cfg['lr'][m] for m in cfg['methods'] if m in FIRST_ORDER]
    title = (f"Rosenbrock (a={f['a']:g}, b={f['b']:g}) from ({start[0]:g}, {start[1]:g})"
             + (f"; first-order lr {', '.join(sorted({f'{lr:g}' for lr in first}))}"
                if first else ''))
    report.plot_paths(paths, f['a'], f['b'], cfg['tolerance'], title, plot_path)
    result = verdict(methods)
    print()
    print(report.table(methods))
    print(f"tolerance {cfg['tolerance']:g}; oscillation = across-valley backtracking in the "
          f"first {cfg['oscillation_window']} steps; fewest steps: {result['fewest_steps']}; "
          f'plot -> {plot_path}')
    return {'function': {'a': f['a'], 'b': f['b'], 'minimum': [f['a'], f['a'] ** 2]},
            'start': list(start), 'dtype': cfg['dtype'], 'tolerance': cfg['tolerance'],
            'oscillation_definition': report.OSCILLATION_TEXT, 'verdict': result,
            'methods': methods}


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    return launch(sys.modules[__name__], argv)


if __name__ == '__main__':
    sys.exit(main())
