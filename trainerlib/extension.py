"""The Extension interface: everything the Trainer runs around the update."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from trainerlib.dict_serializer import load_by_serialize, save_by_serialize

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
        """Called once when training ends, normally or by an exception.

        Chainer's form ``finalize(self)`` (no trainer) works too: the trainer looks at
        the signature once, when the extension is registered.
        """

    def state_dict(self) -> dict:
        """Progress to save in snapshots (tensors, numbers, strings, lists, dicts).

        By default: what Chainer's ``serialize(serializer)`` writes, if the subclass
        defines one, else nothing.
        """
        serialize = getattr(self, 'serialize', None)
        return save_by_serialize(serialize) if serialize is not None else {}

    def load_state_dict(self, state: dict) -> None:
        """Restore progress saved by :meth:`state_dict` (through ``serialize`` if the
        subclass defines one)."""
        serialize = getattr(self, 'serialize', None)
        if serialize is not None:
            load_by_serialize(serialize, state)


_REMOVED_ARGUMENTS = {
    'invoke_before_training': 'invoke_before_training has been removed since Chainer '
                              'v2.0.0. Use initializer= instead.',
}


def check_removed_arguments(kwargs: Dict[str, Any], where: str) -> None:
    """Chainer's errors for keyword arguments it removed or never had.

    Raises:
        ValueError: an argument Chainer removed (``invoke_before_training``).
        TypeError: any other unexpected keyword argument.
    """
    for name in kwargs:
        if name in _REMOVED_ARGUMENTS:
            raise ValueError(_REMOVED_ARGUMENTS[name])
    if kwargs:
        raise TypeError(f'{where}() got unexpected keyword argument(s) {", ".join(kwargs)}')


def make_extension(trigger: TriggerLike = None, default_name: Optional[str] = None,
                   priority: Optional[int] = None, finalizer: Optional[Callable] = None,
                   initializer: Optional[Callable] = None, on_error: Optional[Callable] = None,
                   **kwargs: Any) -> Callable[[Callable], Callable]:
    """Decorator that makes a function ``fn(trainer)`` an extension, as Chainer's does.

    It returns the function itself with the attributes ``trigger``, ``default_name``,
    ``priority``, ``initialize``, ``finalize`` and ``on_error`` set; the trainer adapts
    it when it is registered (see :class:`FunctionExtension`).

    Args:
        trigger: default trigger; ``(1, 'iteration')`` if None.
        default_name: default name; the function's name if None.
        priority: default priority; :data:`PRIORITY_READER` if None.
        finalizer: called when training ends, as ``finalizer()`` (Chainer) or
            ``finalizer(trainer)``.
        initializer: called as ``initializer(trainer)`` before the first iteration.
        on_error: called as ``on_error(trainer, exc, tb)`` when training raises.

    Raises:
        ValueError: ``invoke_before_training=`` (removed in Chainer v2).
        TypeError: any other unknown keyword argument.
    """
    if kwargs:
        check_removed_arguments(kwargs, 'make_extension')
    trigger = Extension.trigger if trigger is None else trigger
    priority = Extension.priority if priority is None else priority

    def decorator(ext: Callable) -> Callable:
        ext.trigger = trigger
        ext.default_name = default_name or getattr(ext, '__name__', type(ext).__name__)
        ext.priority = priority
        ext.finalize = finalizer
        ext.on_error = on_error
        ext.initialize = initializer
        return ext
    return decorator


# the adapter of non-Extension callables (it subclasses Extension, defined above)
from trainerlib.function_extension import FunctionExtension, as_extension  # noqa: E402

__all__ = ['PRIORITY_EDITOR', 'PRIORITY_READER', 'PRIORITY_SNAPSHOT', 'PRIORITY_WRITER',
           'Extension', 'FunctionExtension', 'TriggerLike', 'as_extension',
           'check_removed_arguments', 'make_extension']
