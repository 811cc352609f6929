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

    def __iter__(self) -> 'Iterator':
        return self

    def __next__(self) -> Any:
        raise NotImplementedError

    def next(self) -> Any:
        """Chainer spelling of ``next(iterator)``."""
        return self.__next__()

    @property
    def epoch_detail(self) -> float:
        raise NotImplementedError

    @property
    def previous_epoch_detail(self) -> Optional[float]:
        raise NotImplementedError

    def reset(self) -> None:
        """Rewind to the beginning of the first epoch."""

    def finalize(self) -> None:
        """Release resources (worker processes …)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
