"""Snapshot files: atomic writes and safe (``weights_only``) loads.

A snapshot file holds ``{'format': 'trainerlib', 'version': …, 'iteration': …,
'target': …, 'state': …}`` where ``state`` is made of tensors, numbers, strings,
lists and dicts only, so loading it with ``torch.load(weights_only=True)`` can
never run code. ``iteration`` (the trainer's iteration when it was written, or
None) and ``target`` (what the state was taken from, see
:func:`trainerlib.snapshot_compat.target_record`) are read by :func:`read_header`
without loading the tensors.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
import threading
from typing import IO, Any, Callable, Iterator, Mapping, Optional

import torch

from trainerlib.errors import SnapshotError, SnapshotMismatchError
from trainerlib.snapshot_compat import check_compatible

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
        if hasattr(os, 'fchmod'):  # mkstemp makes 0600 files; make it as open() would
            os.fchmod(fd, 0o666 & ~current_umask())
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


_UMASK_LOCK = threading.Lock()
_umask_cache: Optional[int] = None


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows.

    Linux reports it in ``/proc/self/status``. Elsewhere it can only be read by
    setting it (``os.umask`` is process-global): that is done once, briefly setting
    the restrictive ``0o077`` (a file another thread creates meanwhile is private,
    never more open), and the value is remembered.
    """
    global _umask_cache
    try:
        with open('/proc/self/status', encoding='ascii', errors='replace') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        if _umask_cache is None:
            _umask_cache = os.umask(0o077)
            os.umask(_umask_cache)
        return _umask_cache


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


def dump_state(state: Any, *, iteration: Optional[int] = None,
               target: Optional[Mapping[str, Any]] = None,
               snapshot_set: Optional[Mapping[str, Any]] = None) -> memoryview:
    """The bytes of a snapshot file holding ``state``, serialized now.

    The result shares nothing with ``state``: training may go on changing it while
    the bytes are written (see ``extensions.snapshot``). Tensors are saved on the CPU.
    Serializing here, in the training thread, and leaving only the file I/O (which
    releases the GIL) to a writer thread is what keeps a background snapshot cheap.

    Args:
        state: the state dict (tensors, numbers, strings, lists, dicts).
        iteration: the trainer's iteration, recorded in the header (autoload orders
            snapshots by it).
        target: :func:`~trainerlib.snapshot_compat.target_record` of the object the
            state was taken from (strings and integers), checked on load.
        snapshot_set: the header of a data-parallel snapshot set (world size, global
            batch, each rank file's name, size and sha256; see
            :mod:`trainerlib.distributed.commit`); omitted when None, so a single
            process writes exactly what it wrote before.
    """
    buffer = io.BytesIO()
    content = {'format': FORMAT, 'version': _version(), 'iteration': iteration,
               'target': dict(target) if target is not None else None}
    if snapshot_set is not None:
        content['set'] = dict(snapshot_set)
    content['state'] = _on_cpu(state)
    torch.save(content, buffer)
    return buffer.getbuffer()


def save_state(state: Any, path: str, *, iteration: Optional[int] = None,
               target: Optional[Mapping[str, Any]] = None) -> None:
    """Save a state dict as a versioned trainerlib snapshot file (atomically; arguments as
    :func:`dump_state`)."""
    write_file(dump_state(state, iteration=iteration, target=target), path)


_ZIP = b'PK\x03\x04'   # what torch.save writes
_FIX = 'delete or move it, or point at another snapshot'


def _has_zip_end(path: str) -> bool:
    """Whether the file ends with a zip archive's end record (a truncated one does not)."""
    try:
        with open(path, 'rb') as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - (22 + 65535)))   # the record + the longest comment
            return b'PK\x05\x06' in f.read()
    except OSError:
        return False


