"""A variational autoencoder: Gaussian latent, Bernoulli decoder, MLP encoder and decoder.

``q(z | x) = N(mu(x), diag exp(ln_var(x)))`` from ``n_in-hidden-hidden-(2 latent)``;
``p(z) = N(0, I)``; ``p(x | z) = Bernoulli(logits(z))`` from ``latent-hidden-hidden-n_in``.
The per-example loss is ``-ELBO = -log p(x | z) + KL(q(z | x) || p(z))`` for one draw
``z ~ q`` (the KL in closed form, as Kingma & Welling's estimator B and Chainer's VAE
example). Its expectation over ``z`` is ``-E_q[log p(x | z) + log p(z) - log q(z | x)]``.

Two gradient estimators of the encoder (the seed's talk: reparameterization vs
likelihood ratio), chosen by ``estimator``:

* ``'reparameterization'``: ``z = q.rsample()`` (``mu + sigma * eps``); the gradient passes
  through ``z``: :class:`~trainerlib.updaters.StochasticUpdater` minimises the loss itself;
* ``'likelihood_ratio'``: ``z = q.sample()`` (no gradient through ``z``) and
  ``log_prob = log q(z | x)``: the updater's score-function surrogate adds
  ``(loss - b) * grad log q(z | x)``. The KL term keeps its direct, exact gradient.

Both give the same loss value for the same ``z`` (``forward(x, eps=...)``).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn
from torch.distributions import Bernoulli, Normal, kl_divergence

from trainerlib import reporter
from trainerlib.stochastic import Sampled

ESTIMATORS = ('reparameterization', 'likelihood_ratio')
ACTIVATIONS = {'relu': nn.ReLU, 'tanh': nn.Tanh}


def mlp(sizes: Tuple[int, ...], activation: str) -> nn.Sequential:
    """Linear layers of ``sizes`` with ``activation`` between them (none after the last)."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(ACTIVATIONS[activation]())
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """Gaussian-latent, Bernoulli-output VAE; ``forward(x)`` returns ``Sampled(-ELBO, log_prob)``.

    Reports (to the current reporter, as this module's observer): ``elbo`` (the mean
    ELBO of the draw, nats per example), ``rec`` (mean ``-log p(x | z)``) and ``kl``
    (mean ``KL(q(z | x) || p(z))``).

    Args:
        n_in: input size (784 for 28x28 images), inputs in {0, 1}.
        hidden: units of each of the two hidden layers of the encoder and the decoder.
        latent: size of ``z``.
        estimator: ``'reparameterization'`` (default) or ``'likelihood_ratio'``.
        activation: ``'relu'`` (default) or ``'tanh'``.
    """

    def __init__(self, n_in: int = 784, hidden: int = 500, latent: int = 20,
                 estimator: str = 'reparameterization', activation: str = 'relu') -> None:
        super().__init__()
        if estimator not in ESTIMATORS:
            raise ValueError(f'VAE: estimator must be one of {", ".join(ESTIMATORS)}, '
                             f'got {estimator!r}')
        if activation not in ACTIVATIONS:
            raise ValueError(f'VAE: activation must be one of {", ".join(ACTIVATIONS)}, '
                             f'got {activation!r}')
        for name, value in (('n_in', n_in), ('hidden', hidden), ('latent', latent)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f'VAE: {name} must be an integer >= 1, got {value!r}')
        self.n_in, self.hidden, self.latent = n_in, hidden, latent
        self.estimator = estimator
        self.encoder = mlp((n_in, hidden, hidden, 2 * latent), activation)
        self.decoder = mlp((latent, hidden, hidden, n_in), activation)

    def encode(self, x: torch.Tensor) -> Normal:
        """``q(z | x)``: a Normal of batch shape ``(N, latent)`` (mean, std from ``ln_var``)."""
        mean, ln_var = self.encoder(x).chunk(2, dim=-1)
        return Normal(mean, torch.exp(0.5 * ln_var))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The Bernoulli logits ``(N, n_in)`` of ``p(x | z)``."""
        return self.decoder(z)

    def prior(self, z: torch.Tensor) -> Normal:
        """``p(z) = N(0, I)`` shaped as ``z``."""
        return Normal(torch.zeros_like(z), torch.ones_like(z))

    def set_output_bias(self, pixel_mean: torch.Tensor) -> None:
        """Start the decoder at the data's per-pixel mean (logit of it, clipped)."""
        p = pixel_mean.clamp(1e-3, 1 - 1e-3)
        with torch.no_grad():
            self.decoder[-1].bias.copy_(torch.log(p) - torch.log1p(-p))

    def forward(self, x: torch.Tensor, eps: Optional[torch.Tensor] = None) -> Sampled:
        """One draw ``z`` per row of ``x``: ``Sampled(loss=-ELBO (N,), log_prob)``.

        Args:
            x: ``(N, n_in)`` binary inputs.
            eps: optional ``(N, latent)`` standard-normal noise: ``z = mu + sigma * eps``
                instead of a draw from torch's global generator (a fixed evaluation; the
                two estimators' losses compared on the same ``z``).
        """
        q = self.encode(x)
        reparameterize = self.estimator == 'reparameterization'
        if eps is not None:
            z = q.loc + q.scale * eps
        else:
            z = q.rsample() if reparameterize else q.sample()
        if not reparameterize:
            z = z.detach()     # the likelihood ratio: no gradient through the sample
        rec = -Bernoulli(logits=self.decode(z)).log_prob(x).sum(-1)
        kl = kl_divergence(q, self.prior(z)).sum(-1)
        loss = rec + kl
        reporter.report({'elbo': -loss.mean(), 'rec': rec.mean(), 'kl': kl.mean()}, self)
        return Sampled(loss, None if reparameterize else q.log_prob(z).sum(-1))

    def log_weights(self, x: torch.Tensor, z: torch.Tensor,
                    q: Optional[Normal] = None) -> torch.Tensor:
        """``log p(x | z) + log p(z) - log q(z | x)`` for ``z`` of shape ``(..., N, latent)``
        (leading sample dimensions broadcast against ``x``); its mean over ``z ~ q`` is the
        ELBO, its log-mean-exp the importance-weighted bound."""
        q = self.encode(x) if q is None else q
        logits = self.decode(z)
        log_px = Bernoulli(logits=logits).log_prob(x.expand_as(logits)).sum(-1)
        return log_px + self.prior(z).log_prob(z).sum(-1) - q.log_prob(z).sum(-1)
