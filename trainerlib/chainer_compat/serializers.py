"""``chainer.serializers``: ``load_npz``/``save_npz`` as trainerlib's snapshot files.

The files are trainerlib snapshots (torch files read with ``weights_only=True``), not
NumPy ``.npz`` archives: a Chainer ``.npz`` does not load here.
"""
from __future__ import annotations

from typing import Any

from trainerlib.serialization import load_snapshot, save_state
from trainerlib.snapshot_compat import target_record


def save_npz(file: str, obj: Any, compression: bool = True) -> None:
    """Save ``obj.state_dict()`` (a trainer, a module, an optimizer …) to ``file``,
    atomically; ``compression`` is accepted for Chainer's signature and ignored."""
    save_state(obj.state_dict(), file, target=target_record(obj))


def load_npz(file: str, obj: Any, path: str = '', strict: bool = True) -> None:
    """Load ``file`` into ``obj`` (:func:`trainerlib.serialization.load_snapshot`).

    Raises:
        ValueError: ``path`` or ``strict=False`` (Chainer's partial loads) was given.
    """
    if path or not strict:
        raise ValueError('load_npz(path=..., strict=False) is not supported: load the file with '
                         'trainerlib.serialization.load_state and pick the entries you need')
    load_snapshot(file, obj)


__all__ = ['load_npz', 'save_npz']
