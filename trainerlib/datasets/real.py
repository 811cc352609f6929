"""Loaders of real datasets; each returns ``TupleDataset(x, y)``.

``x`` is a float32 tensor ``(N, C, H, W)`` scaled to ``[0, 1]`` (``(N, C*H*W)`` with
``flatten=True``) and ``y`` an int64 tensor ``(N,)``. ``digits``, ``mnist-test`` and
``kmnist-test`` work offline (their data ships in ``trainerlib/datasets/data/``).
"""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch

from .tuple_dataset import TupleDataset

DATA_DIR = Path(__file__).resolve().parent / 'data'
PathLike = Union[str, os.PathLike]
_ONLINE = {'mnist': 'MNIST', 'emnist': 'EMNIST', 'fashion-mnist': 'FashionMNIST',
           'kmnist': 'KMNIST', 'cifar10': 'CIFAR10'}
_OFFLINE_HINT = "or use an offline loader: get_dataset('digits' | 'mnist-test' | 'kmnist-test')"


def _to_dataset(x: Any, y: Any, flatten: bool, scale: float = 255.0) -> TupleDataset:
    x = torch.as_tensor(x)
    x = (x.unsqueeze(1) if x.ndim == 3 else x).to(torch.float32) / scale
    y = torch.as_tensor(y) if isinstance(y, torch.Tensor) else torch.tensor(np.asarray(y))
    y = y.to(torch.int64)
    return TupleDataset((x.reshape(len(x), -1) if flatten else x).contiguous(), y)


def _find(root: Optional[PathLike], sub: str, filename: str, what: str) -> Path:
    """Return ``root/sub/filename`` (or ``root/filename``); ``root=None`` is the package data."""
    base = DATA_DIR if root is None else Path(root)
    for path in (base / sub / filename, base / filename):
        if path.is_file():
            return path
    raise FileNotFoundError(
        f'{what} file not found: {base / sub / filename}. Pass root= a folder that holds '
        f'{sub}/{filename}, or root=None for the copy shipped in {DATA_DIR} (reinstall '
        f'trainerlib if that is missing).')


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """Read a gzipped big-endian IDX file of uint8 data, validating magic number and size."""
    try:
        with gzip.open(path, 'rb') as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f'{path} is not a readable gzip IDX file ({e}); '
                         f'replace it with the official MNIST file') from None
    header = 4 + 4 * ndim
    got = struct.unpack('>I', raw[:4])[0] if len(raw) >= 4 else None
    if len(raw) < header or got != magic:
        raise ValueError(f'{path} is not an IDX file with magic number {magic} (got {got}); '
                         f'replace it with the official MNIST file')
    dims = struct.unpack(f'>{ndim}I', raw[4:header])
    if len(raw) - header != int(np.prod(dims)):
        raise ValueError(f'{path} holds {len(raw) - header} data bytes but its header says '
                         f'{dims}; the file is truncated or corrupted, replace it')
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def get_digits(flatten: bool = False) -> TupleDataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0..16 scaled to [0, 1])."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    return _to_dataset(digits.images.astype(np.float32), digits.target, flatten, scale=16.0)


def get_mnist_test(root: Optional[PathLike] = None, flatten: bool = False) -> TupleDataset:
    """The MNIST test set (10,000 images 28x28) from ``t10k-*-idx*-ubyte.gz`` files."""
    images = _read_idx(_find(root, 'mnist', 't10k-images-idx3-ubyte.gz', 'MNIST'), 2051, 3)
    labels = _read_idx(_find(root, 'mnist', 't10k-labels-idx1-ubyte.gz', 'MNIST'), 2049, 1)
    if len(images) != len(labels):
        raise ValueError(f'MNIST under {root or DATA_DIR}: {len(images)} images '
                         f'but {len(labels)} labels')
    return _to_dataset(torch.from_numpy(images.copy()), labels, flatten)


def _load_npz(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as z:
            return z['arr_0']
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f'{path} is not a valid KMNIST .npz file with key arr_0 ({e}); '
                         f'replace it with the official file') from None


