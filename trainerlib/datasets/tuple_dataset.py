"""Dataset of several equal-length columns (Chainer's ``TupleDataset``)."""
from __future__ import annotations

from typing import Any, Tuple

import numpy as np
import torch

from .dataset_mixin import DatasetMixin


def _batchable(column: Any) -> bool:
    return isinstance(column, (torch.Tensor, np.ndarray))


class TupleDataset(DatasetMixin):
    """Zip of datasets: ``ds[i] == (col0[i], col1[i], ...)``.

    Args:
        *datasets: Columns (tensors, arrays, lists or datasets), all of the same length.

    ``ds[slice]`` / ``ds[list]`` return a list of tuples. When every column is a tensor or an
    ndarray, :meth:`get_batch` builds whole batches by advanced indexing.
    """

    def __init__(self, *datasets: Any) -> None:
        if not datasets:
            raise ValueError('TupleDataset needs at least one column, got none')
        lengths = [len(d) for d in datasets]
        if len(set(lengths)) != 1:
            raise ValueError(f'TupleDataset columns must have the same length, '
                             f'got lengths {lengths}')
        self._datasets = datasets
        self._length = lengths[0]

    @property
    def datasets(self) -> Tuple[Any, ...]:
        """The columns."""
        return self._datasets

    def __len__(self) -> int:
        return self._length

    def get_example(self, i: int) -> Tuple[Any, ...]:
        return tuple(d[i] for d in self._datasets)

    @property
    def supports_batch(self) -> bool:
        """True when every column is a ``torch.Tensor`` or ``numpy.ndarray``."""
        return all(_batchable(d) for d in self._datasets)

    def get_batch(self, indices: Any) -> Tuple[Any, ...]:
        """One stacked batch per column: ``indices`` is a slice (zero-copy views) or a
        1-D array/tensor of indices in ``[0, len)`` (one gather per column).

        Raises:
            TypeError: if some column is neither a tensor nor an ndarray.
            IndexError: if an index is out of range.
        """
        if not self.supports_batch:
            kinds = [type(d).__name__ for d in self._datasets]
            raise TypeError(f'get_batch needs tensor or ndarray columns, got {kinds}')
        if isinstance(indices, slice):
            return tuple(d[indices] for d in self._datasets)
        idx_t = torch.as_tensor(indices, dtype=torch.int64)
        idx_np = None
        out = []
        for d in self._datasets:
            if isinstance(d, torch.Tensor):
                out.append(d.index_select(0, idx_t.to(d.device)))  # faster than d[idx]
            else:
                if idx_np is None:
                    idx_np = idx_t.numpy()
                out.append(d[idx_np])
        return tuple(out)
