"""Whether a saved state fits the object about to load it, checked before anything is loaded.

A snapshot made for another optimizer class, another param-group layout or another
model structure is refused with one line naming the difference
(:class:`~trainerlib.errors.SnapshotMismatchError`), instead of loading half of it
or failing at the first step (an Adam state loaded into SGD raises
``KeyError: 'momentum'`` there). Snapshots record each optimizer's class and
parameter shapes (:func:`optimizer_record`, strings and integers only, so they
stay ``weights_only``-loadable); for older snapshots without that record the
checks are structural (group sizes, hyperparameter names, buffer shapes).
"""
from __future__ import annotations

from typing import Any, List, Mapping, Optional

import torch

from trainerlib.errors import SnapshotMismatchError

SAME_OPTIMIZER = 'resume with the same optimizer'
SAME_GROUPS = 'resume with the same optimizer param groups'
SAME_MODEL = 'resume with the model the snapshot was made with'

# param-group entries that torch adds or renames between versions (setdefault on load):
# their absence says nothing about the optimizer class
_FLAGS = frozenset({'foreach', 'maximize', 'capturable', 'differentiable', 'fused',
                    'decoupled_weight_decay', 'initial_lr'})
# per-parameter buffers of torch.optim that have the parameter's shape
_PARAM_SHAPED = frozenset({'momentum_buffer', 'exp_avg', 'exp_avg_sq', 'max_exp_avg_sq',
                           'exp_inf', 'square_avg', 'acc_delta', 'grad_avg', 'sum', 'ax',
                           'prev', 'step_size'})


def _shape(shape: Any) -> str:
    return str(tuple(shape))


def _known_shape(tensor: torch.Tensor) -> Optional[list]:
    """The shape, or None for a lazy module's uninitialized parameter (loading the
    saved tensor materializes it with the saved shape)."""
    return None if torch.nn.parameter.is_lazy(tensor) else list(tensor.shape)


def optimizer_record(optimizer: Any) -> dict:
    """What a snapshot records about ``optimizer`` to recognise it on resume.

    Returns:
        ``{'class': 'Adam', 'shapes': [[[16, 6], [16]], …]}``: the class name and the
        shape of every parameter, group by group (strings and integers only).
    """
    groups = getattr(optimizer, 'param_groups', None) or []
    return {'class': type(optimizer).__name__,
            'shapes': [[list(p.shape) for p in g['params']] for g in groups]}


def target_record(target: Any) -> dict:
    """What a snapshot file's header records about the object its state was taken from:
    ``{'class': name}``, plus the parameter shapes for an optimizer (see
    :func:`optimizer_record`)."""
    if isinstance(target, torch.optim.Optimizer):
        return optimizer_record(target)
    return {'class': type(target).__name__}


def check_same_shapes(expected: Mapping[str, Any], saved: Any, what: str) -> None:
    """Raise SnapshotMismatchError listing every missing, unexpected or reshaped tensor.

    Args:
        expected: the state dict of the object that will load ``saved``.
        saved: the saved state dict.
        what: the object, for the message (``"model 'main'"``).
    """
    if not isinstance(saved, Mapping):
        raise SnapshotMismatchError(f'holds a {type(saved).__name__} for {what}, not a state '
                                    'dict', SAME_MODEL)
    problems = [f'missing {k}' for k in expected if k not in saved]
    problems += [f'unexpected {k}' for k in saved if k not in expected]
    problems += [f'{k}: saved {_shape(saved[k].shape)}, expected {_shape(v.shape)}'
                 for k, v in expected.items()
                 if k in saved and isinstance(v, torch.Tensor) and not torch.nn.parameter.is_lazy(v)
                 and isinstance(saved[k], torch.Tensor) and v.shape != saved[k].shape]
    if problems:
        shown = '; '.join(problems[:20]) + (' …' if len(problems) > 20 else '')
        raise SnapshotMismatchError(f'does not match {what} ({len(problems)} mismatch'
                                    f'{"es" * (len(problems) != 1)}: {shown})', SAME_MODEL)


