"""The arithmetic of sharding one global order across ranks (pure functions, no collectives).

Every rank holds the same iterator state and takes its part of each *global* batch of
``B = batch_size * world_size`` examples: a full global batch gives rank ``r`` the contiguous
examples ``[r*b, (r+1)*b)``; a short last batch (``repeat=False``) is split as
``numpy.array_split`` does, without padding, so some ranks may get fewer (or no) examples.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple


def _check(n: int, rank: int, size: int) -> None:
    if size < 1 or not 0 <= rank < size or n < 0:
        raise ValueError(f'need n >= 0 and 0 <= rank < size, got n={n}, rank={rank}, '
                         f'size={size}')


def shard_bounds(n: int, rank: int, size: int) -> Tuple[int, int]:
    """``(start, stop)`` of rank ``rank``'s part of ``n`` items split over ``size`` ranks.

    ``numpy.array_split``'s rule: the first ``n % size`` ranks get one item more; the parts
    are contiguous, in rank order, disjoint and cover ``range(n)``. With ``n`` a multiple of
    ``size`` rank ``r`` gets ``[r*n/size, (r+1)*n/size)``.
    """
    _check(n, rank, size)
    q, extra = divmod(n, size)
    start = rank * q + min(rank, extra)
    return start, start + q + (rank < extra)


def equal_length_bounds(n: int, rank: int, size: int) -> Tuple[int, int]:
    """ChainerMN's ``force_equal_length`` shards: ``ceil(n/size)`` items for every rank.

    Rank ``r`` starts at ``n*r // size``; neighbouring shards overlap where ``n`` is not a
    multiple of ``size`` (some items appear on two ranks); the last one ends at ``n``.
    """
    _check(n, rank, size)
    start = n * rank // size
    return start, start + -(-n // size)


def cut_ranges(ranges: Sequence[Tuple[Any, int, int]], lo: int,
               hi: int) -> List[Tuple[Any, int, int]]:
    """The pieces covering positions ``[lo, hi)`` of the concatenation of ``ranges``.

    ``ranges`` is a list of ``(tag, begin, end)`` pieces (a tag is, e.g., the epoch's order
    the piece indexes into); the result has the same form, empty pieces left out.
    """
    out, offset = [], 0
    for tag, begin, end in ranges:
        length = end - begin
        a, b = max(lo - offset, 0), min(hi - offset, length)
        if a < b:
            out.append((tag, begin + a, begin + b))
        offset += length
        if offset >= hi:
            break
    return out


def check_resume(saved_global: int, saved_world: Optional[int], batch_size: int,
                 world_size: int, keep_global: bool = True) -> bool:
    """Whether a saved global iterator state may continue here; True when re-sharded.

    ``saved_global`` and ``saved_world``: the global batch and world size recorded in the
    state; ``batch_size`` and ``world_size``: this run's. With ``keep_global`` (a training
    iterator) the global batch must stay the same, else ``ValueError`` in one line that
    names both batch sizes and the fix. Returns True when the world size changed (the
    global order continues, but the numbers are not bit-identical).
    """
    saved_world = saved_world or 1
    here = batch_size * world_size
    if keep_global and here != saved_global:
        saved = f'{saved_global // saved_world} per rank x {saved_world} rank(s)'
        if saved_global % world_size:
            raise ValueError(
                f'cannot resume: the saved global batch is {saved_global} ({saved}), which '
                f'{world_size} ranks cannot share (batch_size={batch_size} gives {here}); '
                f'resume on a number of ranks that divides {saved_global}')
        raise ValueError(
            f'cannot resume: the saved global batch is {saved_global} ({saved}) but this '
            f'run\'s is {here} ({batch_size} per rank x {world_size} rank(s)); use '
            f'batch_size={saved_global // world_size} to continue the same global order')
    return saved_world != world_size
