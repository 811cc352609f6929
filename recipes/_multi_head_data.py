"""Multi-digit composites for the multi_head recipe: source images side by side, one label each.

The source images (e.g. the 10,000 MNIST test digits) are split into train and test
sources first; each composite is then made of ``positions`` images drawn from *one*
side of that split only, so no test composite shares a source image with a training
composite. Composites are stored as indices into the sources and drawn per batch
(``get_batch``), so 20,000 composites cost 20,000 x positions integers of memory.
"""
from __future__ import annotations

from typing import Any, Tuple

import torch

from trainerlib.datasets import DatasetMixin


def compose(images: torch.Tensor, overlap: int = 0) -> torch.Tensor:
    """Put ``images`` of shape ``(B, P, C, H, W)`` side by side: ``(B, C, H, P*W - (P-1)*overlap)``.

    Neighbours overlap by ``overlap`` pixels (default 0); in the overlap the
    brighter pixel wins (pixel-wise max, as in MultiMNIST).
    """
    b, p, c, h, w = images.shape
    if overlap == 0:
        return images.permute(0, 2, 3, 1, 4).reshape(b, c, h, p * w)
    step = w - overlap
    canvas = images.new_zeros(b, c, h, step * (p - 1) + w)
    for k in range(p):
        window = canvas[..., k * step:k * step + w]
        torch.maximum(window, images[:, k], out=window)
    return canvas


class Composites(DatasetMixin):
    """Composite images ``x`` and their labels ``t`` (``t[k]``: label of image ``k``, left first).

    Args:
        images: source images ``(N, C, H, W)``, float.
        labels: source labels ``(N,)``, int64.
        index: ``(M, P)`` int64 indices into the sources: composite ``i`` shows
            ``images[index[i, 0]]`` leftmost, then ``index[i, 1]`` ...
        overlap: pixels by which neighbours overlap (see :func:`compose`).
    """

    supports_batch = True

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor,
                 overlap: int = 0) -> None:
        if index.ndim != 2 or index.dtype != torch.int64:
            raise ValueError(f'index must be an int64 (M, positions) tensor, got '
                             f'{index.dtype} {tuple(index.shape)}')
        self.images, self.labels, self.index, self.overlap = images, labels, index, overlap

    def __len__(self) -> int:
        return len(self.index)

    @property
    def image_shape(self) -> Tuple[int, int, int]:
        """``(C, H, W)`` of one composite."""
        _, c, h, w = self.images.shape
        p = self.index.shape[1]
        return c, h, p * w - (p - 1) * self.overlap

    def get_example(self, i: int) -> Tuple[torch.Tensor, torch.Tensor]:
        x, t = self.get_batch(torch.tensor([i]))
        return x[0], t[0]

    def get_batch(self, indices: Any) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(x (B, C, H, W'), t (B, P))`` for ``indices`` (a slice or a LongTensor)."""
        rows = self.index[indices]
        return compose(self.images[rows], self.overlap), self.labels[rows]


def split_sources(n: int, test_fraction: float,
                  generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(train_ids, test_ids)``: a random partition of ``range(n)``; ``round(n*test_fraction)``
    (at least 1) go to test. The same order as ``split_dataset_random`` with the same seed."""
    n_test = max(1, round(n * test_fraction))
    order = torch.randperm(n, generator=generator)
    return order[:n - n_test], order[n - n_test:]


def build_composites(images: torch.Tensor, labels: torch.Tensor, *, positions: int,
                     train_size: int, test_size: int, test_fraction: float, seed: int,
                     overlap: int = 0) -> Tuple[Composites, Composites]:
    """Split the sources with ``seed``, then draw ``train_size`` / ``test_size`` composites.

    Each position of a composite is a source image drawn uniformly (with replacement)
    from the train sources for training composites and from the test sources for test
    composites. Deterministic for a given ``seed``.
    """
    g = torch.Generator().manual_seed(int(seed))
    train_ids, test_ids = split_sources(len(images), test_fraction, g)
    parts = []
    for ids, size in ((train_ids, train_size), (test_ids, test_size)):
        picks = torch.randint(len(ids), (size, positions), generator=g)
        parts.append(Composites(images, labels, ids[picks], overlap))
    return parts[0], parts[1]
