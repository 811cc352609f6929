"""Dataset of labeled image files loaded lazily with Pillow (Chainer's ``LabeledImageDataset``).

Every problem with the list or an image raises :class:`~trainerlib.errors.DataError` (a
``ValueError``; a missing image also a ``FileNotFoundError``) with a one-line message naming the
file, its ``list:line`` and the fix.
"""
from __future__ import annotations

import os
from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import DataError, DataFileNotFoundError
from ._errors import reason
from .dataset_mixin import DatasetMixin

Pairs = Union[str, os.PathLike, Sequence[Tuple[str, Any]]]
_BOM = b'\xef\xbb\xbf'
_LINE_FORMAT = 'write each line as "path<TAB>label" (or "path label"), e.g. "cats/001.png 3"'


class _First(NamedTuple):
    """The first example loaded: what every later one is compared with."""
    path: str
    where: str
    image: str   # 'WxH MODE' of the Pillow image
    shape: Tuple[int, ...]


def _decode(path: str, lineno: int, raw: bytes) -> str:
    try:
        return raw.decode('utf-8')
    except UnicodeDecodeError as e:
        raise DataError(f'image list {path}:{lineno} is not UTF-8 text (byte 0x{raw[e.start]:02x} '
                        f'at column {e.start + 1}); save the list as UTF-8, e.g. '
                        f'iconv -f latin1 -t utf-8 OLD > NEW') from None


def _parse_line(path: str, lineno: int, line: str) -> Tuple[str, int]:
    parts = line.rsplit('\t', 1) if '\t' in line else line.rsplit(None, 1)
    if len(parts) != 2 or not parts[0].strip():
        raise DataError(f'{path}:{lineno}: expected "path<tab or space>label", got {line!r}; '
                        f'{_LINE_FORMAT}')
    try:
        label = int(parts[1])
    except ValueError:
        raise DataError(f'{path}:{lineno}: label must be an integer, got {parts[1]!r}; number '
                        f'the classes 0, 1, 2, ... ({_LINE_FORMAT})') from None
    return parts[0].strip(), label


def _read_pairs(path: Union[str, os.PathLike]) -> Tuple[List[Tuple[str, int]], List[int]]:
    """Parse ``path<whitespace or tab>label`` lines (UTF-8); blank lines and ``#`` comments are
    skipped. Returns the pairs and the line number of each."""
    path = os.fspath(path)
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except FileNotFoundError:
        raise DataFileNotFoundError(f'image list {path} not found; pass the path of a text/TSV '
                                    f'file with one "path label" per line') from None
    except OSError as e:
        raise DataError(f'image list {path} cannot be read ({reason(e)}); pass a readable '
                        f'text/TSV file with one "path label" per line') from None
    pairs, lines = [], []
    for lineno, raw in enumerate(data.splitlines(), 1):
        if lineno == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM):]
        line = _decode(path, lineno, raw).strip()
        if line and not line.startswith('#'):
            pairs.append(_parse_line(path, lineno, line))
            lines.append(lineno)
    if not pairs:
        raise DataError(f'image list {path} has no entries; {_LINE_FORMAT}')
    return pairs, lines


def _checked_pairs(pairs: Sequence[Tuple[Any, Any]]) -> List[Tuple[str, int]]:
    out = []
    for i, pair in enumerate(pairs):
        try:
            path, label = pair
            out.append((os.fspath(path), int(label)))
        except (TypeError, ValueError):
            raise DataError(f'pairs[{i}] must be (path, integer label), got {pair!r}; number '
                            f'the classes 0, 1, 2, ...') from None
    return out


# Maximum value per pixel dtype (kind + itemsize): 8-bit, 16-bit and 32-bit-int ('I') images.
_SCALES = {'u1': 255.0, 'u2': 65535.0, 'i4': 65535.0, 'b1': 1.0}


