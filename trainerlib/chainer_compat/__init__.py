"""Chainer's spellings outside ``chainer.training``, for ported scripts.

A Chainer script ports by rewriting its import lines alone::

    import chainer                   ->  import trainerlib.chainer_compat as chainer
    import chainer.functions as F    ->  import trainerlib.chainer_compat.functions as F
    import chainer.links as L        ->  import trainerlib.chainer_compat.links as L
    import chainerx                  ->  import trainerlib.chainer_compat.chainerx as chainerx
    from chainer import training     ->  from trainerlib import training
    from chainer.training import extensions  ->  from trainerlib.training import extensions

What is here is thin: ``Chain`` is an ``nn.Module``, ``optimizers.Adam`` a
``torch.optim.Adam`` once ``setup(link)`` gave it its parameters, ``get_device`` a
device name torch accepts, ``iterators``/``datasets``/``serializers`` trainerlib's own.
New code should use PyTorch and trainerlib directly; this covers the names Chainer's
examples use, not all of Chainer.
"""
from trainerlib import training
from trainerlib.chainer_compat import (chainerx, datasets, functions, iterators, links,
                                       optimizers, serializers)
from trainerlib.chainer_compat.device import Device, get_device
from trainerlib.chainer_compat.link import Chain, ChainList, Link

__all__ = ['Chain', 'ChainList', 'Device', 'Link', 'chainerx', 'datasets', 'functions',
           'get_device', 'iterators', 'links', 'optimizers', 'serializers', 'training']