def _why_unloadable(path: str, head: bytes, error: Exception) -> str:
    """What is wrong with a file that ``torch.load(weights_only=True)`` refused, in words
    (torch's own message may advise ``weights_only=False``: it is never repeated)."""
    message = str(error)
    if 'GLOBAL' in message or 'Unsupported global' in message:
        return ('it contains pickled Python objects, not plain data (trainerlib refuses to '
                'load those: they could run code)')
    if not head:
        return 'it is empty'
    if head == _ZIP:
        if not _has_zip_end(path):
            return 'it is truncated (the end of its zip archive is missing)'
        if 'failed locating file' in message:
            return 'it is not a trainerlib snapshot (a zip archive, but not one torch.save wrote)'
        return 'it is corrupt (its zip archive or its pickled index is damaged)'
    if head[:1] == b'\x80':
        return ('it is corrupt or not a trainerlib snapshot (a bare pickle stream, not the zip '
                'archive torch.save writes)')
    return ('it is not a trainerlib snapshot (random bytes or another file format, not the '
            'zip archive torch.save writes)')


def _read(path: str, mmap: bool = False) -> dict:
    """The whole file content (header and state), checked to be a trainerlib snapshot.

    With ``mmap`` the tensors are mapped, not read: only the pickled structure is
    loaded (what :func:`read_header` needs).
    """
    if not os.path.isfile(path):
        raise SnapshotError(f'snapshot {path!r} does not exist; check the path')
    try:
        with open(path, 'rb') as f:
            head = f.read(4)
    except OSError as e:
        raise SnapshotError(f'snapshot {path!r} cannot be read ({e.strerror or e}); check its '
                            'permissions') from None
    try:
        content = torch.load(path, map_location='cpu', weights_only=True,
                             mmap=mmap and head == _ZIP)
    except Exception as e:  # garbage makes the unpickler fail in many ways (IndexError …)
        raise SnapshotError(f'snapshot {path!r} cannot be loaded safely: '
                            f'{_why_unloadable(path, head, e)}; {_FIX}') from None
    if not isinstance(content, dict) or content.get('format') != FORMAT or 'state' not in content:
        raise SnapshotError(f'{path!r} is not a trainerlib snapshot (no trainerlib header); '
                            'it was not written by trainerlib.serialization.save_state')
    return content


def read_header(path: str) -> dict:
    """The header of a snapshot file, without reading its tensors (memory-mapped load).

    Returns:
        ``{'format', 'version', 'iteration', 'target'}``; ``iteration`` and
        ``target`` are None when the file does not record them. For a trainer
        snapshot written before the header recorded it, ``iteration`` is the
        updater's.

    Raises:
        SnapshotError: as :func:`load_state`.
    """
    content = _read(path, mmap=True)
    header = {k: v for k, v in content.items() if k != 'state'}
    header.setdefault('iteration', None)
    header.setdefault('target', None)
    if header['iteration'] is None:
        updater = content['state'].get('updater') if isinstance(content['state'], dict) else None
        if isinstance(updater, dict) and isinstance(updater.get('iteration'), int):
            header['iteration'] = updater['iteration']
    return header


def load_state(path: str) -> Any:
    """Load the state saved by :func:`save_state` (``weights_only=True``, onto the CPU).

    Raises:
        SnapshotError: the file is missing, truncated, corrupt, not a trainerlib
            snapshot, or contains anything but plain data (e.g. pickled code); the
            one-line message says which and what to do.
    """
    return _read(path)['state']


def load_snapshot(path: str, target: Any) -> None:
    """Load a snapshot file into ``target`` (a Trainer, a module, an optimizer …).

    The trainerlib counterpart of ``chainer.serializers.load_npz(path, target)``.
    Whether the snapshot fits ``target`` (optimizer class, param groups, model
    keys and shapes) is checked before anything is loaded.

    Raises:
        SnapshotMismatchError: the snapshot was made for something else; one line,
            ``snapshot <path> <what differs>; <what to do>``.
        SnapshotError: the file cannot be loaded (see :func:`load_state`).
    """
    content = _read(path)
    state = content['state']
    header = content.get('set')
    if header and header.get('world_size', 1) > 1 and hasattr(target, 'extensions'):
        from trainerlib.distributed.reshard import resharded_state   # a W-rank set
        state = resharded_state(target, state, path, header, rank=0)
    try:
        check_compatible(target, state, content.get('target'))
        target.load_state_dict(state)
    except SnapshotMismatchError as e:
        raise SnapshotMismatchError(e.reason, e.fix, where=f'snapshot {path}') from None
    except SnapshotError:
        raise
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise SnapshotError(f'snapshot {path!r} does not match the {type(target).__name__} '
                            f'being resumed: {" ".join(str(e).split())}') from None
