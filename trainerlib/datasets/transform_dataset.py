"""Dataset applying a function to each example (Chainer's ``TransformDataset``)."""
from __future__ import annotations

from typing import Any, Callable

from .dataset_mixin import DatasetMixin


class TransformDataset(DatasetMixin):
    """Lazily apply ``transform`` to every example of ``dataset``.

    Args:
        dataset: Any indexable dataset with ``len``.
        transform: Called with one example; its result is the new example.
    """

    def __init__(self, dataset: Any, transform: Callable[[Any], Any]) -> None:
        self._dataset = dataset
        self._transform = transform

    def __len__(self) -> int:
        return len(self._dataset)

    def get_example(self, i: int) -> Any:
        return self._transform(self._dataset[i])
