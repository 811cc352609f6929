"""Shift: the base of hyperparameter shifts (a closed-form schedule of the call count)."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch

from trainerlib.extension import PRIORITY_READER, Extension

Attr = Union[str, Tuple[str, int]]


def clamp(value: float, target: Optional[float], increasing: bool) -> float:
    """``target`` once ``value`` has gone past it (in magnitude) in the schedule's direction."""
    if target is None:
        return value
    beyond = abs(value) > abs(target) if increasing else abs(value) < abs(target)
    return target if beyond else value


class Shift(Extension):
    """Sets a hyperparameter of optimizer param groups to ``value(t, init)`` after each call.

    ``t`` counts the calls: with the default trigger ``(1, 'iteration')`` it is the
    number of updates done, so the value set after iteration ``t`` is the one used by
    iteration ``t + 1``. :meth:`initialize` sets ``value(t, init)`` before the first
    update; ``init`` is read from each selected group there when not given, so groups
    with different values (lr 0.1 and 0.01) are each shifted from their own. The
    counter and the initial values are saved; on resume the value of the saved counter
    is set again (``init`` is never re-read from an already shifted optimizer).
    Shifts run at ``PRIORITY_READER``, after ``observe_lr`` (``PRIORITY_WRITER``) has
    recorded the value the iteration used. Subclasses define :meth:`value`.

    Args:
        attr: a param-group key (``'lr'``, ``'momentum'``, ``'weight_decay'`` …), or
            ``(key, index)`` for one element of a tuple-valued key, e.g. ``('betas', 0)``
            for Adam's beta1 (the other elements are kept).
        init: initial value for every selected group; None reads each group's own.
        optimizer: a ``torch.optim.Optimizer``; None: the updater's ``'main'`` one.
        param_groups: indices of the groups to shift; None: all of them.
    """

    trigger = (1, 'iteration')
    priority = PRIORITY_READER

    def __init__(self, attr: Attr, init: Optional[float] = None,
                 optimizer: Optional[torch.optim.Optimizer] = None,
                 param_groups: Optional[Sequence[int]] = None) -> None:
        self._attr = attr if isinstance(attr, str) else tuple(attr)
        self._init = init
        self._optimizer = optimizer
        self._indices = None if param_groups is None else list(param_groups)
        self._t = 0
        self._inits: Optional[List[float]] = None

    def value(self, t: float, init: float) -> Optional[float]:
        """The value after ``t`` calls for a group that started at ``init`` (None: keep)."""
        raise NotImplementedError

    def position(self, trainer) -> float:
        """The ``t`` passed to :meth:`value`: the number of calls so far."""
        return self._t

    def initialize(self, trainer) -> None:
        groups = self._groups(trainer, check=True)
        current = [self._get(g) for g in groups]  # (also checks that the key exists)
        if self._inits is None:
            self._inits = current if self._init is None else [self._init] * len(groups)
        elif len(self._inits) != len(groups):
            raise ValueError(f'{type(self).__name__}: the snapshot holds initial values for '
                             f'{len(self._inits)} param groups, the optimizer has {len(groups)}')
        self._apply(groups, trainer)

    def __call__(self, trainer) -> None:
        self._t += 1
        self._apply(self._groups(trainer), trainer)

    def _apply(self, groups: List[dict], trainer) -> None:
        t = self.position(trainer)
        for group, init in zip(groups, self._inits):
            value = self.value(t, init)
            if value is not None:
                self._set(group, value)

    def _groups(self, trainer, check: bool = False) -> List[dict]:
        opt = self._optimizer if self._optimizer is not None \
            else trainer.updater.get_optimizer('main')
        groups = opt.param_groups
        if self._indices is None:
            return groups
        if check and not all(-len(groups) <= i < len(groups) for i in self._indices):
            raise ValueError(f'{type(self).__name__}: param_groups={self._indices} but the '
                             f'optimizer has {len(groups)} param groups')
        return [groups[i] for i in self._indices]

    def _get(self, group: dict) -> float:
        key = self._attr if isinstance(self._attr, str) else self._attr[0]
        if key not in group:
            raise KeyError(f'{type(self).__name__}: the param group has no {key!r}; its keys: '
                           f'{sorted(k for k in group if k != "params")}')
        value = group[key] if isinstance(self._attr, str) else group[key][self._attr[1]]
        return float(value)

    def _set(self, group: dict, value: float) -> None:
        if isinstance(self._attr, str):
            group[self._attr] = _assign(group[self._attr], value)
        else:
            key, index = self._attr
            items = list(group[key])
            items[index] = _assign(items[index], value)
            group[key] = tuple(items)

    def state_dict(self) -> dict:
        return {'t': self._t, 'inits': self._inits}

    def load_state_dict(self, state: dict) -> None:
        self._t = state['t']
        if self._init is None:  # an explicit init is configuration: the code's wins
            self._inits = state['inits']


def _assign(old, value: float):
    """``value`` in place of ``old`` (a tensor hyperparameter is filled in place)."""
    return old.fill_(value) if isinstance(old, torch.Tensor) else value
