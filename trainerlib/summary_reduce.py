"""Summaries of every rank together: one packed float64 all-reduce per result.

Each rank keeps its own additive state (Σw·x, Σw·x², Σw per key, see
:mod:`trainerlib.summary`); these functions sum it over the ranks when a result is
needed (a log entry, a trigger's check), so every rank computes the mean a single
process would over the union of all ranks' values. With one process they return at once.
"""
from __future__ import annotations

import hashlib
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from trainerlib.summary import DictSummary, Summary


_SLOTS = 4   # per key: sum w*x, sum w*x*x, sum w, number of ranks that reported it


def _key_hash(keys: Sequence[str]) -> int:
    """A hash of the sorted key list that is the same in every process (unlike
    ``hash(str)``), small enough to negate in an int64."""
    digest = hashlib.blake2b('\0'.join(keys).encode('utf-8'), digest_size=7).digest()
    return int.from_bytes(digest, 'little')


def _agreed_keys(names: List[str], comm: Any) -> List[str]:
    """The sorted union of every rank's keys: a header all-reduce (count and hash, as the
    MAX of (v, -v) so a difference shows), and an all-gather only when they differ."""
    h = _key_hash(names)
    header = torch.tensor([len(names), -len(names), h, -h], dtype=torch.int64)
    comm.control_allreduce(header, op='max')
    count, minus_count, hmax, minus_hmin = header.tolist()
    if count == -minus_count and hmax == -minus_hmin:
        return names
    union = set()
    for theirs in comm.allgather_obj(names):
        union.update(theirs)
    return sorted(union)


def _flat_totals(summary: Optional[Summary], key: str) -> List[Any]:
    if summary is None or not len(summary):
        return [0.0] * _SLOTS
    x, x2, n = summary._totals()
    if isinstance(x, torch.Tensor) and x.ndim != 0:
        raise ValueError(f'summary {key!r}: only scalar summaries can be reduced across ranks, '
                         f'this one holds tensors of shape {tuple(x.shape)}')
    return [x, x2, n, 1.0]


def _pack(flat: List[Any], device: torch.device) -> torch.Tensor:
    """One float64 tensor on ``device`` of numbers and 0-d tensors (no sync when the
    tensors are already there: the numbers go in one copy, the tensors in one kernel)."""
    is_tensor = [isinstance(v, torch.Tensor) for v in flat]
    payload = torch.tensor([0.0 if t else float(v) for v, t in zip(flat, is_tensor)],
                           dtype=torch.float64, device=device)
    where = [i for i, t in enumerate(is_tensor) if t]
    if where:
        payload[torch.tensor(where, device=device)] = torch.stack(
            [flat[i].detach().to(device, torch.float64) for i in where])
    return payload


def allreduce_summaries(summaries: Dict[str, Summary], comm: Any,
                        keys: Optional[Iterable[str]] = None,
                        extras: Sequence[float] = ()) -> Tuple[Dict[str, Summary], List[float]]:
    """Sum the summaries of every rank: ``(summaries, extras)``, the same on every rank.

    Each rank's additive state (Σw·x, Σw·x², Σw of each key, pending values folded in,
    plus the ``extras`` numbers) travels in ONE float64 tensor in sorted-key order,
    all-reduced with SUM once; the means and standard deviations of the result are then
    those of a single process over the union of all ranks' values (in float64; the sums
    are taken in another order, so the last bits can differ from a one-process run).

    ``keys`` given (the same on every rank): that layout, with a count per key, so a key
    no rank reported is left out of the result: one collective. Else the union of the
    ranks' keys, agreed by a small header all-reduce (and an all-gather of the key lists
    only when they differ; a rank without a key adds zeros): two collectives. The
    ``extras`` are summed too (e.g. rank 0's clock, the others adding 0.0); every rank
    must pass as many. The result keeps this rank's key order, then the keys it lacked
    (sorted). With one process the summaries are returned as they are.
    """
    extras = [float(e) for e in extras]
    if comm is None or getattr(comm, 'size', 1) <= 1:
        return summaries, extras
    if keys is not None:
        names = sorted(set(keys))
    else:
        names = _agreed_keys(sorted(k for k, s in summaries.items() if len(s)), comm)
    device = getattr(comm, 'device', None) or torch.device('cpu')
    flat: List[Any] = []
    for key in names:
        flat.extend(_flat_totals(summaries.get(key), key))
    flat.extend(extras)
    if not flat:
        return {}, []
    payload = _pack(flat, device)
    comm.allreduce(payload, op='sum')
    values = payload.cpu().tolist()   # the one host sync of a reduction
    totals = {}
    for i, key in enumerate(names):
        x, x2, n, ranks = values[i * _SLOTS:(i + 1) * _SLOTS]
        if ranks > 0:
            totals[key] = Summary._of_totals(x, x2, n)
    ordered = {k: totals[k] for k in summaries if k in totals}
    ordered.update((k, s) for k, s in totals.items() if k not in ordered)
    return ordered, values[len(names) * _SLOTS:]


def allreduce_dict_summary(summary: DictSummary, comm: Any,
                           keys: Optional[Iterable[str]] = None,
                           extras: Sequence[float] = ()) -> Tuple[DictSummary, List[float]]:
    """:func:`allreduce_summaries` of a :class:`DictSummary`: ``(reduced, extras)``.
    With one process, ``(summary, extras)`` unchanged."""
    if comm is None or getattr(comm, 'size', 1) <= 1:
        return summary, [float(e) for e in extras]
    summary._absorb()
    totals, extras = allreduce_summaries(summary._summaries, comm, keys, extras)
    reduced = DictSummary()
    reduced._summaries = totals
    return reduced, extras


# ---- resuming on another world size: the saved ranks' partial sums in one state -------

def _loaded(state: Dict[str, Any]) -> Summary:
    summary = Summary()
    summary.load_state_dict(state)
    return summary


def merge_summary_states(states: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """The saved state of one :class:`Summary` holding every value of ``states`` (the
    saved states of several ranks' summaries), as totals. Empty ones are skipped."""
    x = x2 = n = None
    for state in states:
        tx, tx2, tn = _loaded(state)._totals()
        if tx is None:
            continue
        tx, tx2 = tx.to(torch.float64), tx2.to(torch.float64)
        tn = torch.as_tensor(tn, dtype=torch.float64)
        x, x2, n = (tx, tx2, tn) if x is None else (x + tx, x2 + tx2, n + tn)
    merged = Summary()
    merged._x, merged._x2, merged._n = x, x2, n
    return merged.state_dict()


def merge_dict_summary_states(states: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """:func:`merge_summary_states` per key of :class:`DictSummary` states (the union
    of their keys, in first-seen order)."""
    keys: Dict[str, None] = {}
    for state in states:
        keys.update(dict.fromkeys(state))
    return {k: merge_summary_states([s[k] for s in states if k in s]) for k in keys}


def reshard_summary_state(states: Sequence[Dict[str, Any]], rank: int,
                          key: str = 'summary', merge: Any = merge_dict_summary_states
                          ) -> Dict[str, Any]:
    """An extension's state for ``rank`` of a run resumed on another world size.

    ``states``: the extension's saved state on each saved rank that this rank could read
    (rank 0 reads them all; the others only rank 0's, whose replicated parts they keep).
    Rank 0 resumes with the partial sums ``state[key]`` of all of them merged; every
    other rank with none (``merge([])``), so the next entry counts each value once.
    """
    state = dict(states[0])
    state[key] = merge(list(s[key] for s in states) if rank == 0 else [])
    return state
