"""Iterate a dataset in (optionally shuffled) order, batch by batch."""
from __future__ import annotations

import warnings
from typing import Any, Optional

import numpy as np
import torch

from trainerlib.convert import CollatedBatch
from trainerlib.distributed.sharding import check_resume, cut_ranges, shard_bounds
from trainerlib.iterators.iterator import Iterator, warn_degenerate_epoch


def _batch_getter(dataset: Any):
    """A function ``indices -> CollatedBatch`` when the dataset can batch by indexing.

    ``indices`` is a 1-D LongTensor, or a ``slice`` for a contiguous unshuffled
    range (then tensors are sliced: zero-copy views).
    """
    if getattr(dataset, 'supports_batch', False):
        get = dataset.get_batch
        return lambda idx, size: CollatedBatch(get(idx), size)
    if isinstance(dataset, torch.utils.data.TensorDataset):
        tensors = dataset.tensors
        if len(tensors) == 2:  # (inputs, labels): the usual case, unrolled
            a, b = tensors
            return lambda idx, size: CollatedBatch(
                (a[idx], b[idx]) if type(idx) is slice
                else (a.index_select(0, idx), b.index_select(0, idx)), size, tensors=True)
        return lambda idx, size: CollatedBatch(tuple(_take(t, idx) for t in tensors), size,
                                               tensors=True)
    if isinstance(dataset, (torch.Tensor, np.ndarray)):
        return lambda idx, size: CollatedBatch(_take(dataset, idx), size)
    return None


def _take(array: Any, idx: Any) -> Any:
    """Rows ``idx`` (a slice or a LongTensor) of a tensor or an ndarray."""
    if isinstance(idx, slice):
        return array[idx]
    if isinstance(array, np.ndarray):
        return array[idx.numpy()]
    return array.index_select(0, idx)


