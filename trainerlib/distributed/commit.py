"""Snapshot sets of a data-parallel run: rank files, digests, the commit (DESIGN §11).

Layout for a trainer snapshot ``out/<name>`` of a W-rank run (W > 1):

* every rank r >= 1 writes ``out/<name>.ranks/rank{r}_iter{i}``: its own
  ``trainer.state_dict()`` without the updater's models and optimizers (its RNG
  streams, iterators, extensions' and triggers' states, observation), synchronously
  and fsynced (atomic rename);
* their names, sizes and sha256 digests travel to rank 0 in one ``allgather_obj`` on
  the control group;
* rank 0 writes ``out/<name>`` (its full state; the header's ``set`` records W, the
  global batch and each rank file's record), possibly from a thread. Its atomic
  rename is the **commit**: a kill at any instant leaves the previous committed set,
  plus at most orphan rank files, which are ignored and cleaned at start.

Retention deletes a main file before its rank files (a half-deleted set is
uncommitted). The iteration is part of a rank file's name, so a template that names
one file (``'snapshot'``) never overwrites the rank files of the committed set.
Loading a set is in :mod:`trainerlib.distributed.commit_load`.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
from typing import Any, Dict, List, Optional

from trainerlib.errors import OutputDirError
from trainerlib.serialization import _PARTIAL, dump_state, write_file

SUFFIX = '.ranks'
_RANK_FILE = re.compile(r'^rank(\d+)_iter(\d+)$')
_REPLICATED = ('models', 'optimizers', 'optimizer_records')   # the updater's, in the main file


def ranks_dir(main_path: str) -> str:
    """The directory holding the rank files of the set committed by ``main_path``."""
    return main_path + SUFFIX


def rank_file_name(rank: int, iteration: int) -> str:
    return f'rank{rank}_iter{iteration}'


def per_rank_state(state: Dict[str, Any]) -> Dict[str, Any]:
    """A trainer state without the replicated models and optimizers (what a rank file holds)."""
    part = dict(state)
    part['updater'] = {k: v for k, v in state['updater'].items() if k not in _REPLICATED}
    return part


def merged_state(main: Dict[str, Any], part: Dict[str, Any]) -> Dict[str, Any]:
    """The state rank r resumes from: its own ``part`` plus the main file's replicated state
    (models, optimizers) and rank 0's clock."""
    state = dict(part)
    state['updater'] = dict(part['updater'])
    for key in _REPLICATED:
        if key in main['updater']:
            state['updater'][key] = main['updater'][key]
    state['elapsed_time'] = main['elapsed_time']
    return state


def digest_of(data: Any) -> str:
    return hashlib.sha256(data).hexdigest()


def file_digest(path: str) -> tuple:
    """``(size, sha256)`` of a file's bytes."""
    h, size = hashlib.sha256(), 0
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def global_batch(trainer: Any) -> Dict[str, int]:
    """The global batch of each iterator that records one (``{name: B}``)."""
    iterators = getattr(trainer.updater, '_iterators', {})
    return {name: int(it.global_batch_size) for name, it in iterators.items()
            if isinstance(getattr(it, 'global_batch_size', None), int)}


def write_set(comm: Any, trainer: Any, main_path: str, iteration: int) -> Optional[dict]:
    """Collective: ranks >= 1 write their rank files; the records are gathered.

    Returns:
        On rank 0 the ``set`` header for the main file (which rank 0 then writes: the
        commit); None on the other ranks.

    Raises:
        OutputDirError: on every rank, when some rank could not write its file (nothing
            is committed; the previous set stays).
    """
    record: Optional[dict] = None
    if comm.rank:
        name = rank_file_name(comm.rank, iteration)
        try:
            data = dump_state(per_rank_state(trainer.state_dict()), iteration=iteration)
            directory = ranks_dir(main_path)
            os.makedirs(directory, exist_ok=True)
            write_file(data, os.path.join(directory, name))
            record = {'file': name, 'size': len(data), 'sha256': digest_of(data)}
        except OSError as e:
            record = {'error': f'rank {comm.rank} could not write '
                               f'{os.path.join(ranks_dir(main_path), name)!r} ({e.strerror or e})'}
    records = comm.allgather_obj(record)
    errors = [r['error'] for r in records if r and 'error' in r]
    if errors:
        raise OutputDirError(f'snapshot {main_path!r} not committed: {"; ".join(errors)}; the '
                             'previous snapshots are intact')
    if comm.rank:
        return None
    return {'world_size': int(comm.size), 'global_batch_size': global_batch(trainer),
            'ranks': {str(r): rec for r, rec in enumerate(records) if r}}


def remove_rank_files(main_path: str) -> None:
    """Retention: delete a set's rank files (after its main file was deleted)."""
    shutil.rmtree(ranks_dir(main_path), ignore_errors=True)


def prune_stale(main_path: str, header: Dict[str, Any]) -> None:
    """After a commit: delete rank files in the set's directory that the new main file does
    not name (older iterations under a template that names one file)."""
    directory = ranks_dir(main_path)
    keep = {rec['file'] for rec in header.get('ranks', {}).values()}
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if _RANK_FILE.match(name) and name not in keep:
            try:
                os.remove(os.path.join(directory, name))
            except OSError:
                pass


def clean_orphans(comm: Any, out: str, is_main_name: Any, sets: Dict[str, Optional[dict]],
                  existing: List[str]) -> List[str]:
    """Delete this rank's files that no committed set names; returns the orphan directories
    (``<name>.ranks`` without a main file), which rank 0 removes once all ranks cleaned.

    ``sets``: readable main files (name -> their ``set`` header); ``existing``: every main
    file name rank 0 sees (damaged ones too: their rank files are left alone).
    """
    orphans: List[str] = []
    try:
        names = os.listdir(out)
    except OSError:
        return orphans
    mine = f'rank{comm.rank}_'
    for dirname in names:
        main = dirname[:-len(SUFFIX)]
        directory = os.path.join(out, dirname)
        if not dirname.endswith(SUFFIX) or not is_main_name(main) or not os.path.isdir(directory):
            continue
        if main not in existing:
            orphans.append(directory)
            keep = set()
        elif main in sets:
            header = sets[main] or {}
            keep = {rec['file'] for rec in header.get('ranks', {}).values()}
        else:       # a damaged main file: leave its set as it is
            continue
        for name in os.listdir(directory):
            partial = _PARTIAL.match(name)
            own = (partial.group(1) if partial else name).startswith(mine)
            if own and (partial or (_RANK_FILE.match(name) and name not in keep)):
                try:
                    os.remove(os.path.join(directory, name))
                except OSError:
                    pass
    return orphans
