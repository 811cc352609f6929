"""Chainer's ``serialize(serializer)`` protocol over plain dicts, for snapshots.

A Chainer-style extension saves and restores its progress with one method::

    def serialize(self, serializer):
        self.count = serializer('count', self.count)

:func:`save_by_serialize` runs it with a saving serializer and returns a state dict
(tensors, numbers, strings, lists, dicts: ``torch.load(weights_only=True)`` reads it);
:func:`load_by_serialize` runs it with a loading one. NumPy arrays are saved as tensors
and copied back into the array given at load time, as Chainer's deserializers do.
"""
from __future__ import annotations

from typing import Any, Callable, Dict

import numpy
import torch

Serialize = Callable[[Any], None]


def _saved(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, numpy.ndarray):
        return torch.from_numpy(numpy.array(value))
    if isinstance(value, numpy.generic):
        return value.item()
    return value


def _restored(saved: Any, value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        with torch.no_grad():
            value.copy_(torch.as_tensor(saved))
        return value
    if isinstance(value, numpy.ndarray):
        numpy.copyto(value, numpy.asarray(saved))
        return value
    if value is None or isinstance(saved, type(value)):
        return saved
    if isinstance(saved, torch.Tensor):
        saved = saved.item() if saved.numel() == 1 else saved.tolist()
    return type(value)(saved)


class DictSerializer:
    """Saving serializer: ``serializer(key, value)`` records ``value`` and returns it;
    ``serializer['child']`` is the serializer of a nested dict."""

    def __init__(self, target: Dict[str, Any]) -> None:
        self.target = target

    def __getitem__(self, key: str) -> 'DictSerializer':
        return DictSerializer(self.target.setdefault(key, {}))

    def __call__(self, key: str, value: Any) -> Any:
        self.target[key] = _saved(value)
        return value


class DictDeserializer:
    """Loading serializer: ``serializer(key, value)`` returns the saved value (copied into
    ``value`` when it is an array or tensor); a key that was not saved returns ``value``."""

    def __init__(self, source: Dict[str, Any]) -> None:
        self.source = source

    def __getitem__(self, key: str) -> 'DictDeserializer':
        child = self.source.get(key)
        return DictDeserializer(child if isinstance(child, dict) else {})

    def __call__(self, key: str, value: Any) -> Any:
        if key not in self.source:
            return value
        return _restored(self.source[key], value)


def save_by_serialize(serialize: Serialize) -> dict:
    """The state that ``serialize(serializer)`` writes to a saving serializer."""
    state: Dict[str, Any] = {}
    serialize(DictSerializer(state))
    return state


def load_by_serialize(serialize: Serialize, state: dict) -> None:
    """Restore ``state`` (from :func:`save_by_serialize`) through ``serialize``."""
    serialize(DictDeserializer(state))
