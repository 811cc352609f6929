"""The Extension interface: everything the Trainer runs around the update."""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

PRIORITY_WRITER = 300
"""Extensions that write records to the observation (e.g. Evaluator)."""
PRIORITY_EDITOR = 200
"""Extensions that edit records already in the observation."""
PRIORITY_READER = 100
"""Extensions that only read the observation (LogReport, PrintReport ...)."""
PRIORITY_SNAPSHOT = -100
"""Snapshot writers: run after every other trigger of the iteration was evaluated."""

TriggerLike = Any  # a callable trigger(trainer) -> bool, or (period, unit)


class Extension:
    """Base class of trainer extensions.

    An extension is called as ``extension(trainer)`` whenever its trigger fires.
    Subclasses override ``__call__`` and optionally the lifecycle hooks.

    Class attributes (defaults used by :meth:`Trainer.extend`):
        trigger: default trigger, ``(1, 'iteration')``.
        priority: default priority, :data:`PRIORITY_READER`.
        name: set by the trainer when registered.
        rank0_only: ``True`` for extensions that write files or print and must
            run on rank 0 only under ``torch.distributed``.
    """

    trigger: TriggerLike = (1, 'iteration')
    priority: int = PRIORITY_READER
    name: Optional[str] = None
    rank0_only: bool = False

    @property
    def default_name(self) -> str:
        """Name used when none is given to ``extend``: the class name."""
        return type(self).__name__

    def __call__(self, trainer) -> None:
        raise NotImplementedError

    def initialize(self, trainer) -> None:
        """Called once before the first iteration (after snapshot autoload)."""

    def on_error(self, trainer, exc: BaseException, tb) -> None:
        """Called when the training loop raises; must not raise itself."""

    def on_preemption(self, trainer) -> None:
        """Called when a signal stops training, after the last complete iteration and
        before ``finalize`` (``extensions.snapshot`` writes its file here)."""

    def finalize(self, trainer=None) -> None:
        """Called once when training ends, normally or by an exception."""

    def state_dict(self) -> dict:
        """Progress to save in snapshots (tensors, numbers, strings, lists, dicts)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore progress saved by :meth:`state_dict`."""


class FunctionExtension(Extension):
    """Adapts a plain callable ``fn(trainer)`` to :class:`Extension`."""

    def __init__(self, fn: Callable, trigger: TriggerLike = None, priority: Optional[int] = None,
                 default_name: Optional[str] = None, initializer: Optional[Callable] = None,
                 finalizer: Optional[Callable] = None, on_error: Optional[Callable] = None) -> None:
        self._fn = fn
        functools.update_wrapper(self, fn, updated=())
        self.trigger = trigger if trigger is not None else getattr(fn, 'trigger', (1, 'iteration'))
        self.priority = priority if priority is not None else getattr(fn, 'priority', PRIORITY_READER)
        self._default_name = default_name or getattr(fn, 'default_name', None) \
            or getattr(fn, '__name__', type(fn).__name__)
        self._initializer = initializer
        self._finalizer = finalizer
        self._on_error = on_error

    @property
    def default_name(self) -> str:
        return self._default_name

    def __call__(self, trainer) -> None:
        return self._fn(trainer)

    def initialize(self, trainer) -> None:
        if self._initializer is not None:
            self._initializer(trainer)

    def finalize(self, trainer=None) -> None:
        if self._finalizer is not None:
            self._finalizer(trainer)

    def on_error(self, trainer, exc, tb) -> None:
        if self._on_error is not None:
            self._on_error(trainer, exc, tb)

    def state_dict(self) -> dict:
        fn = getattr(self._fn, 'state_dict', None)
        return fn() if fn is not None else {}

    def load_state_dict(self, state: dict) -> None:
        fn = getattr(self._fn, 'load_state_dict', None)
        if fn is not None:
            fn(state)


def make_extension(trigger: TriggerLike = None, default_name: Optional[str] = None,
                   priority: Optional[int] = None, finalizer: Optional[Callable] = None,
                   initializer: Optional[Callable] = None,
                   on_error: Optional[Callable] = None) -> Callable[[Callable], Extension]:
    """Decorator that turns a function ``fn(trainer)`` into an :class:`Extension`.

    Args:
        trigger: default trigger; ``(1, 'iteration')`` if None.
        default_name: default name; the function's name if None.
        priority: default priority; :data:`PRIORITY_READER` if None.
        finalizer, initializer, on_error: optional lifecycle callbacks taking
            ``(trainer)`` (``on_error`` takes ``(trainer, exc, tb)``).
    """
    def decorator(fn: Callable) -> Extension:
        return FunctionExtension(fn, trigger, priority, default_name,
                                 initializer, finalizer, on_error)
    return decorator


def as_extension(obj: Any) -> Extension:
    """Normalise any extension-like object (Extension or callable) to an Extension."""
    if isinstance(obj, Extension):
        return obj
    if callable(obj):
        return FunctionExtension(obj)
    raise TypeError(f'an extension must be an Extension or a callable taking the trainer, '
                    f'got {type(obj).__name__}')
