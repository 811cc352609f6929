"""Loaders of real datasets; each returns ``TupleDataset(x, y)``.

``x`` is a float32 tensor ``(N, C, H, W)`` scaled to ``[0, 1]`` (``(N, C*H*W)`` with
``flatten=True``) and ``y`` an int64 tensor ``(N,)``. ``digits``, ``mnist-test`` and
``kmnist-test`` work offline (their data ships in ``trainerlib/datasets/data/``).
"""
from __future__ import annotations

import gzip
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch

from ..errors import DataError, DataFileNotFoundError
from ._errors import reason
from .tuple_dataset import TupleDataset

DATA_DIR = Path(__file__).resolve().parent / 'data'
PathLike = Union[str, os.PathLike]
_ONLINE = {'mnist': 'MNIST', 'emnist': 'EMNIST', 'fashion-mnist': 'FashionMNIST',
           'kmnist': 'KMNIST', 'cifar10': 'CIFAR10'}
_MNIST_URL = 'https://ossci-datasets.s3.amazonaws.com/mnist/'  # torchvision's mirror
_KMNIST_URL = 'http://codh.rois.ac.jp/kmnist/dataset/kmnist/'
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
    raise DataFileNotFoundError(
        f'{what} file not found: {base / sub / filename}. Pass root= a folder that holds '
        f'{sub}/{filename}, or root=None for the copy shipped in {DATA_DIR} (reinstall '
        f'trainerlib if that is missing).')


def _is_shipped(path: Path) -> bool:
    try:
        path.resolve().relative_to(DATA_DIR)
    except (ValueError, OSError):
        return False
    return True


def _fix(path: Path, url: str) -> str:
    """What to do about a damaged data file: restore the shipped copy or fetch the original."""
    if _is_shipped(path):
        return (f'the copy shipped with trainerlib is damaged: reinstall trainerlib or restore '
                f'it with git checkout (checksums in {DATA_DIR / "README.md"})')
    return (f'replace it with the original file from {url}{path.name}, or leave the data root '
            f'unset to use the copy shipped with trainerlib')


def _fix_pair(images_path: Path, labels_path: Path, url: str) -> str:
    """What to do when an images file and a labels file do not belong together."""
    if _is_shipped(images_path) and _is_shipped(labels_path):
        return _fix(labels_path, url)
    return (f'replace them with the original files {url}{images_path.name} and '
            f'{url}{labels_path.name} (same release), or leave the data root unset to use the '
            f'copies shipped with trainerlib')


def _unreadable(what: str, path: Path, kind: str, exc: BaseException, url: str) -> DataError:
    """The error for a file that cannot be opened or decoded (``kind``: 'gzip', 'zip'...)."""
    if isinstance(exc, PermissionError):
        return DataError(f'{what} file {path} cannot be read ({reason(exc)}); make it readable '
                         f'(chmod u+r) or copy it to a folder you own')
    return DataError(f'{what} file {path} is damaged (truncated or corrupt {kind}: '
                     f'{reason(exc)}); {_fix(path, url)}')


_IDX_KINDS = {2049: 'labels', 2051: 'images'}


def _read_idx(path: Path, magic: int, ndim: int, what: str = 'MNIST',
              url: str = _MNIST_URL) -> np.ndarray:
    """Read a gzipped big-endian IDX file of uint8 data, validating magic number and size."""
    try:
        with gzip.open(path, 'rb') as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise _unreadable(what, path, 'gzip', e, url) from None
    header = 4 + 4 * ndim
    got = struct.unpack('>I', raw[:4])[0] if len(raw) >= 4 else None
    if len(raw) < header or got != magic:
        seen = f'got {got}' + (f', a {_IDX_KINDS[got]} file' if got in _IDX_KINDS else '')
        raise DataError(f'{what} file {path} is not an IDX {_IDX_KINDS.get(magic, "data")} file '
                        f'with magic number {magic} ({seen}); {_fix(path, url)}')
    dims = struct.unpack(f'>{ndim}I', raw[4:header])
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(f'{what} file {path} holds {len(raw) - header} data bytes but its header '
                        f'says {dims} ({expected} bytes): the file is truncated or corrupt; '
                        f'{_fix(path, url)}')
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _check_images_labels(what: str, images: np.ndarray, images_path: Path, labels: np.ndarray,
                         labels_path: Path, url: str, n_classes: int = 10) -> None:
    """Raise :class:`DataError` unless ``images`` is uint8 ``(N, H, W)`` and ``labels`` integer
    ``(N,)`` in ``[0, n_classes)``."""
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f'{what} file {images_path} holds a {images.dtype} array of shape '
                        f'{images.shape}, expected uint8 images (N, H, W); '
                        f'{_fix(images_path, url)}')
    if labels.ndim != 1 or labels.dtype.kind not in 'iu':
        raise DataError(f'{what} file {labels_path} holds a {labels.dtype} array of shape '
                        f'{labels.shape}, expected integer labels (N,); {_fix(labels_path, url)}')
    if len(images) != len(labels):
        raise DataError(f'{what} files {images_path} ({len(images)} images) and {labels_path} '
                        f'({len(labels)} labels) disagree in count; '
                        f'{_fix_pair(images_path, labels_path, url)}')
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < n_classes:
        raise DataError(f'{what} file {labels_path} holds labels {int(labels.min())}..'
                        f'{int(labels.max())}, expected 0..{n_classes - 1}; '
                        f'{_fix(labels_path, url)}')


