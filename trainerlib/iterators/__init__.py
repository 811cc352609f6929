"""Dataset iterators: what the updater pulls batches from."""
from trainerlib.iterators.dataloader_iterator import DataLoaderIterator
from trainerlib.iterators.iterator import Iterator
from trainerlib.iterators.serial_iterator import SerialIterator

__all__ = ['DataLoaderIterator', 'Iterator', 'SerialIterator']
