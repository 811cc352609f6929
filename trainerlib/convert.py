"""Turn a list of examples into batched tensors on a device."""
from __future__ import annotations

from typing import Any, List, Sequence, Tuple, Union

import numpy as np
import torch

DeviceLike = Union[None, str, int, torch.device]


class CollatedBatch:
    """A batch already stacked column-wise by a dataset's fast path.

    It still behaves as a sequence of examples (``len``, indexing, iteration), so
    code written for a list of examples keeps working; :func:`concat_examples`
    simply moves its ``arrays`` to the device.

    Args:
        arrays: a tuple, dict or single tensor/array of stacked columns.
        size: examples in the batch.
        tensors: the producer guarantees that ``arrays`` is a tuple of tensors, so
            that converting it for ``device=None`` has nothing to do (default False).

    Attributes:
        arrays: the columns.
        tensors: as given.
    """

    __slots__ = ('arrays', '_size', 'tensors')

    def __init__(self, arrays: Any, size: int, tensors: bool = False) -> None:
        self.arrays = arrays
        self._size = size
        self.tensors = tensors

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, i: int) -> Any:
        a = self.arrays
        if isinstance(a, tuple):
            return tuple(col[i] for col in a)
        if isinstance(a, dict):
            return {k: col[i] for k, col in a.items()}
        return a[i]

    def __iter__(self):
        return (self[i] for i in range(self._size))


def to_device(x: Any, device: DeviceLike) -> Any:
    """Convert ``x`` (tensor, ndarray, number, tuple/list/dict of them) to tensors on ``device``.

    Transfers to CUDA use ``non_blocking=True`` (effective from pinned memory).
    ``device=None`` only converts arrays to tensors.
    """
    # builtin containers first: isinstance(x, torch.Tensor) is slow when false
    if isinstance(x, tuple):
        return tuple([to_device(v, device) for v in x])  # a list is built faster than a generator
    if isinstance(x, list):
        return [to_device(v, device) for v in x]
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, torch.Tensor):
        if device is None:
            return x
        device = _as_device(device)
        return x.to(device, non_blocking=device.type == 'cuda')
    if isinstance(x, np.ndarray):
        return to_device(torch.from_numpy(x), device) if x.dtype.kind in 'biuf' else x
    return x


def _as_device(device: DeviceLike) -> torch.device:
    if isinstance(device, int):
        return torch.device('cpu') if device < 0 else torch.device('cuda', device)
    return torch.device(device)


def concat_examples(batch: Sequence[Any], device: DeviceLike = None,
                    padding: Any = None) -> Any:
    """Concatenate a list of examples into batched tensors (Chainer's ``concat_examples``).

    Args:
        batch: a list of examples; each is a tuple, a dict, or a single array
            (tensor, ndarray or number). A :class:`CollatedBatch` is only moved.
        device: target device (``None``: leave on CPU; ``-1``: CPU; ``n >= 0``: ``cuda:n``;
            or any ``torch.device``/string).
        padding: if not None, arrays of different shapes are padded with this
            value to the largest shape (a tuple/dict gives one value per column).

    Returns:
        A tuple, a dict, or a single tensor, matching the example structure.
    """
    if isinstance(batch, CollatedBatch):
        if batch.tensors and device is None:
            return batch.arrays   # tensors, left where they are: nothing to do
        return to_device(batch.arrays, device)
    if len(batch) == 0:
        raise ValueError('concat_examples: the batch is empty')
    first = batch[0]
    if isinstance(first, tuple):
        pads = padding if isinstance(padding, tuple) else (padding,) * len(first)
        return tuple(to_device(_concat([ex[i] for ex in batch], pads[i]), device)
                     for i in range(len(first)))
    if isinstance(first, dict):
        pads = padding if isinstance(padding, dict) else {k: padding for k in first}
        return {k: to_device(_concat([ex[k] for ex in batch], pads[k]), device) for k in first}
    return to_device(_concat(list(batch), padding), device)


def _concat(values: List[Any], padding: Any) -> Any:
    first = values[0]
    if isinstance(first, torch.Tensor):
        tensors = values
    elif isinstance(first, (np.ndarray, np.generic)):
        if first.dtype.kind not in 'biuf':
            return values
        if padding is None:
            return torch.from_numpy(np.stack(values))
        tensors = [torch.from_numpy(np.asarray(v)) for v in values]
    elif isinstance(first, (bool, int, float)):
        return torch.tensor(values)
    else:
        return values
    if padding is None:
        return torch.stack(tensors)
    return _pad_stack(tensors, padding)


def _pad_stack(tensors: List[torch.Tensor], padding: Any) -> torch.Tensor:
    shape: Tuple[int, ...] = tuple(max(s) for s in zip(*(t.shape for t in tensors)))
    out = tensors[0].new_full((len(tensors),) + shape, padding)
    for i, t in enumerate(tensors):
        out[(i,) + tuple(slice(0, d) for d in t.shape)] = t
    return out

