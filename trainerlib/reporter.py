"""Reporter: collects observed values under observer-prefixed names (``main/loss``).

Reported tensors are detached and stored as they are: nothing here converts a
tensor to a Python number, so reporting never synchronises with the device.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Dict, Iterable, Iterator, Mapping, Tuple

import torch

from trainerlib.summary import DictSummary, Summary  # noqa: F401  (re-exported)

_local = threading.local()


def _stack() -> list:
    stack = getattr(_local, 'reporters', None)
    if stack is None:
        stack = _local.reporters = []
    return stack


class Reporter:
    """Holds the current observation dict and the names of registered observers.

    Attributes:
        observation: the dict that :meth:`report` writes into.
        keep_graph: store reported tensors with their autograd graph (Chainer's
            ``config.keep_graph_on_report``; ``DumpGraph`` sets it until it has drawn
            the graph). Default False: tensors that require grad are detached.
    """

    def __init__(self) -> None:
        self._prefixes: Dict[int, str] = {}   # id(observer) -> 'name/'
        self.observation: Dict[str, Any] = {}
        self.keep_graph = False

    def __enter__(self) -> 'Reporter':
        _stack().append(self)
        return self

    def __exit__(self, *exc) -> None:
        _stack().pop()

    @contextlib.contextmanager
    def scope(self, observation: Dict[str, Any]) -> Iterator[None]:
        """Make this the current reporter, writing into ``observation``."""
        old = self.observation
        self.observation = observation
        self.__enter__()
        try:
            yield
        finally:
            self.__exit__()
            self.observation = old

    def add_observer(self, name: str, observer: Any) -> None:
        """Register ``observer`` so that its reports are prefixed by ``name/``."""
        self._prefixes[id(observer)] = name + '/'

    def add_observers(self, prefix: str, observers: Iterable[Tuple[str, Any]]) -> None:
        """Register ``(name, observer)`` pairs under ``prefix + name``."""
        for name, observer in observers:
            self._prefixes[id(observer)] = prefix + name + '/'

    def add_module(self, name: str, module: torch.nn.Module) -> None:
        """Register a module and its submodules: ``name``, ``name/sub/child`` …"""
        self._prefixes[id(module)] = name + '/'
        for sub, child in module.named_modules():
            if sub:
                self._prefixes.setdefault(id(child), f"{name}/{sub.replace('.', '/')}/")

    def report(self, values: Mapping[str, Any], observer: Any = None) -> None:
        """Write ``values`` into the observation, prefixed by the observer's name.

        Tensors that require grad are detached (no copy, no sync) unless
        :attr:`keep_graph` is set.
        """
        if observer is not None:
            try:
                prefix = self._prefixes[id(observer)]
            except KeyError:
                raise KeyError(f'the observer {type(observer).__name__} is not registered to this '
                               'reporter; register it with add_observer(name, observer)') from None
        else:
            prefix = ''
        observation, detach = self.observation, not self.keep_graph
        for key, value in values.items():
            if detach and isinstance(value, torch.Tensor) and value.requires_grad:
                value = value.detach()
            observation[prefix + key] = value


def get_current_reporter() -> Reporter:
    """The innermost active reporter (raises if there is none)."""
    stack = _stack()
    if not stack:
        raise RuntimeError('no reporter is active; use `with reporter.scope(observation):`')
    return stack[-1]


def report(values: Mapping[str, Any], observer: Any = None) -> None:
    """Report ``values`` to the current reporter; does nothing if none is active."""
    stack = getattr(_local, 'reporters', None)
    if stack:
        stack[-1].report(values, observer)


@contextlib.contextmanager
def report_scope(observation: Dict[str, Any]) -> Iterator[None]:
    """Redirect reports of the current reporter into ``observation`` for a block."""
    current = get_current_reporter()
    with current.scope(observation):
        yield