def get_kmnist_test(root: Optional[PathLike] = None, flatten: bool = False) -> TupleDataset:
    """The Kuzushiji-MNIST test set (10,000 images 28x28, 1,000 per class) from ``.npz`` files."""
    images = _load_npz(_find(root, 'kmnist', 'kmnist-test-imgs.npz', 'KMNIST'))
    labels = _load_npz(_find(root, 'kmnist', 'kmnist-test-labels.npz', 'KMNIST'))
    if images.ndim != 3 or images.shape[0] != labels.shape[0]:
        raise ValueError(f'KMNIST under {root or DATA_DIR}: images {images.shape} '
                         f'do not match labels {labels.shape}')
    return _to_dataset(torch.from_numpy(images.astype(np.uint8)), labels, flatten)


def kmnist_classmap(root: Optional[PathLike] = None) -> List[str]:
    """The 10 KMNIST characters, indexed by label (``'お'`` is label 0)."""
    path = _find(root, 'kmnist', 'kmnist_classmap.csv', 'KMNIST class map')
    rows = [line.split(',') for line in path.read_text(encoding='utf-8').splitlines()[1:]]
    return [row[2] for row in sorted((r for r in rows if len(r) == 3), key=lambda r: int(r[0]))]


def get_torchvision(name: str, root: PathLike, train: bool = True, download: bool = False,
                    flatten: bool = False, split: str = 'balanced') -> TupleDataset:
    """A torchvision dataset (MNIST, EMNIST, FashionMNIST, KMNIST, CIFAR10) as tensors.

    ``split`` is used by EMNIST only; EMNIST images are transposed back to upright.
    """
    valid = {v.lower(): v for v in _ONLINE.values()}
    cls_name = valid.get(name.lower().replace('-', '').replace('_', ''))
    if cls_name is None:
        raise ValueError(f'unknown torchvision dataset {name!r}; valid: {list(valid.values())}')
    try:
        import torchvision.datasets as tvd
    except ImportError:
        raise ImportError(f'{cls_name} needs torchvision: pip install torchvision, then pass '
                          f'download=True with a network, {_OFFLINE_HINT}') from None
    extra: Dict[str, Any] = {'split': split} if cls_name == 'EMNIST' else {}
    try:
        ds = getattr(tvd, cls_name)(os.fspath(root), train=train, download=download, **extra)
    except (RuntimeError, OSError) as e:
        fix = ('pass download=True with a network connection' if not download
               else 'check the network connection and that root is writable')
        raise FileNotFoundError(f'{cls_name} ({"train" if train else "test"}) not available '
                                f'under {root!r}: {e}. To fix: {fix}, {_OFFLINE_HINT}.') from None
    data = torch.as_tensor(np.asarray(ds.data))
    if cls_name == 'CIFAR10':
        data = data.permute(0, 3, 1, 2)
    elif cls_name == 'EMNIST':
        data = data.transpose(1, 2)
    return _to_dataset(data, ds.targets, flatten)


_OFFLINE = {'digits': lambda root, **kw: get_digits(**kw),
            'mnist-test': get_mnist_test, 'kmnist-test': get_kmnist_test}
DATASET_NAMES = tuple(_OFFLINE) + tuple(_ONLINE)


def get_dataset(name: str, root: Optional[PathLike] = None, **kw: Any) -> TupleDataset:
    """Load a dataset by name; ``kw`` goes to the loader (``flatten``, ``train``, ``download``...).

    Names: ``digits``, ``mnist-test``, ``kmnist-test`` (offline) and ``mnist``, ``emnist``,
    ``fashion-mnist``, ``kmnist``, ``cifar10`` (torchvision; ``root`` is its data folder).
    """
    key = name.lower().replace('_', '-')
    if key in _OFFLINE:
        return _OFFLINE[key](root, **kw)
    if key in _ONLINE:
        if root is None:
            raise ValueError(f'get_dataset({name!r}) needs root=, the torchvision data folder')
        return get_torchvision(_ONLINE[key], root, **kw)
    raise ValueError(f'unknown dataset {name!r}; valid names: {", ".join(DATASET_NAMES)}')
