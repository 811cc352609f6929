"""``trainerlib inspect``: summarise a trainerlib snapshot file without building the model.

    trainerlib inspect result/snapshot_iter_1000 [--tensors]

Prints the library version and, for a trainer snapshot, the iteration, epoch,
elapsed time, models (values, bytes), optimizers (param groups, learning rates,
kind of state), extensions and stateful triggers; for a ``snapshot_object``
file, its tensors. The file is loaded with ``weights_only=True`` (it can never
run code). A file that is missing, truncated or not a trainerlib snapshot
prints ``error: ...`` and exits with 2. ``tools/inspect_snapshot.py`` is this
command under its old name.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import torch

from trainerlib.cli import run_cli
from trainerlib.errors import SnapshotError
from trainerlib.serialization import load_state


def _size(n: float) -> str:
    """Bytes in decimal units: ``512 B``, ``1.5 kB``, ``2.0 MB``."""
    for unit in ('B', 'kB', 'MB'):
        if n < 1000:
            return f'{n:.0f} B' if unit == 'B' else f'{n:.1f} {unit}'
        n /= 1000
    return f'{n:.1f} GB'


def tensors_in(obj: Any, prefix: str = '') -> Iterator[Tuple[str, torch.Tensor]]:
    """``(dotted key, tensor)`` for every tensor nested in dicts and lists."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from tensors_in(value, f'{prefix}.{key}' if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from tensors_in(value, f'{prefix}.{i}' if prefix else str(i))


def _totals(obj: Any) -> str:
    ts = [t for _, t in tensors_in(obj)]
    return (f'{sum(t.numel() for t in ts):,} values in {len(ts)} tensors, '
            f'{_size(sum(t.numel() * t.element_size() for t in ts))}')


def _tensor_line(key: str, t: torch.Tensor) -> str:
    return f'  {key}: {tuple(t.shape)} {str(t.dtype).replace("torch.", "")} ' \
           f'{_size(t.numel() * t.element_size())}'


def _optimizer(state: dict) -> str:
    groups = state['param_groups']
    lrs = ', '.join(f'{g["lr"]:g}' if isinstance(g.get('lr'), (int, float)) else str(g.get('lr'))
                    for g in groups)
    kinds = sorted({k for s in state['state'].values() for k in s})
    return (f'{len(groups)} param group{"s" * (len(groups) != 1)} (lr {lrs}); '
            f'state: {", ".join(kinds) or "none"}')


def _brief(state: Any) -> str:
    """Scalars of a (trigger) state dict, one line."""
    items = [f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}' for k, v in state.items()
             if isinstance(v, (int, float, str)) or v is None]
    return ', '.join(items) or 'saved'


def describe_trainer(state: dict) -> List[str]:
    """The report lines of a trainer snapshot's state (counters, models, optimizers, ...)."""
    updater = state['updater']
    lines = [f'iteration: {updater["iteration"]}']
    for name, it in updater.get('iterators', {}).items():
        size = f'/{len(it["order"])}' if 'order' in it else ''
        where = f', position {it["current_position"]}{size}' if 'current_position' in it else ''
        lines.append(f'epoch: {it.get("epoch", "?")} (iterator {name!r}{where})')
    elapsed = float(state.get('elapsed_time', 0.0))
    lines.append(f'elapsed time: {elapsed:.1f} s ({int(elapsed // 3600)}:'
                 f'{int(elapsed % 3600 // 60):02d}:{int(elapsed % 60):02d})')
    lines.append('models:')
    lines += [f'  {name}: {_totals(sd)}' for name, sd in updater.get('models', {}).items()]
    lines.append('optimizers:')
    lines += [f'  {name}: {_optimizer(opt)}' for name, opt in updater.get('optimizers', {}).items()]
    if updater.get('amp'):
        lines.append(f'amp: {_brief(updater["amp"])}')
    lines.append(f'extensions: {", ".join(state.get("extensions", {})) or "none"}')
    triggers = {'(stop trigger)': state.get('stop_trigger') or {}, **state.get('triggers', {})}
    lines.append('triggers with state:')
    lines += [f'  {name}: {_brief(t)}' for name, t in triggers.items() if t]
    return lines


def _kind(state: Any) -> str:
    if isinstance(state, dict):
        if 'updater' in state and 'extensions' in state:
            return 'trainer snapshot'
        if set(state) == {'state', 'param_groups'}:
            return 'optimizer state'
        if state and all(isinstance(v, torch.Tensor) for v in state.values()):
            return 'module state_dict'
    return 'object state'


def describe(path: str, show_tensors: bool) -> List[str]:
    """The report lines for the snapshot at ``path``."""
    state = load_state(path)   # raises SnapshotError with a one-line reason
    version = torch.load(path, map_location='cpu', weights_only=True, mmap=True)['version']
    kind = _kind(state)
    lines = [f'file: {path} ({_size(os.path.getsize(path))})', f'trainerlib version: {version}',
             f'kind: {kind}']
    try:
        if kind == 'trainer snapshot':
            lines += describe_trainer(state)
        elif kind == 'optimizer state':
            lines.append(f'optimizer: {_optimizer(state)}')
        else:
            lines.append(f'total: {_totals(state)}')
    except (KeyError, TypeError, AttributeError) as e:
        raise SnapshotError(f'{path!r} is a {kind} with an unexpected layout '
                            f'({type(e).__name__}: {e}); was it written by another version '
                            'of trainerlib?') from None
    if show_tensors or kind == 'module state_dict':
        lines.append('tensors:')
        lines += [_tensor_line(key, t) for key, t in tensors_in(state)]
    return lines


DESCRIPTION = 'Summarise a trainerlib snapshot file.'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``trainerlib inspect`` (and of ``tools/inspect_snapshot.py``)."""
    parser.add_argument('snapshot', metavar='SNAPSHOT', help='a file written by snapshot() '
                        'or snapshot_object()')
    parser.add_argument('--tensors', action='store_true',
                        help='also list every tensor with its shape, dtype and size')
    parser.add_argument('--debug', action='store_true', help='show tracebacks of errors')


def execute(args: argparse.Namespace) -> int:
    """Print the report of ``args.snapshot``; a user error is one line and exit status 2."""
    def run() -> int:
        print('\n'.join(describe(args.snapshot, args.tensors)))
        return 0

    return run_cli(run, args.debug)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Stand-alone entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    add_arguments(parser)
    return execute(parser.parse_args(argv))
