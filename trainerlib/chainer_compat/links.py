"""``chainer.links`` the examples use: ``Linear``, ``Convolution2D``, ``Classifier``.

``Linear(None, n)`` and ``Convolution2D(None, n, k)`` infer their input size at the
first call (torch's lazy modules): create the optimizer after ``setup`` as Chainer
does; its parameters are materialized in place, so it trains them.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from trainerlib.chainer_compat.link import Link
from trainerlib.models import Classifier as _Classifier


def _flat_linear(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Chainer's Linear flattens ``(N, ...)`` to ``(N, -1)``."""
    return torch.nn.functional.linear(x.reshape(len(x), -1), module.weight, module.bias)


class _Linear(torch.nn.Linear):
    forward = _flat_linear


class _LazyLinear(torch.nn.LazyLinear):
    cls_to_become = _Linear   # what it is once its input size is known
    forward = _flat_linear

    def initialize_parameters(self, x: torch.Tensor) -> None:
        super().initialize_parameters(x.reshape(len(x), -1))


def Linear(in_size: Optional[int], out_size: Optional[int] = None,  # noqa: N802 (Chainer's name)
           nobias: bool = False) -> torch.nn.Module:
    """Chainer's ``L.Linear``: ``Linear(n_in, n_out)``, ``Linear(None, n_out)`` or
    ``Linear(n_out)`` (input size inferred); inputs are flattened to ``(N, -1)``."""
    if out_size is None:
        in_size, out_size = None, in_size
    if in_size is None:
        return _LazyLinear(out_size, bias=not nobias)
    return _Linear(in_size, out_size, bias=not nobias)


def Convolution2D(in_channels: Optional[int], out_channels: Optional[int] = None,  # noqa: N802
                  ksize: Union[int, tuple, None] = None, stride: Union[int, tuple] = 1,
                  pad: Union[int, tuple] = 0, nobias: bool = False) -> torch.nn.Module:
    """Chainer's ``L.Convolution2D(in, out, ksize, stride, pad)``; ``in=None`` or the
    two-argument form ``Convolution2D(out, ksize)`` infer the input channels."""
    if ksize is None:
        in_channels, out_channels, ksize = None, in_channels, out_channels
    if in_channels is None:
        return torch.nn.LazyConv2d(out_channels, ksize, stride, pad, bias=not nobias)
    return torch.nn.Conv2d(in_channels, out_channels, ksize, stride, pad, bias=not nobias)


class Classifier(_Classifier, Link):
    """trainerlib's :class:`~trainerlib.Classifier` with Chainer's link methods
    (``to_device``, ``cleargrads`` …)."""


__all__ = ['Classifier', 'Convolution2D', 'Linear']
