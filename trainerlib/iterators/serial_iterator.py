"""Iterate a dataset in (optionally shuffled) order, batch by batch."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from trainerlib.convert import CollatedBatch
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
        batch_size: examples per batch (>= 1).
        repeat: loop forever (True) or stop after one epoch.
        shuffle: shuffle each epoch (``None`` means True, as in Chainer).
        seed: seed of the iterator's own generator. ``None`` draws one from
            torch's global RNG, so ``torch.manual_seed`` makes runs repeatable.

    The order, position, epoch and generator state are saved by ``state_dict``.
    """

    def __init__(self, dataset: Any, batch_size: int, repeat: bool = True,
                 shuffle: Optional[bool] = None, seed: Optional[int] = None) -> None:
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f'batch_size must be an integer >= 1, got {batch_size!r}')
        self._epoch_size = len(dataset)
        if self._epoch_size == 0:
            raise ValueError('the dataset is empty: SerialIterator needs at least one example '
                             '(check the data path or the split sizes)')
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.repeat = repeat
        warn_degenerate_epoch('SerialIterator', self._epoch_size, self._epoch_size,
                              self.batch_size, repeat)
        self.shuffle = True if shuffle is None else shuffle
        if seed is None:
            seed = int(torch.randint(0, 2 ** 62, (), dtype=torch.int64))
        self._seed = seed
        self._generator = torch.Generator()
        self._get_batch = _batch_getter(dataset)
        self.reset()

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
        end = start + self.batch_size
        if end < n and self._get_batch is not None:  # inside an epoch: the hot path
            self._previous_epoch_detail = self.epoch + start / n
            self.is_new_epoch = False
            self.current_position = end
            return self._get_batch(self._order[start:end] if self.shuffle
                                   else slice(start, end), self.batch_size)
        self._previous_epoch_detail = self.epoch + start / n
        self.is_new_epoch = False
        i, remaining, ranges = start, self.batch_size, []   # (order, begin, end) pieces
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
        size = sum(end - begin for _, begin, end in ranges)
        if self._get_batch is not None and not self.shuffle and len(ranges) == 1:
            return self._get_batch(slice(start, start + size), size)   # contiguous: views
        pieces = [order[begin:end] for order, begin, end in ranges]
        indices = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        if self._get_batch is not None:
            return self._get_batch(indices, size)
        dataset = self.dataset
        return [dataset[j] for j in indices.tolist()]

    def state_dict(self) -> dict:
        return {'epoch': self.epoch, 'current_position': self.current_position,
                'is_new_epoch': self.is_new_epoch, 'order': self._order.clone(),
                'previous_epoch_detail': self._previous_epoch_detail,
                'generator': self._generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if len(state['order']) != self._epoch_size:
            raise ValueError(f'the saved iterator order has {len(state["order"])} examples but '
                             f'the dataset has {self._epoch_size}: the snapshot was made with '
                             'other data')
        self.epoch = state['epoch']
        self.current_position = state['current_position']
        self.is_new_epoch = state['is_new_epoch']
        self._order = state['order'].clone()
        self._previous_epoch_detail = state['previous_epoch_detail']
        self._generator.set_state(state['generator'])
