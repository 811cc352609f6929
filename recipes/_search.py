"""``--search N``: an Optuna search over settings declared in the recipe's YAML::

    python -m recipes.classify --search 8 --config recipes/configs/classify_search.yaml --out DIR

The ``--config`` file holds the base settings of every trial and a ``search:`` section
(``objective``, ``direction``, ``startup_trials``, ``prune``, ``params``: see
``recipes/configs/classify_search.yaml``, which documents each); ``params`` maps config
keys to ``{low: L, high: H[, log: true]}`` (a float), ``{int: [LO, HI][, log: true]}`` or
``{choices: [...]}``, checked as those settings are.

Each trial is a normal run in ``DIR/trial_NNN/`` (``config.yaml``, logs, ``summary.json``
with ``"pruned"``, the recipe's output in ``output.txt``). The study (named after the
recipe) is ``DIR/optuna.db``: the same command again continues it until N trials finished
(complete or pruned); a trial interrupted by a kill or a signal is marked failed and its
parameters run again as a new trial. The trial after k finished ones is sampled by
``TPESampler(seed=seed + k)``, so a continued search samples what an uninterrupted one
would. At the end: ``DIR/best/config.yaml`` (the best complete trial's config;
``--config`` repeats it exactly) and ``DIR/search_summary.json``.
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import math
import os
import reprlib
import time
from types import ModuleType
from typing import Any, Dict, List, Tuple

import torch
import yaml

from trainerlib.extensions.optuna_pruning import OptunaPruning, import_optuna
from trainerlib.recipes._resume import previous_run
from trainerlib.recipes.launcher import (SEARCH_FILE, Context, check_seeds, flat_keys, overrides_of,
                                         resolve_device, schema_of, write_json)
from trainerlib.config import Choice, Nullable, load_config, save_config
from trainerlib.errors import ConfigError, OutputDirError

SEARCH_SCHEMA: Dict[str, Any] = {
    'objective': '', 'direction': Choice('maximize', 'minimize'), 'startup_trials': 4,
    'prune': {'key': Nullable(str), 'trainer': Nullable(str), 'startup_trials': 2,
              'warmup_epochs': 1},
    'params': None,   # checked by check_params
}
FORMS = '{low: L, high: H[, log: true]}, {int: [LO, HI][, log: true]} or {choices: [...]}'
FIELDS = {'low': {'low', 'high', 'log'}, 'int': {'int', 'log'}, 'choices': {'choices'}}


def _flat(obj: Any, prefix: str = '') -> Dict[str, Any]:
    if not isinstance(obj, dict) or not obj:
        return {prefix[:-1]: obj}
    return {k: v for key, value in obj.items() for k, v in _flat(value, f'{prefix}{key}.').items()}


def _get(tree: Dict[str, Any], key: str) -> Any:
    return functools.reduce(lambda d, k: d[k], key.split('.'), tree)


def _short(value: Any) -> str:
    return f'{value:.4g}' if isinstance(value, float) else str(value)


def with_params(recipe: ModuleType, base: Dict[str, Any], params: Dict[str, Any]) -> Dict:
    """``base`` with ``params`` (dotted keys) set, checked as settings and by the recipe."""
    values = {k: _get(base, k) for k in flat_keys(recipe.DEFAULTS)}
    items = [f'{k}={yaml.safe_dump(v, default_flow_style=True, width=2 ** 20)}'
             for k, v in {**values, **params}.items()]   # YAML text, read back exactly
    try:
        cfg = load_config(None, schema_of(recipe), items)
        check_seeds(cfg)
        getattr(recipe, 'check_values', lambda c: None)(cfg)
        resolve_device(cfg.get('device', 'cpu'))
    except ConfigError as e:   # name the setting, not the made-up --set
        raise ConfigError(functools.reduce(lambda m, i: m.replace(f' (from --set {i})', ''),
                                           items, str(e))) from None
    return cfg


def _values(key: str, spec: Any, form: Any, bad: str) -> List[Any]:
    """The values ``form`` can give (a range: its ends); a ConfigError if it is malformed."""
    kinds = [k for k in FIELDS if isinstance(form, dict) and k in form]
    if len(kinds) != 1 or set(form) - FIELDS[kinds[0]]:
        raise ConfigError(f'{bad} must be {FORMS}; got {reprlib.repr(form)}')
    kind = kinds[0]
    values = form['choices'] if kind == 'choices' else form['int'] if kind == 'int' \
        else [form['low'], form.get('high')]
    if kind == 'choices':
        if not isinstance(values, list) or not values or not all(
                isinstance(v, (bool, int, float, str, type(None))) for v in values):
            raise ConfigError(f'{bad}: choices must be a non-empty list of numbers, strings, '
                              f'booleans or null; got {reprlib.repr(values)}')
        return values
    number = int if kind == 'int' else (int, float)
    if not isinstance(values, list) or len(values) != 2 or not all(
            isinstance(v, number) and not isinstance(v, bool) for v in values):
        raise ConfigError(f'{bad}: a range needs two numbers, low and high (integers for int: '
                          f'[LO, HI]); got {reprlib.repr(values)}')
    if values[0] > values[1]:
        raise ConfigError(f'{bad}: the range is empty: low {values[0]} > high {values[1]}')
    if not isinstance(form.get('log', False), bool) or form.get('log') and values[0] <= 0:
        raise ConfigError(f'{bad}: log is true or false, and a log range must be > 0')
    if kind == 'low' and not isinstance(spec, float):
        raise ConfigError(f'{bad}: {key!r} is not a float setting; use {{int: [LO, HI]}} or '
                          '{choices: [...]}')
    return values


def load_search(recipe: ModuleType, args: Any) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The validated base config and its ``search`` section: an unknown key, a bad form,
    or a value a run refuses is a one-line ConfigError."""
    schema = {**schema_of(recipe), 'search': SEARCH_SCHEMA}
    cfg = load_config(args.config, schema, overrides_of(recipe, args))
    space, where = cfg.pop('search'), f' (in {args.config})' if args.config else ''
    if not space['objective']:
        raise ConfigError(f'--search needs search.objective{where}: the number of the '
                          "recipe's summary.json to optimize, e.g. models.cnn.test_accuracy")
    for key, value in _flat({k: v for k, v in space.items() if k != 'params'}).items():
        if isinstance(value, int) and value < 0:
            raise ConfigError(f'config key {"search." + key!r}{where} must be >= 0, got {value}')
    with_params(recipe, cfg, {})
    params, keys = space['params'], flat_keys(recipe.DEFAULTS)
    if not isinstance(params, dict) or not params:
        raise ConfigError(f'--search needs a search.params section{where}: config keys mapped '
                          f'to {FORMS} (see recipes/configs/classify_search.yaml)')
    for key, form in params.items():
        if key not in keys:
            close = difflib.get_close_matches(str(key), keys, n=1)
            raise ConfigError(f'unknown config key {key!r} in search.params{where}; ' +
                              (f'did you mean {close[0]!r}? ' if close else '') +
                              f'valid keys: {", ".join(keys)}')
        bad = f'search.params {key!r}{where}'
        for value in _values(key, _get(recipe.DEFAULTS, key), form, bad):
            try:
                with_params(recipe, cfg, {key: value})
            except ConfigError as e:
                raise ConfigError(f'{bad} allows {value!r}, which a run refuses: {e}') from None
    return cfg, space


