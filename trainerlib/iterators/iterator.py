"""The iterator interface the updater relies on (Chainer's ``Iterator``)."""
from __future__ import annotations

import warnings
from typing import Any, Optional


def warn_degenerate_epoch(owner: str, dataset_size: Optional[int], examples: Optional[int],
                          batch_size: Optional[int], repeat: bool,
                          batch_is_capped: bool = False, ranks: int = 1) -> None:
    """Warn (once, at construction) where a training iterator's setting silently degenerates.

    ``dataset_size``: examples in the dataset; ``examples``: examples in one epoch (a
    sampler's length); None where unknown. A dataset of one example makes every batch the
    same; a batch larger than an epoch counts several epochs per iteration (or, for a
    DataLoader, whose batches stop at the end of an epoch, ``batch_is_capped``: one epoch
    per iteration and smaller batches). ``repeat=False`` (evaluation) never warns.
    ``ranks > 1``: ``batch_size`` is the global batch of that many ranks.
    """
    if not repeat:
        return
    if dataset_size == 1:
        warnings.warn(f'{owner}: the dataset has a single example, so every batch is that '
                      'example (repeat=True); check the dataset or its split, or use '
                      'repeat=False to go over it once', UserWarning, stacklevel=3)
    elif examples is not None and batch_size is not None and batch_size > examples:
        if batch_is_capped:
            what = (f'each batch holds only those {examples} examples and each iteration is a '
                    "whole epoch, so (N, 'epoch') triggers and stop conditions fire every N "
                    'iterations')
        else:
            name = 'batch_size' if ranks == 1 else 'global batch'
            what = (f'each iteration counts {batch_size / examples:g} epochs '
                    f"({name} / {examples}), so (N, 'epoch') triggers and stop conditions "
                    f'fire after about N * {examples / batch_size:.3g} iterations')
        batch, limit = f'batch_size={batch_size}', examples
        if ranks > 1:
            batch = (f'the global batch {batch_size} (batch_size={batch_size // ranks} x '
                     f'{ranks} ranks)')
            limit = max(1, examples // ranks)
        warnings.warn(f'{owner}: {batch} is larger than the dataset ({examples} '
                      f'examples per epoch): {what}; use batch_size <= {limit}, or give '
                      "periods in 'iteration' units", UserWarning, stacklevel=3)


class Iterator:
    """Yields batches and keeps epoch bookkeeping.

    Attributes/properties every iterator provides: ``epoch`` (completed sweeps),
    ``epoch_detail`` (float position in epochs), ``previous_epoch_detail``
    (before the last batch; None before the first), ``is_new_epoch`` (the last
    batch ended an epoch), plus ``reset()``, ``finalize()``, ``state_dict()``
    and ``load_state_dict()``.
    """

    epoch: int = 0
    is_new_epoch: bool = False
    current_position: int = 0       # position in the current epoch (in _epoch_size units)
    _epoch_size: int = 1            # examples (or batches) in one epoch
    _previous_epoch_detail: float = -1.0   # -1: no batch taken yet

    def __iter__(self) -> 'Iterator':
        return self

    def __next__(self) -> Any:
        raise NotImplementedError

    def next(self) -> Any:
        """Chainer spelling of ``next(iterator)``."""
        return self.__next__()

    @property
    def epoch_detail(self) -> float:
        """Epochs done, as a float: ``epoch + current_position / epoch size``."""
        return self.epoch + self.current_position / self._epoch_size

    @property
    def previous_epoch_detail(self) -> Optional[float]:
        """``epoch_detail`` before the last batch; None before the first batch."""
        p = self._previous_epoch_detail
        return None if p < 0 else p

    def reset(self) -> None:
        """Rewind to the beginning of the first epoch."""

    def finalize(self) -> None:
        """Release resources (worker processes …)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
