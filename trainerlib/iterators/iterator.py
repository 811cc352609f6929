"""The iterator interface the updater relies on (Chainer's ``Iterator``)."""
from __future__ import annotations

from typing import Any, Optional


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