def check_out(out: str, effective: Dict[str, Any]) -> bool:
    """Whether ``out`` holds this search already; refuse a run or another search there."""
    path = os.path.join(out, SEARCH_FILE)
    if not os.path.isfile(path):
        if previous_run(out):
            raise OutputDirError(f'{out} already holds a run ({", ".join(previous_run(out)[:3])}'
                                 '); choose another --out for the search')
        return False
    with open(path, encoding='utf-8') as f:
        saved, now = _flat(yaml.safe_load(f)), _flat(yaml.safe_load(yaml.safe_dump(effective)))
    for key in sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))[:1]:
        raise ConfigError(f'{out} holds a search where {key!r} is {saved.get(key)!r}, not '
                          f'{now.get(key)!r}; continue it with the same --config/--set, or '
                          'choose another --out')
    return True


@contextlib.contextmanager
def locked(out: str):
    """Hold ``out/search.lock``: one search process per directory (POSIX)."""
    with open(os.path.join(out, 'search.lock'), 'w') as f:
        try:
            import fcntl
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:
            pass
        except OSError:
            raise OutputDirError(f'another search is running in {out}; wait for it, or '
                                 'choose another --out') from None
        yield


def run_trial(recipe: ModuleType, cfg: Dict[str, Any], out: str, prune: Dict[str, Any],
              trial: Any) -> Dict[str, Any]:
    """One normal run of the recipe in ``out``, reporting to ``trial``; its summary."""
    data = recipe.load_data(cfg) if hasattr(recipe, 'load_data') else None
    if previous_run(out):
        raise OutputDirError(f'{out} holds a run that the study in optuna.db does not know; '
                             'move it away, or choose another --out')
    save_config(cfg, os.path.join(out, 'config.yaml'))
    pruning: Dict[str, OptunaPruning] = {}

    def attach(name: str, trainer: Any) -> None:
        if prune['key'] is not None and prune['trainer'] in (None, name):
            pruning[name] = OptunaPruning(trial, prune['key'], (1, 'epoch'))
            trainer.extend(pruning[name])

    context = Context(out, resolve_device(cfg.get('device', 'cpu')), False, data,
                      trainer_hook=attach)
    with open(os.path.join(out, 'output.txt'), 'w', encoding='utf-8') as f, \
            contextlib.redirect_stdout(f):
        summary = {**recipe.run(cfg, context), 'pruned': False}
    if prune['key'] is not None and not pruning:
        raise ConfigError(f"search.prune.trainer {prune['trainer']!r}: the trial built no such "
                          f'trainer (recipe {recipe.NAME!r} may not support pruning); name one '
                          'it trains (classify: the model), or set search.prune.key: null')
    for name, p in pruning.items():
        if p.pruned:
            summary.update(pruned=True, pruned_at={'trainer': name, p.pruned_at[0]: p.pruned_at[1],
                                                   prune['key']: p.reported[-1][1]})
            break
    write_json(summary, os.path.join(out, 'summary.json'))
    return summary


