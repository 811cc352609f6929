"""Autoload of snapshot sets on W ranks: agree on the newest set every rank can load.

At ``initialize`` (every rank; see :mod:`trainerlib.distributed.commit` for the layout):

1. rank 0 lists the committed sets (main files the template produces, ordered by the
   iteration in their header) and the damaged main files, and broadcasts the list (file
   systems may disagree on what exists);
2. every rank deletes its orphan rank files, then checks its own rank file of each set
   (present, size and sha256 as the header records); the problems are gathered, so
   every rank skips the same sets and warns about the same files;
3. newest first, every rank parses its state (rank r: the main file's models and
   optimizers + its rank file) and checks it fits; ``control_allreduce(MIN)`` of the
   status; all OK: apply; a damaged file: the next set; a mismatch: refused everywhere;
4. none loadable but some exist: :class:`SnapshotError` on every rank.

A set written with another world size (or by one process) is resumed from rank 0's
state on every rank, the per-rank random streams re-derived, the extensions' partial
sums merged on rank 0 (:mod:`trainerlib.distributed.reshard`), with a warning that the
run will not be bit-identical (the iterators refuse a global batch they cannot keep).
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Dict, List, Optional, Tuple

import torch

from trainerlib.distributed import commit
from trainerlib.distributed.reshard import resharded_state
from trainerlib.distributed.seeding import rank_seed
from trainerlib.errors import SnapshotError, SnapshotMismatchError
from trainerlib.serialization import load_state, read_header

_MISMATCH, _DAMAGED, _OK = 0, 1, 2


def _listing(snap: Any, out: str) -> dict:
    """Rank 0: committed sets (oldest first) with their headers, damaged main files."""
    paths, damaged = snap._existing(out)
    sets: List[Tuple[str, Optional[dict]]] = []
    for path in paths:
        try:
            sets.append((os.path.basename(path), read_header(path).get('set')))
        except (SnapshotError, OSError) as e:
            damaged.append((path, e))
    return {'sets': sets,
            'damaged': [(os.path.basename(p), str(e)) for p, e in damaged]}


def _own_problem(comm: Any, out: str, name: str, header: Optional[dict]) -> Optional[str]:
    """What is wrong with this rank's file of set ``name`` (None: nothing)."""
    if comm.rank == 0 or not header or header.get('world_size') != comm.size:
        return None     # rank 0's state is the main file; another W resumes from it
    record = header.get('ranks', {}).get(str(comm.rank))
    if not record:
        return f'its header records no file of rank {comm.rank}'
    path = os.path.join(commit.ranks_dir(os.path.join(out, name)), record['file'])
    try:
        size, digest = commit.file_digest(path)
    except OSError as e:
        return f'the file of rank {comm.rank} {path!r} cannot be read ({e.strerror or e})'
    if (size, digest) != (record['size'], record['sha256']):
        return (f'the file of rank {comm.rank} {path!r} is damaged ({size} bytes, sha256 '
                f'{digest[:12]}…; the set recorded {record["size"]} bytes, '
                f'{record["sha256"][:12]}…)')
    return None


def _prepare(trainer: Any, comm: Any, out: str, name: str, header: Optional[dict]) -> dict:
    """This rank's state from set ``name``, checked to fit the trainer (nothing loaded)."""
    main_path = os.path.join(out, name)
    state = load_state(main_path)
    if comm.rank and header and header.get('world_size') == comm.size:
        record = header['ranks'][str(comm.rank)]
        part = load_state(os.path.join(commit.ranks_dir(main_path), record['file']))
        if not isinstance(part, dict) or not isinstance(part.get('updater'), dict):
            raise SnapshotError(f'the file of rank {comm.rank} of {main_path!r} holds no '
                                'trainer state')
        state = commit.merged_state(state, part)
    missing = [k for k in ('updater', 'extensions', 'triggers', 'rng')
               if not isinstance(state, dict) or k not in state]
    if missing:
        raise SnapshotMismatchError(f'is not a trainer snapshot (it has no {", ".join(missing)})',
                                    'choose another output directory', where=main_path)
    try:
        trainer.updater.check_state_dict(state['updater'])
    except SnapshotMismatchError as e:
        raise SnapshotMismatchError(e.reason, e.fix, where=f'snapshot {main_path}') from None
    return state


