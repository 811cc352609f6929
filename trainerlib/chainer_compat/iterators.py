"""``chainer.iterators``: trainerlib's iterators under Chainer's module name."""
from trainerlib.iterators import DataLoaderIterator, Iterator, SerialIterator

__all__ = ['DataLoaderIterator', 'Iterator', 'SerialIterator']