def one_trial(optuna: Any, recipe: ModuleType, study: Any, base: Dict[str, Any],
              space: Dict[str, Any], out: str, k: int) -> None:
    """Ask for the trial after ``k`` finished ones, run it, tell the study its result."""
    state, objective = optuna.trial.TrialState, space['objective']
    study.sampler = optuna.samplers.TPESampler(seed=(base['seed'] + k) % 2 ** 32,
                                               n_startup_trials=space['startup_trials'])
    trial, start = study.ask(), time.perf_counter()
    for key, form in space['params'].items():
        log = form.get('log', False)
        (trial.suggest_categorical(key, form['choices']) if 'choices' in form else
         trial.suggest_int(key, *form['int'], log=log) if 'int' in form else
         trial.suggest_float(key, form['low'], form['high'], log=log))
    name = f'trial_{trial.number:03d}'
    trial.set_user_attr('dir', name)
    try:
        summary = run_trial(recipe, with_params(recipe, base, trial.params),
                            os.path.join(out, name), space['prune'], trial)
    except Exception:   # a signal or Ctrl-C leaves it running: the next search re-runs it
        study.tell(trial, state=state.FAIL)
        raise
    value = None
    with contextlib.suppress(KeyError, TypeError):
        value = _get(summary, objective)
    if not summary['pruned'] and type(value) not in (int, float):
        study.tell(trial, state=state.FAIL)
        raise ConfigError(f'search.objective {objective!r} is not a number of the summary of '
                          f'{recipe.NAME!r}; its numbers: ' + ', '.join(
                              k for k, v in _flat(summary).items() if type(v) in (int, float)))
    head = f'trial {trial.number}: ' + ' '.join(f'{k}={_short(v)}'
                                                for k, v in trial.params.items())
    took = f'({time.perf_counter() - start:.0f} s) -> {os.path.join(out, name)}'
    if summary['pruned']:
        study.tell(trial, state=state.PRUNED)
        at = ', '.join(f'{k} {_short(v)}' for k, v in summary['pruned_at'].items())
        print(f'{head}: pruned ({at}) {took}', flush=True)
    elif not math.isfinite(value):
        study.tell(trial, state=state.FAIL)
        print(f'{head}: failed: {objective} is {value} {took}', flush=True)
    else:
        study.tell(trial, float(value))
        print(f'{head}: {objective} {value:.4f} {took}', flush=True)


