"""Views of a part of a dataset and the functions that split datasets."""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np
import torch

from .dataset_mixin import DatasetMixin


class SubDataset(DatasetMixin):
    """Examples ``start <= i < finish`` of ``dataset``, optionally seen through ``order``.

    Args:
        dataset: Base dataset.
        start: First index (inclusive) in the (permuted) base.
        finish: Last index (exclusive) in the (permuted) base.
        order: Optional permutation of ``range(len(dataset))``; example ``i`` of this view is
            ``dataset[order[start + i]]``.
    """

    def __init__(self, dataset: Any, start: int, finish: int,
                 order: Optional[Sequence[int]] = None) -> None:
        n = len(dataset)
        if not 0 <= start <= finish <= n:
            raise ValueError(f'SubDataset needs 0 <= start <= finish <= {n}, '
                             f'got start={start}, finish={finish}')
        if order is not None:
            if not isinstance(order, torch.Tensor):
                order = np.asarray(order)
            order = torch.as_tensor(order, dtype=torch.int64).cpu()
            if order.ndim != 1 or len(order) != n:
                raise ValueError(f'order must be 1-D of length {n} (the dataset length), '
                                 f'got shape {tuple(order.shape)}')
        self._dataset = dataset
        self._start = start
        self._finish = finish
        self._order = order

    def __len__(self) -> int:
        return self._finish - self._start

    def _base_index(self, i: int) -> int:
        j = self._start + i
        return j if self._order is None else int(self._order[j])

    def get_example(self, i: int) -> Any:
        return self._dataset[self._base_index(i)]

    @property
    def supports_batch(self) -> bool:
        """True when the base dataset has a working ``get_batch``."""
        return bool(getattr(self._dataset, 'supports_batch', False))

    def get_batch(self, indices: Any) -> Tuple[Any, ...]:
        """Fast batch: maps ``indices`` (a slice, or indices in ``[0, len)``) to the base
        dataset and calls its ``get_batch``; a slice of an unpermuted view stays a slice."""
        if not self.supports_batch:
            raise TypeError(f'get_batch is not supported by the base dataset '
                            f'{type(self._dataset).__name__}')
        if isinstance(indices, slice):
            start, stop, step = indices.indices(len(self))
            if self._order is None and step == 1:
                return self._dataset.get_batch(slice(self._start + start, self._start + stop))
            indices = torch.arange(start, stop, step)
        idx = torch.as_tensor(indices, dtype=torch.int64)
        if self._start:
            idx = idx + self._start
        if self._order is not None:
            idx = self._order.index_select(0, idx)
        return self._dataset.get_batch(idx)


def split_dataset(dataset: Any, split_at: int,
                  order: Optional[Sequence[int]] = None) -> Tuple[SubDataset, SubDataset]:
    """Split ``dataset`` into ``[0, split_at)`` and ``[split_at, len)`` (optionally permuted).

    Raises:
        TypeError: if ``split_at`` is not an int.
        ValueError: if ``split_at`` is outside ``[0, len(dataset)]``.
    """
    if not isinstance(split_at, (int, np.integer)) or isinstance(split_at, bool):
        raise TypeError(f'split_at must be an int, got {type(split_at).__name__}')
    n = len(dataset)
    if not 0 <= split_at <= n:
        raise ValueError(f'split_at must be in [0, {n}] (the dataset length), got {split_at}')
    return (SubDataset(dataset, 0, int(split_at), order),
            SubDataset(dataset, int(split_at), n, order))


def split_dataset_random(dataset: Any, first_size: int,
                         seed: Optional[int] = None) -> Tuple[SubDataset, SubDataset]:
    """Randomly split ``dataset`` into parts of ``first_size`` and ``len - first_size``.

    Args:
        dataset: Dataset to split.
        first_size: Size of the first part.
        seed: Seed of a local ``torch.Generator``; ``None`` draws from torch's global RNG, so
            ``torch.manual_seed`` makes the split repeatable.
    """
    generator = None
    if seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(len(dataset), generator=generator)
    return split_dataset(dataset, first_size, order)
