"""Resuming a snapshot set on another world size: each value of a partial sum counts once.

Every rank resumes from rank 0's state (the replicated parts and the iterators' global
position, see :mod:`trainerlib.distributed.commit_load`). The extensions' partial sums
(LogReport's, PlotReport's, MicroAverage's, a monitoring LRScheduler's) are per rank:
copied from rank 0 to every new rank they would be counted W times, and those of the
saved ranks >= 1 would be lost. An extension that keeps such sums defines
``reshard_state(states, rank) -> state``: rank 0 is given the extension's state of
every saved rank it can read and keeps their sums merged; the other ranks are given
rank 0's alone and start with none. Without that method, rank 0's state is used.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Dict, List, Optional

from trainerlib.distributed import commit
from trainerlib.errors import SnapshotError
from trainerlib.serialization import load_state


def _saved_rank_states(main_path: str, header: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The trainer states of the saved ranks >= 1 that can be read (a warning for each
    that cannot: its partial sums are left out)."""
    states = []
    for rank in range(1, int(header.get('world_size', 1))):
        record = header.get('ranks', {}).get(str(rank)) or {}
        path = os.path.join(commit.ranks_dir(main_path), str(record.get('file')))
        try:
            part = load_state(path)
            if not isinstance(part, dict) or not isinstance(part.get('extensions'), dict):
                raise SnapshotError(f'{path!r} holds no trainer state')
        except (SnapshotError, OSError) as e:
            warnings.warn(f'resuming {main_path} on another world size: the partial sums of '
                          f'saved rank {rank} are left out of the next log entry ({e})')
            continue
        states.append(part)
    return states


def resharded_state(trainer: Any, state: Dict[str, Any], main_path: str,
                    header: Optional[Dict[str, Any]], rank: int) -> Dict[str, Any]:
    """``state`` (rank 0's, of the set committed by ``main_path``) with the entry of each
    extension that has ``reshard_state`` replaced by what ``rank`` resumes from."""
    saved = [state]
    if rank == 0 and header and int(header.get('world_size', 1)) > 1:
        saved += _saved_rank_states(main_path, header)
    extensions = dict(state.get('extensions', {}))
    for name, extension in getattr(trainer, 'extensions', {}).items():
        reshard = getattr(extension, 'reshard_state', None)
        if reshard is None or name not in extensions:
            continue
        extensions[name] = reshard([s['extensions'][name] for s in saved
                                    if name in s['extensions']], rank)
    return {**state, 'extensions': extensions}
