"""A sigmoid belief network (SBN) with an inference net, trained as in NVIL (Mnih & Gregor 2014).

Generative model, layers ``h_1 … h_L`` of binary units (``h_0 = x``, the image)::

    p(h_L) = Bernoulli(sigmoid(prior_logits))                 (factorised, learned logits)
    p(h_{l-1} | h_l) = Bernoulli(sigmoid(W_l h_l + b_l))     (decoders[l-1], linear)

Inference net (``encoders[l-1]``: linear, or an MLP of ``inference_hidden`` tanh units)::

    q(h_l | h_{l-1}) = Bernoulli(sigmoid(encoder_l(h_{l-1})))

``forward(x)`` draws ``h ~ q(h | x)`` with ``.sample()`` (the global torch RNG) and returns
``Sampled(loss=−(log p(x, h) − log q(h | x)), log_prob=log q(h | x))``, both ``(N,)``: the
per-example negative ELBO of that draw and the log-probability of the discrete draw, which
:class:`~trainerlib.updaters.StochasticUpdater` turns into the likelihood-ratio estimate.
It reports ``elbo`` (mean ELBO, nats), ``rec`` (mean reconstruction error −log p(x | h_1))
and ``kl`` (mean log q(h | x) − log p(h)); ``rec + kl = −elbo``.

Stable API (the variance study imports it)::

    model = SBN(784, layers=(200,), visible_mean=train_x.mean(0))
    updater = StochasticUpdater(it, opt, model, baseline='learned',
                                baseline_net=model.baseline_net)
    updater.gradient_estimates((x, labels), draws, model.inference_parameters())
    model, cfg = recipes.sbn.load_trained(run_dir, 'learned')   # a trained variant

    draw(x) -> (hs, log q); elbo(x, hs), log_joint, log_posterior, log_prior (N,);
    importance_bound(x, k), exact_log_likelihood(x) (<= 20 units); held_out(model, x, seed)

``baseline_net`` is the input-dependent baseline of NVIL (an MLP ``x -> (N,)``), a
submodule, so its parameters are trained by the model's optimizer. The densities are
``torch.distributions.Bernoulli``'s. :func:`held_out` evaluates with its own
``torch.Generator`` (the same numbers at every call for the same weights).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.distributions import Bernoulli as _Bernoulli

from trainerlib import reporter
from trainerlib.stochastic import Sampled


def _bernoulli(logits: torch.Tensor) -> _Bernoulli:
    """``torch.distributions.Bernoulli(logits=…)`` without argument checks (hot path)."""
    return _Bernoulli(logits=logits, validate_args=False)


def _net(n_in: int, n_out: int, hidden: int) -> nn.Module:
    """Linear ``n_in -> n_out``, or with one hidden layer of ``hidden`` tanh units."""
    if hidden <= 0:
        return nn.Linear(n_in, n_out)
    return nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, n_out))


class BaselineNet(nn.Module):
    """NVIL's input-dependent baseline ``b(x)``: an MLP with ``hidden`` tanh units -> (N,)."""

    def __init__(self, n_visible: int, hidden: int = 100) -> None:
        super().__init__()
        self.net = _net(n_visible, 1, hidden)

    def forward(self, x: torch.Tensor, *unused: Any) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class SBN(nn.Module):
    """Sigmoid belief network ``p(h) p(x | h)`` with inference net ``q(h | x)``.

    Args:
        n_visible: pixels per image (784).
        layers: latent layer sizes, bottom (next to ``x``) to top, e.g. ``(200,)``.
        inference_hidden: tanh units of each inference step's hidden layer (0: linear).
        baseline_hidden: tanh units of ``baseline_net`` (0: linear in ``x``).
        visible_mean: per-pixel mean of the training images: the visible biases start at
            its logits (the model starts as the independent-Bernoulli fit); None: 0.
    """

    def __init__(self, n_visible: int = 784, layers: Sequence[int] = (200,),
                 inference_hidden: int = 0, baseline_hidden: int = 100,
                 visible_mean: Optional[torch.Tensor] = None) -> None:
        super().__init__()
        if not layers or any(int(n) < 1 for n in layers) or n_visible < 1:
            raise ValueError(f'SBN: need n_visible >= 1 and layer sizes >= 1, got '
                             f'{n_visible}, {list(layers)}')
        self.n_visible, self.layers = n_visible, tuple(int(n) for n in layers)
        sizes = (n_visible,) + self.layers
        self.prior_logits = nn.Parameter(torch.zeros(self.layers[-1]))
        self.decoders = nn.ModuleList(nn.Linear(sizes[i + 1], sizes[i])
                                      for i in range(len(self.layers)))
        self.encoders = nn.ModuleList(_net(sizes[i], sizes[i + 1], inference_hidden)
                                      for i in range(len(self.layers)))
        self.baseline_net = BaselineNet(n_visible, baseline_hidden)
        if visible_mean is not None:
            p = visible_mean.detach().to(torch.float32).clamp(1e-3, 1 - 1e-3)
            with torch.no_grad():
                self.decoders[0].bias.copy_(torch.log(p) - torch.log1p(-p))

    def inference_parameters(self) -> List[nn.Parameter]:
        """The parameters of ``q(h | x)`` (those the likelihood-ratio estimate trains)."""
        return list(self.encoders.parameters())

    def generative_parameters(self) -> List[nn.Parameter]:
        """The parameters of ``p(x, h)``."""
        return [self.prior_logits] + list(self.decoders.parameters())

    def draw(self, x: torch.Tensor, generator: Optional[torch.Generator] = None
             ) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """A draw ``[h_1, …, h_L]`` of ``q(h | x)`` (floats 0/1, no gradient) and its
        ``(N,)`` log q(h | x) (with gradient). With ``generator`` the draw uses it
        (``torch.bernoulli``), else ``Bernoulli.sample()`` (the global RNG)."""
        hs, below, log_q = [], x, 0.0
        for encoder in self.encoders:
            q = _bernoulli(logits=encoder(below))
            # a NaN logit (a diverged net) must not stop the draw with an error: log q is
            # NaN anyway, and FailOnNonNumber names the parameter; finite logits: q itself
            sampler = _bernoulli(logits=torch.nan_to_num(q.logits.detach()))
            h = sampler.sample() if generator is None else \
                torch.bernoulli(sampler.probs, generator=generator)
            hs.append(h)
            log_q = log_q + q.log_prob(h).sum(-1)
            below = h
        return hs, log_q

    def log_posterior(self, x: torch.Tensor, hs: Sequence[torch.Tensor]) -> torch.Tensor:
        """``(N,)`` log q(h | x) of the given ``h``, summed over units and layers."""
        below, total = x, 0.0
        for encoder, h in zip(self.encoders, hs):
            total = total + _bernoulli(logits=encoder(below)).log_prob(h).sum(-1)
            below = h
        return total

    def log_prior(self, hs: Sequence[torch.Tensor]) -> torch.Tensor:
        """``(N,)`` log p(h) = log p(h_L) + Σ_l log p(h_{l-1} | h_l) for l ≥ 2."""
        top = hs[-1]
        total = _bernoulli(logits=self.prior_logits.expand_as(top)).log_prob(top).sum(-1)
        for l in range(1, len(hs)):
            total = total + self._log_conditional(l, hs[l - 1], hs[l])
        return total

    def log_likelihood(self, x: torch.Tensor, hs: Sequence[torch.Tensor]) -> torch.Tensor:
        """``(N,)`` log p(x | h_1)."""
        return self._log_conditional(0, x, hs[0])

    def log_joint(self, x: torch.Tensor, hs: Sequence[torch.Tensor]) -> torch.Tensor:
        """``(N,)`` log p(x, h)."""
        return self.log_likelihood(x, hs) + self.log_prior(hs)

    def elbo(self, x: torch.Tensor, hs: Sequence[torch.Tensor]) -> torch.Tensor:
        """``(N,)`` log p(x, h) − log q(h | x) for the given ``h`` (one draw of the ELBO)."""
        return self.log_joint(x, hs) - self.log_posterior(x, hs)

    def _log_conditional(self, l: int, below: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return _bernoulli(logits=self.decoders[l](h)).log_prob(below).sum(-1)

    def forward(self, x: torch.Tensor, *unused: Any) -> Sampled:
        """One draw ``h ~ q(h | x)``: ``Sampled(−ELBO, log q(h | x))`` per example."""
        hs, log_q = self.draw(x)
        rec = -self.log_likelihood(x, hs)
        kl = log_q - self.log_prior(hs)
        loss = rec + kl
        reporter.report({'elbo': -loss.detach().mean(), 'rec': rec.detach().mean(),
                         'kl': kl.detach().mean()}, self)
        return Sampled(loss, log_q)

    @torch.no_grad()
    def log_weights(self, x: torch.Tensor, k: int,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``(k, N)`` log p(x, h_j) − log q(h_j | x) for ``k`` draws ``h_j ~ q(h | x)``."""
        rows = []
        for _ in range(k):
            hs, log_q = self.draw(x, generator)
            rows.append(self.log_joint(x, hs) - log_q)
        return torch.stack(rows)

    @torch.no_grad()
    def importance_bound(self, x: torch.Tensor, k: int,
                         generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``(N,)`` log (1/k) Σ_j p(x, h_j) / q(h_j | x): a lower bound of log p(x) that
        tightens with ``k`` (k = 1: the ELBO), Burda et al. 2016."""
        return torch.logsumexp(self.log_weights(x, k, generator), 0) - math.log(k)

    @torch.no_grad()
    def exact_log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """``(N,)`` log p(x) = log Σ_h p(x, h) over all 2^(units) states (tiny nets only)."""
        units = sum(self.layers)
        if units > 20:
            raise ValueError(f'exact_log_likelihood sums 2^{units} states; at most 20 units')
        codes = torch.arange(2 ** units, device=x.device)
        bits = ((codes.unsqueeze(1) >> torch.arange(units, device=x.device)) & 1).to(x.dtype)
        states = list(torch.split(bits, list(self.layers), dim=1))
        rows = [self.log_joint(xi.expand(len(codes), -1), states) for xi in x]
        return torch.logsumexp(torch.stack(rows), 1)


@torch.no_grad()
def held_out(model: SBN, x: torch.Tensor, seed: int, elbo_samples: int = 1,
             importance_samples: int = 0, batch: int = 500) -> Dict[str, float]:
    """Mean bounds on ``x`` in nats per image, drawn with ``torch.Generator(seed)``.

    Returns ``{'nelbo': −ELBO (mean over elbo_samples draws)}``, plus ``'niw'``: −(the
    importance bound with importance_samples draws, after the ELBO's: the same ELBO with
    or without it) when that is > 0. The global RNG is not touched, so training
    continues the same whether or not it evaluates."""
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=x.device).manual_seed(seed)
    sums = {'nelbo': 0.0, 'niw': 0.0}
    batches = [x[start:start + batch] for start in range(0, len(x), batch)]
    for xb in batches:     # first the ELBO (the same draws with or without the bound) ...
        sums['nelbo'] -= model.log_weights(xb, elbo_samples, generator).mean(0).sum().item()
    for xb in batches if importance_samples > 0 else ():   # ... then the importance bound
        sums['niw'] -= model.importance_bound(xb, importance_samples, generator).sum().item()
    model.train(was_training)
    out = {'nelbo': sums['nelbo'] / len(x)}
    if importance_samples > 0:
        out['niw'] = sums['niw'] / len(x)
    return out
