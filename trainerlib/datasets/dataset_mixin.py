"""Base class of random-access datasets (Chainer's ``DatasetMixin``)."""
from __future__ import annotations

from typing import Any, List, Sequence, Union

import numpy as np
import torch

Index = Union[int, slice, Sequence[int], np.ndarray, torch.Tensor]


def normalize_index(i: int, length: int) -> int:
    """Return ``i`` as a non-negative index, raising ``IndexError`` if out of range."""
    if isinstance(i, (np.generic, np.ndarray, torch.Tensor)):
        i = i.item()
    if not isinstance(i, int) or isinstance(i, bool):
        raise TypeError(f'dataset index must be an integer, got {type(i).__name__}')
    if i < -length or i >= length:
        raise IndexError(f'index {i} is out of range for a dataset of length {length}')
    return i + length if i < 0 else i


def index_list(index: Any, length: int) -> List[int]:
    """Expand a slice or a sequence/array/tensor of indices into a list of ints."""
    if isinstance(index, slice):
        return list(range(*index.indices(length)))
    if isinstance(index, torch.Tensor):
        index = index.tolist()
    elif isinstance(index, np.ndarray):
        index = index.tolist()
    elif not isinstance(index, (list, tuple, range)):
        raise TypeError(f'dataset index must be an integer, a slice or a sequence of integers, '
                        f'got {type(index).__name__}')
    return [normalize_index(i, length) for i in index]


def is_scalar_index(index: Any) -> bool:
    """True for a single integer index (Python, numpy or 0-d tensor)."""
    if isinstance(index, (torch.Tensor, np.ndarray)):
        return index.ndim == 0
    return isinstance(index, (int, np.integer)) and not isinstance(index, bool)


class DatasetMixin(torch.utils.data.Dataset):
    """Dataset whose examples are computed by :meth:`get_example`.

    ``ds[i]`` returns one example; ``ds[slice]`` and ``ds[list_of_indices]`` (also a numpy
    array or tensor of indices) return a list of examples, as in Chainer.
    """

    def __getitem__(self, index: Index) -> Any:
        length = len(self)
        if is_scalar_index(index):
            return self.get_example(normalize_index(index, length))
        return [self.get_example(i) for i in index_list(index, length)]

    def __len__(self) -> int:
        raise NotImplementedError

    def get_example(self, i: int) -> Any:
        """Return the ``i``-th example (``0 <= i < len(self)``); override in subclasses."""
        raise NotImplementedError