def _rederive_streams(comm: Any, iteration: int) -> None:
    import random

    import numpy as np
    seed = rank_seed(rank_seed(torch.initial_seed(), iteration), comm.rank)
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)


def initialize(snap: Any, trainer: Any, comm: Any) -> None:
    """Collective ``Snapshot.initialize`` of a trainer snapshot on W > 1 ranks."""
    out = trainer.out
    listing = comm.bcast_obj(_listing(snap, out) if comm.rank == 0 else None)
    sets = dict(listing['sets'])
    existing = list(sets) + [name for name, _ in listing['damaged']]
    orphans = commit.clean_orphans(comm, out, snap._pattern.fullmatch, sets, existing)
    problems = {}
    if snap.autoload:
        for name, header in listing['sets']:
            problem = _own_problem(comm, out, name, header)
            if problem:
                problems[name] = problem
    gathered = comm.allgather_obj(problems)      # also: every rank has cleaned its orphans
    if comm.rank == 0:
        for directory in orphans:
            shutil_rmdir(directory)
    if not snap.autoload:
        return
    skipped = [f'{name}: {error}' for name, error in listing['damaged']]
    for name, error in listing['damaged']:
        warnings.warn(f'autoload skipped {os.path.join(out, name)}: {error}')
    for name, header in reversed(listing['sets']):
        bad = [f'rank {r}: {p[name]}' for r, p in enumerate(gathered) if name in p]
        if bad:
            skipped.append(f'{name}: {"; ".join(bad)}')
            warnings.warn(f'autoload skipped {os.path.join(out, name)}: {"; ".join(bad)}')
            continue
        status, error, state = _OK, None, None
        try:
            state = _prepare(trainer, comm, out, name, header)
        except SnapshotMismatchError as e:
            status, error = _MISMATCH, e
        except SnapshotError as e:
            status, error = _DAMAGED, e
        agreed = int(comm.control_allreduce(torch.tensor([status], dtype=torch.int64),
                                            'min').item())
        if agreed == _OK:
            _apply(trainer, comm, out, name, header, state)
            return
        reasons = comm.allgather_obj(None if error is None else str(error))
        said = '; '.join(f'rank {r}: {m}' for r, m in enumerate(reasons) if m)
        if agreed == _MISMATCH:   # made by another setup: never fall back
            if isinstance(error, SnapshotMismatchError):
                raise SnapshotMismatchError(error.reason, f'{error.fix}, or choose another '
                                            'output directory', where=f'autoload: {error.where}')
            raise SnapshotMismatchError(f'does not fit this run ({said})',
                                        'choose another output directory',
                                        where=f'autoload: {os.path.join(out, name)}')
        skipped.append(f'{name}: {said}')
        warnings.warn(f'autoload skipped {os.path.join(out, name)}: {said}')
    if skipped:   # starting over would soon delete them (n_retains): refuse on every rank
        raise SnapshotError(f'autoload: none of the snapshot sets in {out!r} could be loaded '
                            f'({"; ".join(skipped)}); remove them or choose another output '
                            'directory')


def _apply(trainer: Any, comm: Any, out: str, name: str, header: Optional[dict],
           state: dict) -> None:
    saved_world = (header or {}).get('world_size', 1)
    if saved_world != comm.size:
        state = resharded_state(trainer, state, os.path.join(out, name), header, comm.rank)
    trainer.load_state_dict(state)
    if saved_world != comm.size:
        _rederive_streams(comm, trainer.updater.iteration)
        warnings.warn(f'autoload: {os.path.join(out, name)} was written by {saved_world} '
                      f'rank(s) and is resumed on {comm.size}: every rank continues from rank '
                      "0's state with re-derived random streams, so the run is not "
                      'bit-identical to an uninterrupted one')


def shutil_rmdir(directory: str) -> None:
    """Remove an orphan set directory (its rank files were deleted by their ranks)."""
    try:
        os.rmdir(directory)
    except OSError:   # files of ranks this run does not have (a larger old W)
        commit.remove_rank_files(directory[:-len(commit.SUFFIX)])
