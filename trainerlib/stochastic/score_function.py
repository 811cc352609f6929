"""The likelihood-ratio (score-function, REINFORCE) estimator as a surrogate loss."""
from __future__ import annotations

from typing import NamedTuple, Optional, Union

import torch


class Sampled(NamedTuple):
    """What a stochastic model returns for one draw of its random units.

    Attributes:
        loss: ``(N,)`` per-example loss ``f(z)`` of this draw, e.g. ``−ELBO``;
            differentiable through reparameterized samples.
        log_prob: ``(N,)`` log-probability ``log q(z | x)`` of the samples the gradient
            cannot pass (discrete units, or continuous ones drawn with ``sample()``
            for a likelihood-ratio estimate); None when every sample is
            reparameterized (``rsample()``): the gradient of ``loss`` is then the
            estimate.
    """
    loss: torch.Tensor
    log_prob: Optional[torch.Tensor] = None


def score_function_surrogate(loss: torch.Tensor, log_prob: torch.Tensor,
                             baseline: Union[torch.Tensor, float, None] = None) -> torch.Tensor:
    """A per-example surrogate whose gradient estimates ``∇ E_{z~q}[f(z)]`` without bias.

    ``surrogate = f(z) + (f(z) − b) · log q(z)``, the learning signal ``f(z) − b``
    taken as a constant: its gradient is ``∇f(z) + (f(z) − b) ∇log q(z)``. For any
    ``b`` that does not depend on ``z`` (a moving average of earlier draws, or a
    function of the input) the mean is unchanged, since ``E[∇log q(z)] = 0``; a good
    ``b`` lowers the variance. Its *value* is not the loss: report ``loss`` instead.

    Args:
        loss: ``(N,)`` the per-example loss of the draw.
        log_prob: ``(N,)`` ``log q(z | x)`` of the draw, with its graph to the parameters.
        baseline: ``b``, a scalar or ``(N,)``; its gradient is not taken (default 0).

    Returns:
        ``(N,)`` the surrogate; minimise its mean.
    """
    signal = loss.detach()
    if baseline is not None:
        signal = signal - (baseline.detach() if isinstance(baseline, torch.Tensor) else baseline)
    return loss + signal * log_prob