class LabeledImageDataset(DatasetMixin):
    """Images and integer labels listed as ``(path, label)`` pairs.

    Args:
        pairs: A list of ``(path, label)`` or the path of a UTF-8 text/TSV file with one
            ``path<whitespace or tab>label`` per line.
        root: Directory that relative image paths are resolved against.
        transform: If given, called with the ``PIL.Image``; its result is the example
            (so torchvision transforms v2 can be used). Labels are not passed.
        dtype: Image tensor dtype when no transform is given.
        label_dtype: Label tensor dtype.
        same_size: Check that every image tensor (the transform's output, when it is a
            tensor) has the shape of the first one loaded, so that mixed sizes or modes
            (grayscale and RGB) name the two files instead of failing in ``torch.stack``.
            Pass False for variable-size images batched with ``concat_examples(padding=...)``.

    Without a transform, an example is ``(image, label)`` with ``image`` a CHW tensor scaled
    to ``[0, 1]``. With a transform, it is ``(transform(pil_image), label)``.

    Raises:
        DataError: for an unreadable, non-UTF-8 or malformed list (``list:line``), and, when
            an example is loaded, for a damaged or non-image file or a size/mode that differs
            from the first image (:class:`DataFileNotFoundError` for a missing file).
    """

    def __init__(self, pairs: Pairs, root: Union[str, os.PathLike] = '.',
                 transform: Optional[Callable[[Any], Any]] = None,
                 dtype: torch.dtype = torch.float32,
                 label_dtype: torch.dtype = torch.int64, same_size: bool = True) -> None:
        self._list: Optional[str] = None
        self._lines: Optional[List[int]] = None
        if isinstance(pairs, (str, os.PathLike)):
            self._list = os.fspath(pairs)
            self._pairs, self._lines = _read_pairs(pairs)
        else:
            self._pairs = _checked_pairs(pairs)
        self._root = os.fspath(root)
        self._transform = transform
        self._dtype = dtype
        self._label_dtype = label_dtype
        self._same_size = same_size
        self._first: Optional[_First] = None

    def __len__(self) -> int:
        return len(self._pairs)

    def _where(self, i: int) -> str:
        """Where entry ``i`` was listed: ``list:line`` or ``pairs[i]``."""
        return f'pairs[{i}]' if self._lines is None else f'{self._list}:{self._lines[i]}'

    def _remove_hint(self, i: int) -> str:
        return f'remove line {self._lines[i]} of {self._list}' if self._lines is not None \
            else f'remove pairs[{i}]'

    def _load(self, i: int, path: str) -> Any:
        try:
            from PIL import Image
        except ImportError:
            raise ImportError('LabeledImageDataset needs Pillow: pip install pillow') from None
        full = os.path.join(self._root, path)
        if not os.path.isfile(full):
            raise DataFileNotFoundError(
                f'image file {path!r} ({self._where(i)}) not found under root '
                f'{os.path.abspath(self._root)!r} (looked for {full!r}); fix the path, pass '
                f'root= the folder the paths are relative to, or {self._remove_hint(i)}')
        try:
            with Image.open(full) as img:
                img.load()
                return img
        except MemoryError:
            raise
        except Image.UnidentifiedImageError:
            raise DataError(f'image file {full} ({self._where(i)}) is not an image Pillow can '
                            f'read; replace it with a PNG/JPEG file or {self._remove_hint(i)}'
                            ) from None
        except Exception as e:  # Pillow's decoders raise OSError, SyntaxError, ValueError...
            raise DataError(f'image file {full} ({self._where(i)}) is damaged ({reason(e)}); '
                            f'replace it with an intact copy or {self._remove_hint(i)}') from None

    def _check_shape(self, i: int, path: str, image: Any, shape: Tuple[int, ...],
                     what: str) -> None:
        """Remember the first example; raise if ``shape`` differs from its shape (one compare)."""
        first = self._first
        if first is None:
            self._first = _First(os.path.join(self._root, path), self._where(i),
                                 f'{image.size[0]}x{image.size[1]} {image.mode}', shape)
            return
        if shape == first.shape:
            return
        full = os.path.join(self._root, path)
        here = f'{image.size[0]}x{image.size[1]} {image.mode}'
        if what == 'image':
            head = (f'images {first.path} ({first.image}, {first.where}) and {full} ({here}, '
                    f'{self._where(i)}) differ in size/mode')
            fix = 'convert them to one size and mode, or pass a transform that resizes and ' \
                  'converts them (e.g. torchvision.transforms.v2.Resize, Grayscale)'
        else:
            head = (f'the transform gave shape {tuple(first.shape)} for {first.path} '
                    f'({first.image}, {first.where}) but {tuple(shape)} for {full} ({here}, '
                    f'{self._where(i)})')
            fix = 'make the transform resize and convert every image to one size and mode'
        raise DataError(f'{head}; {fix}, or pass same_size=False to batch different sizes '
                        f'with concat_examples(padding=...)')

    def get_example(self, i: int) -> Tuple[Any, torch.Tensor]:
        path, label = self._pairs[i]
        image = self._load(i, path)
        label_t = torch.tensor(label, dtype=self._label_dtype)
        if self._transform is not None:
            out = self._transform(image)
            if self._same_size and isinstance(out, torch.Tensor):
                self._check_shape(i, path, image, tuple(out.shape), 'transform')
            return out, label_t
        if image.mode == 'P':
            image = image.convert('RGBA' if 'transparency' in image.info else 'RGB')
        array = np.asarray(image)
        if array.ndim == 2:
            array = array[:, :, None]
        if self._same_size:
            self._check_shape(i, path, image, array.shape, 'image')
        scale = _SCALES.get(array.dtype.kind + str(array.dtype.itemsize), 1.0)
        tensor = torch.from_numpy(array.transpose(2, 0, 1).astype(np.float32) / scale)
        return tensor.to(self._dtype), label_t
