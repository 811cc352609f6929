"""Dataset of labeled image files loaded lazily with Pillow (Chainer's ``LabeledImageDataset``)."""
from __future__ import annotations

import os
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .dataset_mixin import DatasetMixin

Pairs = Union[str, os.PathLike, Sequence[Tuple[str, Any]]]


def _read_pairs(path: Union[str, os.PathLike]) -> List[Tuple[str, int]]:
    """Parse ``path<whitespace or tab>label`` lines; blank lines and ``#`` comments are skipped."""
    pairs = []
    with open(path, encoding='utf-8') as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            parts = line.rsplit('\t', 1) if '\t' in line else line.rsplit(None, 1)
            if len(parts) != 2:
                raise ValueError(f'{path}:{lineno}: expected "path<tab or space>label", '
                                 f'got {line!r}')
            try:
                label = int(parts[1])
            except ValueError:
                raise ValueError(f'{path}:{lineno}: label must be an integer, '
                                 f'got {parts[1]!r}') from None
            pairs.append((parts[0].strip(), label))
    return pairs


# Maximum value per pixel dtype (kind + itemsize): 8-bit, 16-bit and 32-bit-int ('I') images.
_SCALES = {'u1': 255.0, 'u2': 65535.0, 'i4': 65535.0, 'b1': 1.0}


class LabeledImageDataset(DatasetMixin):
    """Images and integer labels listed as ``(path, label)`` pairs.

    Args:
        pairs: A list of ``(path, label)`` or the path of a text/TSV file with one
            ``path<whitespace or tab>label`` per line.
        root: Directory that relative image paths are resolved against.
        transform: If given, called with the ``PIL.Image``; its result is the example
            (so torchvision transforms v2 can be used). Labels are not passed.
        dtype: Image tensor dtype when no transform is given.
        label_dtype: Label tensor dtype.

    Without a transform, an example is ``(image, label)`` with ``image`` a CHW tensor scaled
    to ``[0, 1]``. With a transform, it is ``(transform(pil_image), label)``.
    """

    def __init__(self, pairs: Pairs, root: Union[str, os.PathLike] = '.',
                 transform: Optional[Callable[[Any], Any]] = None,
                 dtype: torch.dtype = torch.float32,
                 label_dtype: torch.dtype = torch.int64) -> None:
        if isinstance(pairs, (str, os.PathLike)):
            pairs = _read_pairs(pairs)
        self._pairs = [(str(p), l) for p, l in pairs]
        self._root = os.fspath(root)
        self._transform = transform
        self._dtype = dtype
        self._label_dtype = label_dtype

    def __len__(self) -> int:
        return len(self._pairs)

    def _load(self, path: str) -> Any:
        from PIL import Image
        full = os.path.join(self._root, path)
        if not os.path.isfile(full):
            raise FileNotFoundError(f'image file {path!r} not found under root '
                                    f'{os.path.abspath(self._root)!r} (looked for {full!r})')
        with Image.open(full) as img:
            img.load()
            return img

    def get_example(self, i: int) -> Tuple[Any, torch.Tensor]:
        path, label = self._pairs[i]
        image = self._load(path)
        label_t = torch.tensor(int(label), dtype=self._label_dtype)
        if self._transform is not None:
            return self._transform(image), label_t
        if image.mode == 'P':
            image = image.convert('RGBA' if 'transparency' in image.info else 'RGB')
        array = np.asarray(image)
        if array.ndim == 2:
            array = array[:, :, None]
        scale = _SCALES.get(array.dtype.kind + str(array.dtype.itemsize), 1.0)
        tensor = torch.from_numpy(array.transpose(2, 0, 1).astype(np.float32) / scale)
        return tensor.to(self._dtype), label_t