def get_digits(flatten: bool = False) -> TupleDataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0..16 scaled to [0, 1])."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    return _to_dataset(digits.images.astype(np.float32), digits.target, flatten, scale=16.0)


def get_mnist_test(root: Optional[PathLike] = None, flatten: bool = False) -> TupleDataset:
    """The MNIST test set (10,000 images 28x28) from ``t10k-*-idx*-ubyte.gz`` files.

    Raises:
        DataFileNotFoundError: if a file is missing.
        DataError: if a file is damaged or the two files disagree (one line: file and fix).
    """
    images_path = _find(root, 'mnist', 't10k-images-idx3-ubyte.gz', 'MNIST')
    labels_path = _find(root, 'mnist', 't10k-labels-idx1-ubyte.gz', 'MNIST')
    images = _read_idx(images_path, 2051, 3)
    labels = _read_idx(labels_path, 2049, 1)
    _check_images_labels('MNIST', images, images_path, labels, labels_path, _MNIST_URL)
    return _to_dataset(torch.from_numpy(images.copy()), labels, flatten)


_NPY_MAGIC = b'\x93NUMPY'
_ZIP_MAGIC = b'PK'


def _load_npz(path: Path, what: str = 'KMNIST', url: str = _KMNIST_URL,
              key: str = 'arr_0') -> np.ndarray:
    """Array ``key`` of the ``.npz`` archive ``path``, loaded with ``allow_pickle=False``."""
    try:
        with open(path, 'rb') as f:
            head = f.read(len(_NPY_MAGIC))
    except OSError as e:
        raise _unreadable(what, path, 'zip', e, url) from None
    if not head.startswith(_ZIP_MAGIC):
        found = 'a single .npy array' if head == _NPY_MAGIC else f'starts with {head!r}'
        raise DataError(f'{what} file {path} is not a NumPy .npz (zip) archive ({found}); '
                        f'{_fix(path, url)}')
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            array = archive[key] if key in names else None
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        if isinstance(e, ValueError) and 'pickle' in str(e):
            raise DataError(f'{what} file {path} holds a pickled (object) array, which '
                            f'trainerlib never loads; {_fix(path, url)}') from None
        raise _unreadable(what, path, 'zip', e, url) from None
    if array is None:
        raise DataError(f'{what} file {path} has no array {key!r} (it holds {names}); '
                        f'{_fix(path, url)}')
    return array


def get_kmnist_test(root: Optional[PathLike] = None, flatten: bool = False) -> TupleDataset:
    """The Kuzushiji-MNIST test set (10,000 images 28x28, 1,000 per class) from ``.npz`` files.

    Raises:
        DataFileNotFoundError: if a file is missing.
        DataError: if a file is damaged or the two files disagree (one line: file and fix).
    """
    images_path = _find(root, 'kmnist', 'kmnist-test-imgs.npz', 'KMNIST')
    labels_path = _find(root, 'kmnist', 'kmnist-test-labels.npz', 'KMNIST')
    images = _load_npz(images_path)
    labels = _load_npz(labels_path)
    _check_images_labels('KMNIST', images, images_path, labels, labels_path, _KMNIST_URL)
    return _to_dataset(torch.from_numpy(images), labels, flatten)


def kmnist_classmap(root: Optional[PathLike] = None) -> List[str]:
    """The 10 KMNIST characters, indexed by label (``'お'`` is label 0)."""
    path = _find(root, 'kmnist', 'kmnist_classmap.csv', 'KMNIST class map')
    try:
        lines = path.read_text(encoding='utf-8').splitlines()[1:]
    except (OSError, UnicodeDecodeError) as e:
        raise _unreadable('KMNIST class map', path, 'UTF-8 CSV', e, _KMNIST_URL) from None
    rows = [line.split(',') for line in lines]
    classes = [row[2] for row in sorted((r for r in rows if len(r) == 3 and r[0].isdigit()),
                                        key=lambda r: int(r[0]))]
    if len(classes) != 10:
        raise DataError(f'KMNIST class map {path} has {len(classes)} rows "index,codepoint,char",'
                        f' expected 10; {_fix(path, _KMNIST_URL)}')
    return classes


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
