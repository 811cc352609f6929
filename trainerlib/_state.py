"""Helpers for objects that may or may not have ``state_dict``/``load_state_dict``."""
from __future__ import annotations

import sys
from typing import Any


def _plain(obj: Any) -> Any:
    """``obj`` without ``torch.compile`` wrappers: its state has the plain keys (no
    ``_orig_mod.``), so a snapshot loads compiled or not. TorchDynamo is not imported
    here: until it is, nothing can have been compiled."""
    eval_frame = sys.modules.get('torch._dynamo.eval_frame')
    while eval_frame is not None and isinstance(obj, eval_frame.OptimizedModule):
        obj = obj._orig_mod
    return obj


def state_of(obj: Any) -> dict:
    """``obj.state_dict()`` if it has one, else ``{}`` (a compiled module: its plain one's)."""
    fn = getattr(_plain(obj), 'state_dict', None)
    return fn() if fn is not None else {}


def load_into(obj: Any, state: dict) -> None:
    """``obj.load_state_dict(state)`` if it has one; ignores objects without state."""
    fn = getattr(_plain(obj), 'load_state_dict', None)
    if fn is not None and state is not None:
        fn(state)


def guess_previous(trigger: Any) -> None:
    """Tell ``trigger`` that the position of its previous call is unknown (a snapshot
    has no state for it), if it keeps one: its next call guesses it from the updater,
    as Chainer's triggers do when their saved position is missing."""
    fn = getattr(trigger, 'guess_previous', None)
    if fn is not None:
        fn()
