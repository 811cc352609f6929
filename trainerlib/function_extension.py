"""Adapting extension-like objects: plain callables and Chainer-style lifecycle hooks.

Everything here runs once, when an extension is registered (``Trainer.extend``), never
per iteration: signatures are looked at once and the hooks the trainer calls are
fixed then.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Optional

from trainerlib.dict_serializer import load_by_serialize, save_by_serialize
from trainerlib.extension import PRIORITY_READER, Extension, TriggerLike

Hook = Callable[..., None]

# attributes the trainer reads from an extension, forwarded from a wrapped callable
_FLAGS = ('rank0_only', 'collective', 'snapshot_on_error', 'restores_trainer')


def _nothing(*args: Any) -> None:
    pass


def takes_trainer(fn: Callable) -> bool:
    """Whether the hook ``fn`` accepts the trainer as one positional argument.

    False only for a hook that can be called with no argument and not with one
    (Chainer's ``finalize(self)``); True when the signature cannot be read.
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    for args in ((None,), ()):
        try:
            signature.bind(*args)
        except TypeError:
            continue
        return bool(args)
    return True   # neither fits: let the call raise its own error


def trainer_hook(fn: Optional[Callable]) -> Hook:
    """``fn`` as a hook called ``hook(trainer)``: ``fn`` itself, a no-op for None, or
    for a hook written without the trainer (Chainer's ``finalize()``) one that drops it."""
    if fn is None:
        return _nothing
    if takes_trainer(fn):
        return fn

    @functools.wraps(fn)
    def without_trainer(trainer: Any = None) -> None:
        fn()
    return without_trainer


def _given(value: Any, fn: Any, attribute: str, default: Any) -> Any:
    """``value``, else ``fn``'s attribute, else ``default`` (None counts as not set)."""
    if value is not None:
        return value
    found = getattr(fn, attribute, None)
    return default if found is None else found


class FunctionExtension(Extension):
    """Adapts a callable ``fn(trainer)`` (a function, a ``make_extension`` function,
    a Chainer-style callable object) to :class:`Extension`.

    Arguments given here win; otherwise ``fn``'s own attributes are used: ``trigger``,
    ``priority``, ``name`` / ``default_name`` (else ``__name__``), ``initialize``,
    ``finalize`` (with or without the trainer argument), ``on_error``,
    ``on_preemption``, ``state_dict`` / ``load_state_dict`` or Chainer's
    ``serialize(serializer)``, and the flags ``rank0_only``, ``collective``,
    ``snapshot_on_error``, ``restores_trainer``. The name the trainer gives it is also
    set on ``fn`` (as Chainer sets ``extension.name``), where ``fn`` takes attributes.
    """

    def __init__(self, fn: Callable, trigger: TriggerLike = None, priority: Optional[int] = None,
                 default_name: Optional[str] = None, initializer: Optional[Callable] = None,
                 finalizer: Optional[Callable] = None, on_error: Optional[Callable] = None) -> None:
        self._name: Optional[str] = None
        self._fn = fn
        functools.update_wrapper(self, fn, updated=())
        self.trigger = _given(trigger, fn, 'trigger', Extension.trigger)
        self.priority = _given(priority, fn, 'priority', PRIORITY_READER)
        self._default_name = (default_name or getattr(fn, 'name', None)
                              or getattr(fn, 'default_name', None)
                              or getattr(fn, '__name__', None) or type(fn).__name__)
        self._initialize = trainer_hook(_given(initializer, fn, 'initialize', None))
        self._finalize = trainer_hook(_given(finalizer, fn, 'finalize', None))
        self._on_error = _given(on_error, fn, 'on_error', _nothing)
        self._on_preemption = trainer_hook(getattr(fn, 'on_preemption', None))
        self._state_dict, self._load_state_dict = _state_hooks(fn)
        for flag in _FLAGS:
            if hasattr(fn, flag):
                setattr(self, flag, getattr(fn, flag))

    @property
    def wrapped(self) -> Callable:
        """The adapted callable."""
        return self._fn

    @property
    def name(self) -> Optional[str]:  # type: ignore[override]
        return self._name

    @name.setter
    def name(self, value: Optional[str]) -> None:
        self._name = value
        try:
            self._fn.name = value
        except (AttributeError, TypeError):   # a builtin, a bound method, __slots__ …
            pass

    @property
    def default_name(self) -> str:
        return self._default_name

    def __call__(self, trainer) -> None:
        return self._fn(trainer)

    def initialize(self, trainer) -> None:
        self._initialize(trainer)

    def finalize(self, trainer=None) -> None:
        self._finalize(trainer)

    def on_error(self, trainer, exc, tb) -> None:
        self._on_error(trainer, exc, tb)

    def on_preemption(self, trainer) -> None:
        self._on_preemption(trainer)

    def state_dict(self) -> dict:
        return self._state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._load_state_dict(state)


def _state_hooks(fn: Any):
    """``fn``'s (state_dict, load_state_dict): its own, else through its ``serialize``,
    else none (an empty state)."""
    save, load = getattr(fn, 'state_dict', None), getattr(fn, 'load_state_dict', None)
    serialize = getattr(fn, 'serialize', None)
    if save is None and serialize is not None:
        save = functools.partial(save_by_serialize, serialize)
    if load is None and serialize is not None:
        load = functools.partial(load_by_serialize, serialize)
    return save or dict, load or _nothing


def as_extension(obj: Any) -> Extension:
    """Normalise any extension-like object (Extension or callable) to an Extension."""
    if isinstance(obj, Extension):
        return obj
    if callable(obj):
        return FunctionExtension(obj)
    raise TypeError(f'an extension must be an Extension or a callable taking the trainer, '
                    f'got {type(obj).__name__}')
