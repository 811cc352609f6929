"""Chainer's VAE losses (``chainer.functions.gaussian_kl_divergence`` …) over torch.distributions.

``reduce='sum'`` (Chainer's default) sums every element, ``'mean'`` averages them,
``'no'`` keeps the elementwise values.
"""
from __future__ import annotations

import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

_REDUCE = ('sum', 'mean', 'no')


def _reduced(loss: torch.Tensor, reduce: str) -> torch.Tensor:
    if reduce == 'sum':
        return loss.sum()
    return loss.mean() if reduce == 'mean' else loss


def _check(reduce: str) -> None:
    if reduce not in _REDUCE:
        raise ValueError(f"only 'sum', 'mean' and 'no' are valid for 'reduce', but {reduce!r} "
                         'is given')


def _normal(mean: torch.Tensor, ln_var: torch.Tensor) -> Normal:
    return Normal(mean, torch.exp(0.5 * ln_var))


def gaussian_kl_divergence(mean: torch.Tensor, ln_var: torch.Tensor,
                           reduce: str = 'sum') -> torch.Tensor:
    """KL( N(mean, exp(ln_var)) ‖ N(0, 1) ), elementwise, then reduced.

    Args:
        mean: the Gaussian's mean.
        ln_var: the log of its variance (same shape).
        reduce: ``'sum'`` (default), ``'mean'`` or ``'no'``.
    """
    _check(reduce)
    q = _normal(mean, ln_var)
    prior = Normal(torch.zeros_like(mean), torch.ones_like(mean))
    return _reduced(kl_divergence(q, prior), reduce)


def bernoulli_nll(x: torch.Tensor, y: torch.Tensor, reduce: str = 'sum') -> torch.Tensor:
    """−log Bernoulli(x; sigmoid(y)), elementwise, then reduced.

    Args:
        x: the observations in [0, 1].
        y: the Bernoulli parameter *before* the sigmoid (logits), as in Chainer.
        reduce: ``'sum'`` (default), ``'mean'`` or ``'no'``.
    """
    _check(reduce)
    return _reduced(-Bernoulli(logits=y, validate_args=False).log_prob(x.to(y.dtype)), reduce)


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, ln_var: torch.Tensor,
                 reduce: str = 'sum') -> torch.Tensor:
    """−log N(x; mean, exp(ln_var)), elementwise, then reduced.

    Args:
        x: the observations.
        mean, ln_var: the Gaussian's mean and log variance (broadcast against ``x``).
        reduce: ``'sum'`` (default), ``'mean'`` or ``'no'``.
    """
    _check(reduce)
    return _reduced(-_normal(mean, ln_var).log_prob(x), reduce)