class SerialIterator(Iterator):
    """Visits the examples of a dataset in order or in a shuffled order.

    With ``repeat=True`` a batch that crosses the end of an epoch is completed
    with the first examples of the next (reshuffled) epoch, as in Chainer.
    Datasets of tensors (``TupleDataset`` of tensors/arrays, ``TensorDataset``,
    a tensor) are batched by one indexing operation and returned as a
    :class:`~trainerlib.convert.CollatedBatch`; others as a list of examples.

    Args:
        dataset: any sized indexable dataset.
        batch_size: examples per batch (>= 1); per rank when ``comm`` has several.
        repeat: loop forever (True) or stop after one epoch.
        shuffle: shuffle each epoch (``None`` means True, as in Chainer).
        seed: seed of the iterator's own generator. ``None`` draws one from
            torch's global RNG, so ``torch.manual_seed`` makes runs repeatable.
        comm: a communicator (:mod:`trainerlib.distributed`) to shard one global
            order over its ranks; None or a single process: no sharding.

    The order, position, epoch and generator state are saved by ``state_dict``.

    **Data parallel** (``comm.size = W > 1``): every rank holds the same iterator
    state, that of a single-process iterator of batch ``B = batch_size * W``
    (:attr:`global_batch_size`) with rank 0's seed, and each ``next()`` returns
    this rank's contiguous slice ``[r*b, (r+1)*b)`` of that global batch; so
    ``epoch``, ``epoch_detail``, ``is_new_epoch`` and ``state_dict()`` are the
    same on every rank. Construction is a collective (one ``allgather_obj`` of
    the seed, dataset length and settings; build the iterator on every rank, in
    the same order); ``next()`` never communicates. Every rank must pass the
    same dataset (a mismatch of length or settings raises on every rank).
    With ``repeat=False`` the last global batch is split without padding as
    ``numpy.array_split`` does; a rank whose part is empty raises
    ``StopIteration`` at once (its state still advanced to the end of the epoch),
    so a rank may run one round fewer than another: an evaluation loop must not
    communicate per batch (reduce after the loop, as the Evaluator does).
    ``state_dict()`` also records ``batch_size``, ``global_batch_size`` and
    ``world_size``; a state of another world size with the same global batch
    continues the same global order (a warning says the numbers will not be
    bit-identical; :attr:`resharded_from` holds the saved world size), and one
    whose global batch cannot be kept raises ``ValueError`` (training iterators;
    a ``repeat=False`` one may regroup, as the Evaluator resets it anyway). A
    single-process state (no such keys) loads as a position in the global order.
    """

    resharded_from: Optional[int] = None
    """The world size of the last loaded state where it differed from this run's, else None."""

    def __init__(self, dataset: Any, batch_size: int, repeat: bool = True,
                 shuffle: Optional[bool] = None, seed: Optional[int] = None, *,
                 comm: Any = None) -> None:
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f'batch_size must be an integer >= 1, got {batch_size!r}')
        self._epoch_size = len(dataset)
        if self._epoch_size == 0:
            raise ValueError('the dataset is empty: SerialIterator needs at least one example '
                             '(check the data path or the split sizes)')
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.repeat = repeat
        self._world_size = 1 if comm is None else int(comm.size)
        self._rank = 0 if comm is None else int(comm.rank)
        self.global_batch_size = self.batch_size * self._world_size
        warn_degenerate_epoch('SerialIterator', self._epoch_size, self._epoch_size,
                              self.global_batch_size, repeat, ranks=self._world_size)
        self.shuffle = True if shuffle is None else shuffle
        explicit = seed is not None
        if seed is None:
            seed = int(torch.randint(0, 2 ** 62, (), dtype=torch.int64))
        if self._world_size > 1:
            seed = self._agree(comm, seed, explicit)
        self._seed = seed
        self._lo, self._hi = shard_bounds(self.global_batch_size, self._rank, self._world_size)
        self._generator = torch.Generator()
        self._get_batch = _batch_getter(dataset)
        self.reset()

    def _agree(self, comm: Any, seed: int, explicit: bool) -> int:
        """Rank 0's seed, after checking in one collective that every rank has the same setup."""
        mine = (seed, explicit, self._epoch_size, self.batch_size, self.shuffle, self.repeat)
        everyone = comm.allgather_obj(mine)
        for i, what in enumerate(('dataset length', 'batch_size', 'shuffle', 'repeat'), 2):
            values = [entry[i] for entry in everyone]
            if len(set(values)) > 1:
                raise ValueError(f'SerialIterator(comm=...): the {what} differs across ranks '
                                 f'({values}, in rank order); every rank must build the '
                                 'iterator with the same dataset and settings (it shards them)')
        shared = everyone[0][0]
        if explicit and seed != shared:
            warnings.warn(f'SerialIterator(comm=...): seed={seed} on rank {self._rank} differs '
                          f"from rank 0's seed={shared}; using rank 0's, so every rank shares "
                          'one data order', UserWarning, stacklevel=3)
        return shared

    def reset(self) -> None:
        """Rewind to the first epoch, with the same order as after construction."""
        self._generator.manual_seed(self._seed)
        self.epoch = 0
        self.is_new_epoch = False
        self.current_position = 0
        self._previous_epoch_detail = -1.0
        self._order = self._new_order()

    def _new_order(self) -> torch.Tensor:
        if self.shuffle:
            return torch.randperm(self._epoch_size, generator=self._generator)
        return torch.arange(self._epoch_size)

    def __next__(self) -> Any:
        if not self.repeat and self.epoch > 0:
            raise StopIteration
        n = self._epoch_size
        start = self.current_position
        end = start + self.global_batch_size
        if end < n and self._get_batch is not None:  # inside an epoch: the hot path
            self._previous_epoch_detail = self.epoch + start / n
            self.is_new_epoch = False
            self.current_position = end
            lo, hi = start + self._lo, start + self._hi
            return self._get_batch(self._order[lo:hi] if self.shuffle
                                   else slice(lo, hi), self.batch_size)
        self._previous_epoch_detail = self.epoch + start / n
        self.is_new_epoch = False
        i, remaining, ranges = start, self.global_batch_size, []   # (order, begin, end) pieces
        while remaining > 0:
            end = min(i + remaining, n)
            ranges.append((self._order, i, end))
            remaining -= end - i
            if end < n:
                i = end
                continue
            i = 0
            self.epoch += 1
            self.is_new_epoch = True
            self._order = self._new_order()
            if not self.repeat:
                break
        self.current_position = i
        if self._world_size > 1:   # this rank's part of the global batch (short: array_split)
            lo, hi = shard_bounds(sum(e - b for _, b, e in ranges), self._rank,
                                  self._world_size)
            ranges = cut_ranges(ranges, lo, hi)
            if not ranges:     # only the last batch of a repeat=False pass can leave none
                raise StopIteration
        size = sum(end - begin for _, begin, end in ranges)
        if self._get_batch is not None and not self.shuffle and len(ranges) == 1:
            _, begin, end = ranges[0]
            return self._get_batch(slice(begin, end), size)   # contiguous: views
        pieces = [order[begin:end] for order, begin, end in ranges]
        indices = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        if self._get_batch is not None:
            return self._get_batch(indices, size)
        dataset = self.dataset
        return [dataset[j] for j in indices.tolist()]

    def state_dict(self) -> dict:
        state = {'epoch': self.epoch, 'current_position': self.current_position,
                 'is_new_epoch': self.is_new_epoch, 'order': self._order.clone(),
                 'previous_epoch_detail': self._previous_epoch_detail,
                 'generator': self._generator.get_state()}
        if self._world_size > 1:   # a single process keeps today's format
            state.update(batch_size=self.batch_size, global_batch_size=self.global_batch_size,
                         world_size=self._world_size)
        return state

    def load_state_dict(self, state: dict) -> None:
        if len(state['order']) != self._epoch_size:
            raise ValueError(f'the saved iterator order has {len(state["order"])} examples but '
                             f'the dataset has {self._epoch_size}: the snapshot was made with '
                             'other data')
        saved_world = state.get('world_size', 1)
        self.resharded_from = None
        if 'global_batch_size' in state:   # (a single-process state has no such record)
            if check_resume(state['global_batch_size'], saved_world, self.batch_size,
                            self._world_size, keep_global=self.repeat):
                self.resharded_from = saved_world
                warnings.warn(f'SerialIterator: resuming the state of a {saved_world}-rank run '
                              f'on {self._world_size} rank(s) with the global batch '
                              f'{self.global_batch_size}: the global order continues unchanged, '
                              'but results will not be bit-identical to an uninterrupted run '
                              '(reduction order and per-rank random streams differ)',
                              UserWarning, stacklevel=2)
        self.epoch = state['epoch']
        self.current_position = state['current_position']
        self.is_new_epoch = state['is_new_epoch']
        self._order = state['order'].clone()
        self._previous_epoch_detail = state['previous_epoch_detail']
        self._generator.set_state(state['generator'])
