"""One command line for every recipe: config, overrides, output directory, resume, errors.

A recipe module defines ``NAME``, ``DEFAULTS`` (the config schema, see
:mod:`trainerlib.config`), optionally ``check_values(cfg)`` (range checks) and
``RESUME_MAY_CHANGE`` (the settings a resumed run may change: every other one must equal
the saved config, see :mod:`recipes._resume`), and
optionally ``load_data(cfg)`` (run before anything is written; its result is
``ctx.data``), and ``run(cfg, ctx) -> dict`` which trains and returns the headline numbers. Its
``main(argv)`` is ``launch(module, argv)``::

    python -m recipes.<name> [--config FILE] [--set key.sub=VALUE ...] [--out DIR]
                             [--device cpu|cuda] [--seed N] [--resume] [--debug]
    python -m recipes <name> ...          # the same, by name
    python -m recipes.<name> --search N --config FILE --out DIR   # an Optuna search

The launcher validates everything before training, refuses to overwrite a run (or to
resume one made by another recipe or on other data), writes ``out/config.yaml`` (the
effective config, loadable with ``--config``) and ``out/summary.json`` (what ``run``
returned). User errors print one line and exit 2; ``--debug`` shows the traceback.
``--search N`` runs N trials over the ``search:`` section of the config file instead
(see :mod:`recipes._search`).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sys
from types import ModuleType
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch
import yaml

from trainerlib.recipes._resume import check_resume, previous_run
from trainerlib.recipes._tracking import tracking_for
from trainerlib.cli import run_cli
from trainerlib.config import Choice, load_config, save_config
from trainerlib.distributed import (SingleProcessCommunicator, create_communicator,
                                    launched_by_torchrun)
from trainerlib.errors import ConfigError, OutputDirError
from trainerlib.preemption import Preempted
from trainerlib.serialization import atomic_open
from trainerlib.strict_json import strict_record

SEED_RANGE = (0, 2 ** 64 - 1)
"""What ``torch.manual_seed`` and ``torch.Generator.manual_seed`` accept."""
TRAINING_DEVICES = ('cpu', 'cuda', 'mps')
SEARCH_FILE = 'search.yaml'
"""What a ``--search`` output directory holds: the config it searches from."""



@dataclasses.dataclass
class Context:
    """What a recipe's ``run(cfg, ctx)`` gets besides its config.

    Attributes:
        out: output directory (exists, holds ``config.yaml``).
        device: the torch device of ``cfg['device']``.
        resume: whether to continue from the newest snapshot (``snapshot(autoload=...)``).
        data: what the recipe's optional ``load_data(cfg)`` returned (None without one);
            it runs before anything is written, so bad data leaves ``out`` untouched.
        comm: the communicator (a single-process one unless torchrun started several
            processes and the recipe sets ``DATA_PARALLEL = True``).
        trainer_hook: None, or ``hook(name, trainer)`` that a recipe calls with each
            trainer it builds, before running it (``--search`` attaches the Optuna
            pruning extension there; ``name``: e.g. classify's model name).
    """
    out: str
    device: torch.device
    resume: bool
    data: Any = None
    comm: Any = dataclasses.field(default_factory=SingleProcessCommunicator)
    trainer_hook: Optional[Callable[[str, Any], None]] = None

    def path(self, *parts: str) -> str:
        """A path inside the output directory."""
        return os.path.join(self.out, *parts)


def flat_keys(schema: Dict[str, Any], prefix: str = '') -> List[str]:
    """``['a', 'b.c', ...]``: every settable key of a schema."""
    return [k for key, value in schema.items()
            for k in (flat_keys(value, f'{prefix}{key}.') if isinstance(value, dict)
                      else [prefix + key])]


def resolve_device(name: str) -> torch.device:
    """``torch.device(name)`` for a device that can train here, or a :class:`ConfigError`."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        device = None
    if device is None or device.type not in TRAINING_DEVICES:
        raise ConfigError(f"config key 'device' expects a device that can train: 'cpu', "
                          f"'cuda', 'cuda:N' or 'mps'; got {name!r}")
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ConfigError(f'device {name!r} was asked for but CUDA is not available here; '
                          'use --device cpu')
    if device.type == 'cuda' and device.index is not None \
            and device.index >= torch.cuda.device_count():
        raise ConfigError(f'device {name!r} does not exist: this machine has '
                          f'{torch.cuda.device_count()} CUDA device(s); use cuda:0 or --device cpu')
    if device.type == 'mps' and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r} was asked for but MPS is not available here; "
                          'use --device cpu')
    return device


