"""``snapshot`` and ``snapshot_object``: Chainer's factories of the ``Snapshot`` extension."""
from __future__ import annotations

from typing import Any, Callable, Optional

from trainerlib.extensions._snapshot import Snapshot


def snapshot(filename: str = 'snapshot_iter_{.updater.iteration}', *, target: Any = None,
             n_retains: int = -1, autoload: bool = False, snapshot_on_error: bool = False,
             condition: Optional[Callable[[], bool]] = None, writer: Any = None,
             savefun: Optional[Callable] = None,
             background: Optional[bool] = None) -> Snapshot:
    """Snapshot of the whole trainer (or ``target``), as Chainer's ``extensions.snapshot``.

    The file holds every model, optimizer, iterator position, trigger and
    extension state, the RNG states and the elapsed time, so that training
    resumes exactly. It is written atomically and loads with
    ``weights_only=True``. Default trigger ``(1, 'epoch')``.

    Args:
        filename: ``str.format`` template applied to the trainer. Its fields must
            give non-negative integers (``{.updater.iteration}``,
            ``{.updater.epoch}``); a template without fields (``'snapshot'``) names
            one file, rewritten each time. A template that cannot be formatted
            raises :class:`~trainerlib.errors.ConfigError`: its syntax here, its
            fields when training starts (before anything is written).
        target: object with ``state_dict`` (default: the trainer).
        n_retains: keep only the newest N snapshots by iteration (-1: keep all),
            counting the one just written (deleted after the new file is written).
        autoload: at start, load the newest snapshot in ``out`` (before any
            other extension initializes). Damaged ones are skipped with a warning;
            if there are snapshots but none loads, raise :class:`SnapshotError`.
            One made with another optimizer class, param-group layout or model
            structure is refused at once
            (:class:`~trainerlib.errors.SnapshotMismatchError`, nothing loaded).
        snapshot_on_error: also write a snapshot when training raises (except for a
            :class:`~trainerlib.errors.NonFiniteError`: a diverged state is never
            saved, nor when the run failed before training, e.g. autoload refused).
        condition: optional ``fn() -> bool``; skip writing when it returns False.
        writer: how files are written (Chainer's argument): a writer of
            :mod:`extensions.snapshot_writers` or any ``writer(filename, outdir,
            target)``, called with the file's bytes (see there). Default:
            ``ThreadWriter()`` — **unlike Chainer** (``SimpleWriter``), files are
            written from a thread while training goes on, the state having been
            serialized (tensors copied to the CPU) first, in the training thread.
        savefun: Chainer's argument, kept for its signature: ``None``,
            ``torch.save`` or ``trainerlib.serialization.save_state`` (the format is
            always trainerlib's); anything else raises
            :class:`~trainerlib.errors.ConfigError`. Not with ``writer``
            (``TypeError``, as in Chainer).
        background: ``False`` is ``writer=SimpleWriter()``; not with ``writer``.

    Snapshots are the files the template produces exactly (``snapshot_iter_8``,
    not ``snapshot_iter_08``, ``snapshot_iter_8.bak`` or ``snapshot_iter_8 (copy)``:
    those are never loaded nor deleted), ordered by the iteration recorded in their
    header (read without loading the tensors), not by modification time, so copies
    made by ``cp -r`` or ``rsync`` keep their order. When a signal preempts training
    (see :mod:`trainerlib.preemption`) a trainer snapshot is written after the last
    complete iteration. Files left half-written by a killed process (hidden ``.tmp``
    files) are deleted at start. Files get the permissions ``open`` would give
    (``0o666`` less the umask). A background write's error is raised at the next
    snapshot (or at the end of training); the file it failed to write is absent.

    Under a communicator of W > 1 ranks a trainer snapshot is a collective that
    writes a *set* (see :mod:`trainerlib.distributed.commit`): each rank r >= 1 writes
    ``<name>.ranks/rank{r}_iter{i}`` (its RNG streams, iterators, extension and
    trigger states, observation), then rank 0 writes ``<name>`` (its full state and a
    header with W, the global batch and each rank file's size and sha256) through the
    writer: its atomic rename commits the set (one set at a time, whatever the
    writer). Autoload agrees across ranks on the newest set every rank can load and
    skips damaged ones with a warning on every rank; the main file alone loads in a
    single process (``load_snapshot``). A single process writes exactly one file.
    """
    return Snapshot(target, filename, n_retains, autoload, snapshot_on_error, condition,
                    background, writer=writer, savefun=savefun)


def snapshot_object(target: Any, filename: str, savefun: Optional[Callable] = None, *,
                    n_retains: int = -1, autoload: bool = False,
                    snapshot_on_error: bool = False,
                    condition: Optional[Callable[[], bool]] = None, writer: Any = None,
                    background: Optional[bool] = None) -> Snapshot:
    """Snapshot of one object (a model, an optimizer …): ``target.state_dict()``.

    Load it back with ``trainerlib.serialization.load_snapshot(path, target)``.
    Arguments as :func:`snapshot` (``savefun`` is third, as in Chainer).
    """
    return Snapshot(target, filename, n_retains, autoload, snapshot_on_error, condition,
                    background, writer=writer, savefun=savefun)
