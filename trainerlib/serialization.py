"""Snapshot files: atomic writes and safe (``weights_only``) loads.

A snapshot file holds ``{'format': 'trainerlib', 'version': …, 'state': …}``
where ``state`` is made of tensors, numbers, strings, lists and dicts only, so
loading it with ``torch.load(weights_only=True)`` can never run code.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from typing import IO, Any, Callable, Iterator

import torch

from trainerlib.errors import SnapshotError

FORMAT = 'trainerlib'


def _version() -> str:
    from trainerlib import __version__
    return __version__


@contextlib.contextmanager
def atomic_open(path: str, mode: str = 'wb', durable: bool = True) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success rename it over ``path``.

    Readers never see a partial file: a crash leaves either the old file or the
    new one. With ``durable`` the data (and the directory entry) are fsynced
    before and after the rename. On error the temporary file is removed and
    ``path`` is untouched.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp',
                               dir=directory)
    try:
        with os.fdopen(fd, mode, encoding=None if 'b' in mode else 'utf-8') as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        _fsync_dir(directory)


_PARTIAL = re.compile(r'^\.(.+)\.[^.]+\.tmp$')  # what atomic_open writes first


def remove_partial_files(directory: str, is_target: Callable[[str], bool]) -> None:
    """Delete temporary files that :func:`atomic_open` left in ``directory`` for the
    targets ``is_target(name)`` accepts (a process killed while writing them)."""
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        partial = _PARTIAL.match(name)
        if partial and is_target(partial.group(1)):
            try:
                os.remove(os.path.join(directory, name))
            except OSError:
                pass


def write_file(data: bytes, path: str) -> None:
    """Write ``data`` (bytes or a buffer) to ``path`` atomically and durably (see
    :func:`atomic_open`)."""
    with atomic_open(path) as f:
        f.write(data)


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_ATOMS = frozenset({int, float, bool, str, type(None)})


def _on_cpu(state: Any) -> Any:
    """``state`` with its tensors on the CPU: tensors on another device are copied,
    CPU tensors are shared; containers are rebuilt (a module's ``_metadata`` kept)."""
    if type(state) in _ATOMS:  # first: isinstance(x, torch.Tensor) is slow when false
        return state
    if isinstance(state, torch.Tensor):
        return state.detach() if state.device.type == 'cpu' else state.detach().to('cpu')
    if isinstance(state, dict):
        copy = type(state)()
        for key, value in state.items():
            copy[key] = _on_cpu(value)
        if hasattr(state, '_metadata'):  # a module's state_dict: keep its version info
            copy._metadata = state._metadata
        return copy
    if isinstance(state, (list, tuple)) and not hasattr(state, '_fields'):
        return type(state)(_on_cpu(v) for v in state)
    return state  # numbers, strings, None: immutable


def dump_state(state: Any) -> memoryview:
    """The bytes of a snapshot file holding ``state``, serialized now.

    The result shares nothing with ``state``: training may go on changing it while
    the bytes are written (see ``extensions.snapshot``). Tensors are saved on the CPU.
    Serializing here, in the training thread, and leaving only the file I/O (which
    releases the GIL) to a writer thread is what keeps a background snapshot cheap.
    """
    buffer = io.BytesIO()
    torch.save({'format': FORMAT, 'version': _version(), 'state': _on_cpu(state)}, buffer)
    return buffer.getbuffer()


def save_state(state: Any, path: str) -> None:
    """Save a state dict as a versioned trainerlib snapshot file (atomically)."""
    write_file(dump_state(state), path)


def load_state(path: str) -> Any:
    """Load the state saved by :func:`save_state` (``weights_only=True``, onto the CPU).

    Raises:
        SnapshotError: the file is missing, truncated, not a trainerlib
            snapshot, or contains anything but plain data (e.g. pickled code).
    """
    if not os.path.isfile(path):
        raise SnapshotError(f'snapshot {path!r} does not exist; check the path')
    try:
        content = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # garbage makes the unpickler fail in many ways (IndexError …)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SnapshotError(f'snapshot {path!r} cannot be loaded safely (truncated, corrupt, '
                            f'or not plain data): {first}') from None
    if not isinstance(content, dict) or content.get('format') != FORMAT or 'state' not in content:
        raise SnapshotError(f'{path!r} is not a trainerlib snapshot (no trainerlib header); '
                            'it was not written by trainerlib.serialization.save_state')
    return content['state']


def load_snapshot(path: str, target: Any) -> None:
    """Load a snapshot file into ``target`` (a Trainer, a module, an optimizer …).

    The trainerlib counterpart of ``chainer.serializers.load_npz(path, target)``.
    """
    state = load_state(path)
    try:
        target.load_state_dict(state)
    except SnapshotError:
        raise
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise SnapshotError(f'snapshot {path!r} does not match the {type(target).__name__} '
                            f'being resumed: {e}') from None