def check_seeds(cfg: Dict[str, Any], prefix: str = '') -> None:
    """Every ``seed`` / ``*_seed`` setting must be an integer torch accepts as a seed."""
    low, high = SEED_RANGE
    for key, value in cfg.items():
        if isinstance(value, dict):
            check_seeds(value, f'{prefix}{key}.')
        elif (key == 'seed' or key.endswith('_seed')) and isinstance(value, int) \
                and not low <= value <= high:
            raise ConfigError(f'config key {prefix + key!r} must be an integer from {low} to '
                              f'2**64 - 1 (what torch accepts as a seed), got {value}')


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Use ``n`` torch CPU threads inside the block (0: leave torch's choice), then restore."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_test_fraction(cfg: Dict[str, Any]) -> None:
    """``cfg['data']['test_fraction']`` must lie strictly between 0 and 1."""
    fraction = cfg['data']['test_fraction']
    if not 0 < fraction < 1:
        raise ConfigError("config key 'data.test_fraction' must be between 0 and 1 "
                          f'(exclusive), got {fraction}')


def check_batch_norm_batch(key: str, batch_size: int, what: str) -> None:
    """A training batch through BatchNorm layers needs at least two examples."""
    if batch_size < 2:
        raise ConfigError(f'config key {key!r} must be >= 2 here: {what} cannot train on a '
                          f'batch of {batch_size} example (a batch has no variance); got '
                          f'{batch_size}')


def write_json(obj: Any, path: str) -> None:
    """Write ``obj`` as indented, strict JSON, atomically.

    A NaN or infinite float is written as ``null`` and listed, with what it was, in a
    top-level ``non_finite`` field (``{"models.mlp.test_loss": "nan"}``).
    """
    record = strict_record(obj) if isinstance(obj, dict) else obj
    with atomic_open(path, 'w', durable=False) as f:
        json.dump(record, f, indent=2, allow_nan=False)
        f.write('\n')


def schema_of(recipe: ModuleType) -> Dict[str, Any]:
    """The recipe's schema with the ``recipe`` key (its name) that every config carries."""
    return {'recipe': Choice(recipe.NAME), **recipe.DEFAULTS}


def parse_args(recipe: ModuleType, argv: Optional[List[str]]) -> argparse.Namespace:
    doc = (recipe.__doc__ or '').strip()
    parser = argparse.ArgumentParser(
        prog=f'python -m recipes.{recipe.NAME}', description=doc.split('\n\n')[0],
        epilog='Config keys (--set KEY=VALUE, values read as YAML): '
               f'{", ".join(flat_keys(recipe.DEFAULTS))}. '
               f'Example: recipes/configs/{recipe.NAME}.yaml.')
    parser.add_argument('--config', help='YAML file of settings (default: built-in defaults)')
    parser.add_argument('--set', dest='overrides', action='append', default=[],
                        metavar='KEY=VALUE', help='override a setting, e.g. train.epochs=3')
    parser.add_argument('--out', default=os.path.join('result', recipe.NAME),
                        help=f'output directory (default: result/{recipe.NAME})')
    parser.add_argument('--device', help="shorthand for --set device=… ('cpu', 'cuda')")
    parser.add_argument('--seed', type=int, help='shorthand for --set seed=N')
    parser.add_argument('--resume', action='store_true',
                        help='continue from the newest snapshot in the output directory')
    parser.add_argument('--debug', action='store_true', help='show tracebacks of errors')
    parser.add_argument('--search', type=int, metavar='N',
                        help='run an Optuna search until N trials finished, over the search: '
                             'section of --config (re-running the command continues it)')
    parser.add_argument('--mlflow', nargs='?', const='', metavar='URI',
                        help='log config, metrics, plots and summary to MLflow (default store: '
                             'OUT/mlruns; needs pip install trainerlib[mlflow])')
    return parser.parse_args(argv)


def overrides_of(recipe: ModuleType, args: argparse.Namespace) -> List[str]:
    """The ``--set`` overrides, with ``--device`` and ``--seed`` as two more."""
    overrides = list(args.overrides)
    for key in ('device', 'seed'):
        if getattr(args, key) is not None:
            if key not in recipe.DEFAULTS:
                raise ConfigError(f'--{key}: recipe {recipe.NAME!r} has no {key!r} setting')
            overrides.append(f'{key}={getattr(args, key)}')
    return overrides


def prepare(recipe: ModuleType, args: argparse.Namespace) -> Dict[str, Any]:
    """Load and check the config, and check the output directory; writes nothing."""
    overrides = overrides_of(recipe, args)
    try:
        cfg = load_config(args.config, schema_of(recipe), overrides)
    except ConfigError as e:
        if not str(e).startswith("unknown config key 'search'"):
            raise
        raise ConfigError(f"{e}; a 'search' section is read by --search N only") from None
    if os.path.isfile(os.path.join(args.out, SEARCH_FILE)):
        raise OutputDirError(f'{args.out} holds a --search; continue it with --search N, or '
                             'choose another --out')
    check_seeds(cfg)
    if 'device' in cfg:
        resolve_device(cfg['device'])
    check = getattr(recipe, 'check_values', None)
    if check is not None:
        check(cfg)
    if args.resume:
        check_resume(args.out, cfg, getattr(recipe, 'RESUME_MAY_CHANGE', ('device',)))
    else:
        previous = previous_run(args.out)
        if previous:
            raise OutputDirError(f'{args.out} already holds a run ({", ".join(previous[:3])}); '
                                 'pass --resume to continue it, or choose another --out')
    return cfg


def communicator_for(recipe: ModuleType) -> Any:
    """The communicator of this process: data-parallel under torchrun for a recipe that
    supports it (``DATA_PARALLEL = True``); refused for one that does not."""
    if int(os.environ.get('WORLD_SIZE', '1') or 1) > 1 and launched_by_torchrun():
        if not getattr(recipe, 'DATA_PARALLEL', False):
            raise ConfigError(f'recipe {recipe.NAME!r} does not run data-parallel; launch it '
                              'as one process (without torchrun)')
        return create_communicator()
    return SingleProcessCommunicator()


def execute(recipe: ModuleType, args: argparse.Namespace) -> int:
    cfg = prepare(recipe, args)
    tracking = tracking_for(recipe, cfg, args.out, args.mlflow)
    device = resolve_device(cfg['device']) if 'device' in cfg else torch.device('cpu')
    load_data = getattr(recipe, 'load_data', None)
    data = load_data(cfg) if load_data is not None else None
    comm = communicator_for(recipe)   # every rank has checked everything by now
    if comm.size > 1 and device.type == 'cuda':
        device = comm.device          # cuda:LOCAL_RANK
    try:
        if comm.rank == 0:
            _write_config(args, cfg)
        comm.barrier()                # out/ and config.yaml exist for every rank
        with _quiet_unless(comm.rank == 0):   # one terminal output: rank 0's
            hook = tracking.hook if tracking is not None else None
            summary = recipe.run(cfg, Context(args.out, device, args.resume, data, comm,
                                              trainer_hook=hook))
            if comm.rank == 0:
                path = os.path.join(args.out, 'summary.json')
                write_json(summary, path)
                print(f'summary -> {path}')
                if tracking is not None:
                    tracking.log_files([path])
    finally:
        comm.finalize()
    return 0


def _write_config(args: argparse.Namespace, cfg: Dict[str, Any]) -> None:
    try:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, 'config.yaml')
        if not (args.resume and _same_config(path, cfg)):  # a refused resume changes nothing
            save_config(cfg, path)
    except OSError as e:
        raise OutputDirError(f'cannot write to the output directory {args.out!r}: '
                             f'{e.strerror or e}; choose a writable --out') from None


