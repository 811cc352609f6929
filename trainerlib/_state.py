"""Helpers for objects that may or may not have ``state_dict``/``load_state_dict``."""
from __future__ import annotations

from typing import Any


def state_of(obj: Any) -> dict:
    """``obj.state_dict()`` if it has one, else ``{}``."""
    fn = getattr(obj, 'state_dict', None)
    return fn() if fn is not None else {}


def load_into(obj: Any, state: dict) -> None:
    """``obj.load_state_dict(state)`` if it has one; ignores objects without state."""
    fn = getattr(obj, 'load_state_dict', None)
    if fn is not None and state is not None:
        fn(state)


def guess_previous(trigger: Any) -> None:
    """Tell ``trigger`` that the position of its previous call is unknown (a snapshot
    has no state for it), if it keeps one: its next call guesses it from the updater,
    as Chainer's triggers do when their saved position is missing."""
    fn = getattr(trigger, 'guess_previous', None)
    if fn is not None:
        fn()