def report(optuna: Any, recipe: ModuleType, study: Any, space: Dict[str, Any], out: str) -> None:
    """Write ``out/search_summary.json`` and ``out/best/config.yaml``."""
    state = optuna.trial.TrialState
    trials = [{'number': t.number, 'state': t.state.name, 'pruned': t.state == state.PRUNED,
               'params': t.params, 'value': t.value if t.state == state.COMPLETE else None,
               'intermediate_values': {str(s): v for s, v in sorted(t.intermediate_values.items())},
               'dir': t.user_attrs.get('dir'), 'rerun_of': t.user_attrs.get('rerun_of')}
              for t in study.get_trials(deepcopy=False)]
    counts = {s: sum(t['state'] == s.upper() for t in trials)
              for s in ('complete', 'pruned', 'fail')}
    best, config = None, os.path.join(out, 'best', 'config.yaml')
    if counts['complete']:
        b = study.best_trial
        with open(os.path.join(out, b.user_attrs['dir'], 'config.yaml'), encoding='utf-8') as f:
            save_config(yaml.safe_load(f), config)
        best = {'number': b.number, 'value': b.value, 'params': b.params,
                'dir': b.user_attrs['dir'], 'config': os.path.join('best', 'config.yaml')}
    path = os.path.join(out, 'search_summary.json')
    threads = torch.get_num_threads()   # CPU results depend on it: say it
    write_json({'recipe': recipe.NAME, 'study': study.study_name, 'storage': 'optuna.db',
                'objective': space['objective'], 'direction': space['direction'], **counts,
                'torch_threads': threads, 'best': best, 'trials': trials}, path)
    print(f"{counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} failed "
          f'-> {path}')
    print('no trial completed: no best config' if best is None else
          f"best: trial {best['number']}, {space['objective']} {best['value']:.4f} -> {config}; "
          f'repeat it with: python -m recipes.{recipe.NAME} --config {config} --out {out}_best '
          f'(on CPU the same numbers need the same torch threads: {threads} here)')


def search(recipe: ModuleType, args: Any) -> int:
    """Run or continue the search of ``args`` until ``args.search`` trials finished."""
    optuna = import_optuna('--search')
    if args.search < 1:
        raise ConfigError(f'--search N: N is the number of trials to finish, >= 1; got '
                          f'{args.search}')
    if int(os.environ.get('WORLD_SIZE', '1') or 1) > 1:
        raise ConfigError('--search runs in one process; launch it without torchrun')
    cfg, space = load_search(recipe, args)
    known = check_out(args.out, {**cfg, 'search': space})
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as e:
        raise OutputDirError(f'cannot write to the output directory {args.out!r}: '
                             f'{e.strerror or e}; choose a writable --out') from None
    verbosity, state = optuna.logging.get_verbosity(), optuna.trial.TrialState
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with locked(args.out):
            if not known:
                save_config({**cfg, 'search': space}, os.path.join(args.out, SEARCH_FILE))
            study = open_study(optuna, recipe, args.out, space)

            def finished() -> int:
                return len(study.get_trials(deepcopy=False, states=(state.COMPLETE, state.PRUNED)))
            print(f'search: {args.search} trials of {recipe.NAME} over '
                  f'{", ".join(space["params"])}; {finished()} finished before; '
                  f'study {recipe.NAME!r} in {os.path.join(args.out, "optuna.db")}')
            while finished() < args.search:
                one_trial(optuna, recipe, study, cfg, space, args.out, finished())
            report(optuna, recipe, study, space, args.out)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return 0


def open_study(optuna: Any, recipe: ModuleType, out: str, space: Dict[str, Any]) -> Any:
    """The study in ``out/optuna.db`` (new or continued); an interrupted trial (still
    running there) is marked failed and its parameters are queued to run again."""
    prune, state = space['prune'], optuna.trial.TrialState
    # steps are epochs (1, 2, ...): no pruning at epochs <= warmup_epochs
    pruner = (optuna.pruners.MedianPruner(prune['startup_trials'], prune['warmup_epochs'] + 1)
              if prune['key'] is not None else optuna.pruners.NopPruner())
    db = os.path.abspath(os.path.join(out, 'optuna.db'))
    study = optuna.create_study(storage=f'sqlite:///{db}', study_name=recipe.NAME,
                                direction=space['direction'], pruner=pruner, load_if_exists=True)
    for t in study.get_trials(deepcopy=False, states=(state.RUNNING,)):
        study.tell(t.number, state=state.FAIL)
        study.enqueue_trial(t.params, user_attrs={'rerun_of': t.number})
        print(f'trial {t.number} was interrupted: marked failed; its parameters run again as '
              'a new trial')
    return study