@contextlib.contextmanager
def _quiet_unless(talk: bool) -> Iterator[None]:
    if talk:
        yield
        return
    with open(os.devnull, 'w') as devnull, contextlib.redirect_stdout(devnull):
        yield


def _same_config(path: str, cfg: Dict[str, Any]) -> bool:
    try:
        with open(path, encoding='utf-8') as f:
            return yaml.safe_load(f) == cfg
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False


def launch(recipe: ModuleType, argv: Optional[List[str]] = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the recipe; return the exit status."""
    args = parse_args(recipe, argv)
    searching = args.search is not None
    again = ('the same command (the interrupted trial runs again)' if searching else
             f'python -m recipes.{recipe.NAME} --out {args.out} --resume (plus the same '
             '--config/--set)')
    try:
        if searching:
            if args.mlflow is not None:
                print('error: --mlflow cannot be combined with --search (each trial is its own '
                      'run: track the best one with --config DIR/best/config.yaml --mlflow)',
                      file=sys.stderr)
                return 2
            from trainerlib.recipes._search import search
            return run_cli(lambda: search(recipe, args), args.debug)
        return run_cli(lambda: execute(recipe, args), args.debug)
    except Preempted as stop:  # SIGTERM/SIGINT: the trainer saved a snapshot first
        what = f'search stopped by {signal.Signals(stop.signum).name}' if searching else stop
        print(f'{what}; continue with: {again}', file=sys.stderr)
        return stop.code
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f'interrupted; continue with: {again}', file=sys.stderr)
        return 130
