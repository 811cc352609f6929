"""``chainer.datasets``: trainerlib's dataset classes and Chainer's ``get_mnist``."""
from __future__ import annotations

import os
import warnings
from typing import Tuple, Union

import torch

from trainerlib.datasets import (DatasetMixin, LabeledImageDataset, SubDataset,  # noqa: F401
                                 TransformDataset, TupleDataset, get_mnist_test, get_torchvision,
                                 split_dataset, split_dataset_random)

_SHAPES = {1: (784,), 2: (28, 28), 3: (1, 28, 28)}


def get_mnist(withlabel: bool = True, ndim: int = 1, scale: float = 1.0,
              dtype: torch.dtype = torch.float32, label_dtype: torch.dtype = torch.int32,
              rgb_format: bool = False, *, root: Union[str, os.PathLike, None] = None,
              download: bool = False) -> Tuple[TupleDataset, TupleDataset]:
    """Chainer's ``get_mnist``: ``(train, test)`` of images in ``[0, scale]`` and labels.

    With ``root`` (a torchvision data folder; ``download=True`` fetches it there) these
    are MNIST's 60,000 / 10,000 images, as in Chainer. Without it, offline: the MNIST
    test set shipped with trainerlib, split 8,000 / 2,000 with seed 0 (the recipes'
    convention), with a warning saying so.

    Args:
        withlabel: return ``(image, label)`` pairs, else images alone.
        ndim: 1 (``(784,)``), 2 (``(28, 28)``) or 3 (``(1, 28, 28)``).
        scale: the value of a white pixel.
        dtype, label_dtype: torch dtypes (Chainer's defaults: float32, int32).
        rgb_format: not supported (MNIST is grey), must be False.
        root, download: the full MNIST through torchvision (``download=True`` without
            ``root``: into ``~/.cache/mnist``).
    """
    if ndim not in _SHAPES or rgb_format:
        raise ValueError(f'get_mnist: ndim must be 1, 2 or 3 and rgb_format False, got '
                         f'ndim={ndim!r}, rgb_format={rgb_format!r}')
    if root is None and not download:
        warnings.warn('get_mnist: the full MNIST is not available offline; using the MNIST test '
                      'set shipped with trainerlib, split 8,000 train / 2,000 test. Pass root= '
                      '(a torchvision MNIST folder) or download=True for the 60,000 / 10,000.',
                      stacklevel=2)
        train, test = split_dataset_random(get_mnist_test(flatten=True), 8000, seed=0)
        pairs = [_arrays(part) for part in (train, test)]
    else:
        folder = os.fspath(root if root is not None else os.path.expanduser('~/.cache/mnist'))
        pairs = [_arrays(get_torchvision('mnist', folder, train=t, download=download,
                                         flatten=True)) for t in (True, False)]
    out = []
    for x, y in pairs:
        x = (x * scale).to(dtype).reshape((len(x),) + _SHAPES[ndim])
        out.append(TupleDataset(x, y.to(label_dtype)) if withlabel else x)
    return out[0], out[1]


def _arrays(dataset) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``(x, y)`` tensors of a (sub)dataset of ``(image, label)`` pairs."""
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(xs), torch.stack([torch.as_tensor(y) for y in ys])


__all__ = ['DatasetMixin', 'LabeledImageDataset', 'SubDataset', 'TransformDataset',
           'TupleDataset', 'get_mnist', 'split_dataset', 'split_dataset_random']