def check_optimizer(optimizer: Any, saved: Any, what: str,
                    record: Optional[Mapping[str, Any]] = None) -> None:
    """Raise SnapshotMismatchError unless ``saved`` (an optimizer state dict) fits ``optimizer``.

    Checks, in this order: the class (from ``record``; without it, the names of the
    class's hyperparameters in the saved groups), the number of param groups, the
    number of parameters per group, and the parameter shapes (from ``record``;
    without it, the shapes of parameter-shaped buffers such as ``exp_avg``).

    Args:
        optimizer: the optimizer that will load ``saved``.
        saved: ``optimizer.state_dict()`` as saved.
        what: the optimizer, for the message (``"optimizer 'main'"``).
        record: :func:`optimizer_record` of the saved optimizer, if the snapshot has it.
    """
    groups = getattr(optimizer, 'param_groups', None)
    if groups is None:  # not a torch-style optimizer: its own load_state_dict decides
        return
    name = type(optimizer).__name__
    if not isinstance(saved, Mapping) or not isinstance(saved.get('param_groups'), list) \
            or not isinstance(saved.get('state'), Mapping):
        raise SnapshotMismatchError(f'holds no optimizer state for {what}', SAME_OPTIMIZER)
    saved_groups = saved['param_groups']
    if not all(isinstance(g, Mapping) and isinstance(g.get('params'), list)
               for g in saved_groups):
        raise SnapshotMismatchError(f'holds no optimizer state for {what}', SAME_OPTIMIZER)
    saved_class = record.get('class') if isinstance(record, Mapping) else None
    if saved_class is not None and saved_class != name:
        raise SnapshotMismatchError(f'was made with {saved_class} for {what}, this run uses '
                                    f'{name}', SAME_OPTIMIZER)
    if saved_class is None and saved_groups:
        lacking = sorted(set(getattr(optimizer, 'defaults', {})) - set(saved_groups[0]) - _FLAGS)
        if lacking:
            raise SnapshotMismatchError(
                f'was made with another optimizer than the {name} of this run for {what} '
                f'(its param groups lack {", ".join(lacking)})', SAME_OPTIMIZER)
    if len(saved_groups) != len(groups):
        raise SnapshotMismatchError(f'has {len(saved_groups)} param group'
                                    f'{"s" * (len(saved_groups) != 1)} for {what}, this run '
                                    f'has {len(groups)}', SAME_GROUPS)
    for i, (saved_group, group) in enumerate(zip(saved_groups, groups)):
        if len(saved_group['params']) != len(group['params']):
            raise SnapshotMismatchError(
                f'has {len(saved_group["params"])} parameters in param group {i} of {what}, '
                f'this run has {len(group["params"])}', SAME_GROUPS)
    current = [[_known_shape(p) for p in g['params']] for g in groups]
    shapes = record.get('shapes') if isinstance(record, Mapping) else None
    if shapes is None:
        shapes = _buffer_shapes(saved, current)
    for i, (saved_shapes, group_shapes) in enumerate(zip(shapes, current)):
        for j, (was, now) in enumerate(zip(saved_shapes, group_shapes)):
            if was is not None and now is not None and list(was) != now:
                raise SnapshotMismatchError(
                    f'has a parameter of shape {_shape(was)} at param group {i}, index {j} of '
                    f'{what}, this run has {_shape(now)}', SAME_MODEL)


def _buffer_shapes(saved: Mapping[str, Any], current: List[List[list]]) -> List[List[Any]]:
    """The parameter shapes that the saved buffers reveal (None where none does)."""
    state = saved['state']
    shapes: List[List[Any]] = []
    for saved_group, group_shapes in zip(saved['param_groups'], current):
        row = []
        for index, now in zip(saved_group['params'], group_shapes):
            buffers = state.get(index, {}) if isinstance(state.get(index), Mapping) else {}
            seen = [v.shape for k, v in buffers.items()
                    if k in _PARAM_SHAPED and isinstance(v, torch.Tensor)]
            row.append(next((list(s) for s in seen if now is not None and list(s) != now), None))
        shapes.append(row)
    return shapes


def check_compatible(target: Any, state: Any, record: Optional[Mapping[str, Any]] = None,
                     ) -> None:
    """Check a saved ``state`` against a module or optimizer ``target`` (see module doc).

    A Trainer or an Updater checks its state itself, first thing in its
    ``load_state_dict``; other targets are not checked here.

    Raises:
        SnapshotMismatchError: what differs and what to do, one line.
    """
    is_trainer_state = isinstance(state, Mapping) and 'updater' in state \
        and 'extensions' in state
    if isinstance(target, torch.nn.Module):
        if is_trainer_state:
            raise SnapshotMismatchError(
                f'is a whole-trainer snapshot, not the state of a {type(target).__name__}',
                "load it into the Trainer (the model is in state['updater']['models'])")
        check_same_shapes(target.state_dict(), state, f'the {type(target).__name__} module')
    elif isinstance(target, torch.optim.Optimizer):
        if is_trainer_state:
            raise SnapshotMismatchError(
                f'is a whole-trainer snapshot, not the state of a {type(target).__name__}',
                "load it into the Trainer (optimizers are in state['updater']['optimizers'])")
        check_optimizer(target, state, 'the optimizer', record)
