"""Drive a ``torch.utils.data.DataLoader`` with Chainer's epoch bookkeeping."""
from __future__ import annotations

import itertools
import warnings
from typing import Any, Optional

import torch

from trainerlib.convert import CollatedBatch
from trainerlib.iterators.iterator import Iterator, warn_degenerate_epoch

_TENSOR_TYPE = itertools.repeat(torch.Tensor)   # isinstance's second argument, for map


def _as_collated(batch: Any) -> Any:
    """Wrap a loader's (already collated) batch so that ``concat_examples`` only moves it.

    ``default_collate`` turns tuple examples into a *list* of columns, which would
    otherwise be taken for a list of examples and stacked together.
    """
    if isinstance(batch, (list, tuple)):   # columns, the usual case (a named tuple stays one)
        arrays = tuple(batch) if isinstance(batch, list) else batch
        if not arrays:
            return batch
        first = arrays[0]
        tensors = all(map(isinstance, arrays, _TENSOR_TYPE))   # the loop runs in C
    elif isinstance(batch, dict) and batch:
        arrays, first, tensors = batch, next(iter(batch.values())), False
    elif isinstance(batch, torch.Tensor):
        arrays, first, tensors = batch, batch, False
    else:
        return batch
    try:  # shape[0]: Tensor.__len__ is a Python function
        size = first.shape[0] if isinstance(first, torch.Tensor) else len(first)
    except (TypeError, IndexError):
        return batch
    return CollatedBatch(arrays, size, tensors)


def _sampler_generator(loader) -> Optional[torch.Generator]:
    sampler = getattr(loader, 'sampler', None)
    return getattr(sampler, 'generator', None) or getattr(loader, 'generator', None)


def _epoch_setters(loader) -> list:
    """The ``set_epoch`` methods of the loader's sampler and batch sampler (and its sampler).

    A ``DistributedSampler`` (or any sampler with ``set_epoch``) draws its order from
    ``(seed, epoch)``: without a call each epoch it repeats the first epoch's order.
    """
    batch_sampler = getattr(loader, 'batch_sampler', None)
    candidates = (getattr(loader, 'sampler', None), batch_sampler,
                  getattr(batch_sampler, 'sampler', None))
    setters, seen = [], set()
    for obj in candidates:
        fn = getattr(obj, 'set_epoch', None)
        if callable(fn) and id(obj) not in seen:
            seen.add(id(obj))
            setters.append(fn)
    return setters


def _length(obj: Any) -> Optional[int]:
    """``len(obj)``, or None where it has none (an iterable-style dataset or its sampler)."""
    try:
        return len(obj)
    except TypeError:
        return None


class DataLoaderIterator(Iterator):
    """Wraps a DataLoader (workers, pin_memory, custom samplers) as an iterator.

    One epoch is one pass over the loader (``len(loader)`` batches). Batches are
    what the loader yields (already collated), wrapped in a
    :class:`~trainerlib.convert.CollatedBatch` (a list of columns becomes a tuple),
    which ``concat_examples`` moves to the device.

    Resume: the position in the epoch is saved. For the same order after resume,
    give the DataLoader a seeded generator
    (``DataLoader(..., shuffle=True, generator=torch.Generator().manual_seed(0))``);
    its state at the start of the epoch is saved and the batches already used
    are skipped (they are loaded again, so resuming mid-epoch costs that time).

    A sampler with ``set_epoch`` (``torch.utils.data.DistributedSampler``, as the
    loader's ``sampler`` or its ``batch_sampler.sampler``) is told the epoch at
    the start of each one (``set_epoch(epoch)``, also for the epoch a resume
    restores), so each epoch has its own order, the same on every rank.

    Args:
        loader: a DataLoader with a length.
        repeat: start a new pass after each epoch (True) or stop.
    """

    def __init__(self, loader: torch.utils.data.DataLoader, repeat: bool = True) -> None:
        try:
            self._epoch_size = len(loader)
        except TypeError:
            raise ValueError('DataLoaderIterator needs a DataLoader with a length '
                             '(an iterable-style dataset has none)') from None
        if self._epoch_size == 0:
            raise ValueError('the DataLoader yields no batch: the dataset is empty or '
                             'drop_last removed every batch')
        self.loader = loader
        self.repeat = repeat
        warn_degenerate_epoch('DataLoaderIterator', _length(getattr(loader, 'dataset', None)),
                              _length(getattr(loader, 'sampler', None)),
                              getattr(loader, 'batch_size', None), repeat, batch_is_capped=True)
        self.reset()

    def reset(self) -> None:
        self.epoch = 0
        self.is_new_epoch = False
        self.current_position = 0
        self._previous_epoch_detail = -1.0
        self._it = None
        self._epoch_rng = None

    def _start_epoch(self) -> None:
        gen = _sampler_generator(self.loader)
        self._epoch_rng = None if gen is None else gen.get_state()
        for set_epoch in _epoch_setters(self.loader):
            set_epoch(self.epoch)
        self._it = iter(self.loader)

    def __next__(self) -> Any:
        if self._it is None:   # at the start of an epoch
            if not self.repeat and self.epoch > 0:
                raise StopIteration
            self._start_epoch()
        # (epoch_detail, computed here: this runs every iteration)
        self._previous_epoch_detail = self.epoch + self.current_position / self._epoch_size
        batch = next(self._it)
        self.current_position += 1
        self.is_new_epoch = self.current_position == self._epoch_size
        if self.is_new_epoch:
            self.epoch += 1
            self.current_position = 0
            self._it = None
        return _as_collated(batch)

    def finalize(self) -> None:
        self._it = None

    def state_dict(self) -> dict:
        gen = _sampler_generator(self.loader)
        if self._it is not None:
            rng = self._epoch_rng            # replay the current epoch's order
        else:
            rng = None if gen is None else gen.get_state()   # the next epoch's
        return {'epoch': self.epoch, 'current_position': self.current_position,
                'is_new_epoch': self.is_new_epoch,
                'previous_epoch_detail': self._previous_epoch_detail, 'rng': rng}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state['epoch']
        self.is_new_epoch = state['is_new_epoch']
        self._previous_epoch_detail = state['previous_epoch_detail']
        self.current_position = 0
        self._it = None
        position = state['current_position']
        gen = _sampler_generator(self.loader)
        if state['rng'] is not None and gen is not None:
            gen.set_state(state['rng'])
        elif position and isinstance(getattr(self.loader, 'sampler', None),
                                     torch.utils.data.RandomSampler):
            warnings.warn('DataLoaderIterator: the loader shuffles without a seeded generator, '
                          'so the rest of the interrupted epoch will not be the same batches')
        if position:
            self._start_epoch()
            for _ in range(position):
                next(self._it)
            self.current_position = position
