"""``chainer.functions`` the examples use, as the torch functions they are.

Labels may be any integer dtype (Chainer's int32). Names missing here: use
``torch.nn.functional`` directly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as _F

from trainerlib.models import accuracy, cross_entropy
from trainerlib.stochastic.losses import bernoulli_nll, gaussian_kl_divergence, gaussian_nll

relu = torch.relu
sigmoid = torch.sigmoid
tanh = torch.tanh
elu = _F.elu
leaky_relu = _F.leaky_relu
concat = torch.cat


def softmax(x: torch.Tensor, axis: int = 1) -> torch.Tensor:
    return torch.softmax(x, dim=axis)


def log_softmax(x: torch.Tensor, axis: int = 1) -> torch.Tensor:
    return torch.log_softmax(x, dim=axis)


def softmax_cross_entropy(x: torch.Tensor, t: torch.Tensor, reduce: str = 'mean',
                          ignore_label: int = -1) -> torch.Tensor:
    """Mean (``reduce='mean'``) or per-example (``'no'``) cross entropy of logits ``x``."""
    if reduce not in ('mean', 'no'):
        raise ValueError(f"reduce must be 'mean' or 'no', got {reduce!r}")
    return _F.cross_entropy(x, t.long(), ignore_index=ignore_label,
                            reduction='mean' if reduce == 'mean' else 'none')


def sigmoid_cross_entropy(x: torch.Tensor, t: torch.Tensor, reduce: str = 'mean') -> torch.Tensor:
    """Binary cross entropy of logits ``x`` against 0/1 labels ``t``."""
    if reduce not in ('mean', 'no'):
        raise ValueError(f"reduce must be 'mean' or 'no', got {reduce!r}")
    return _F.binary_cross_entropy_with_logits(x, t.to(x.dtype),
                                               reduction='mean' if reduce == 'mean' else 'none')


def mean_squared_error(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    return _F.mse_loss(x0, x1)


def dropout(x: torch.Tensor, ratio: float = 0.5, *, train: bool = True) -> torch.Tensor:
    """Chainer reads ``chainer.config.train``; here pass ``train=`` (or use ``nn.Dropout``,
    which follows ``module.train()``/``eval()``)."""
    return _F.dropout(x, ratio, training=train)


def max_pooling_2d(x: torch.Tensor, ksize, stride=None, pad=0) -> torch.Tensor:
    return _F.max_pool2d(x, ksize, ksize if stride is None else stride, pad)


def average_pooling_2d(x: torch.Tensor, ksize, stride=None, pad=0) -> torch.Tensor:
    return _F.avg_pool2d(x, ksize, ksize if stride is None else stride, pad)


def reshape(x: torch.Tensor, shape) -> torch.Tensor:
    return x.reshape(shape)


__all__ = ['accuracy', 'average_pooling_2d', 'bernoulli_nll', 'concat', 'cross_entropy',
           'dropout', 'elu', 'gaussian_kl_divergence', 'gaussian_nll',
           'leaky_relu', 'log_softmax', 'max_pooling_2d', 'mean_squared_error', 'relu',
           'reshape', 'sigmoid', 'sigmoid_cross_entropy', 'softmax', 'softmax_cross_entropy',
           'tanh']
