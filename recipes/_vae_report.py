"""What the vae recipe measures and draws: a fixed-noise held-out ELBO, the importance-weighted
log-likelihood, reconstructions, samples from the prior, the 2-D latent space."""
from __future__ import annotations

import math
from typing import Any, Callable, Tuple

import torch

from trainerlib.extensions.plot_report import new_figure, save_png
from trainerlib.recipes._vae_model import VAE

SIDE = 28   # the images' height and width (784 pixels)


class FixedNoise:
    """The Evaluator's ``eval_func`` and ``eval_hook``: each evaluation draws its noise from
    a generator reseeded to ``seed`` first, so the held-out ELBO is a function of the
    weights alone (a resumed run reports the same numbers) and leaves torch's global
    generator, the training draws', untouched.

    Args:
        model: the VAE.
        samples: draws ``z`` per image (the reported ELBO is their mean).
        seed: the generator's seed.
    """

    def __init__(self, model: VAE, samples: int, seed: int) -> None:
        self.model, self.samples, self.seed = model, samples, seed
        self.generator = torch.Generator().manual_seed(seed)

    def hook(self, evaluator: Any = None) -> None:
        self.generator.manual_seed(self.seed)

    def __call__(self, x: torch.Tensor) -> None:
        x = x.repeat(self.samples, 1)
        eps = torch.randn(len(x), self.model.latent, generator=self.generator)
        self.model(x, eps=eps.to(x.device))


@torch.no_grad()
def importance_nll(model: VAE, x: torch.Tensor, k: int, seed: int, batch: int = 100) -> float:
    """``-log p(x)`` (nats per image) estimated with ``k`` importance samples from ``q``:
    ``-log (1/k) sum_j p(x, z_j) / q(z_j | x)``, averaged over ``x``. It lies below the
    ``-ELBO`` (the ``k = 1`` case in expectation) and approaches ``-log p(x)`` as ``k``
    grows (Burda et al. 2016)."""
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    for start in range(0, len(x), batch):
        xb = x[start:start + batch]
        q = model.encode(xb)
        eps = torch.randn(k, len(xb), model.latent, generator=generator).to(xb.device)
        log_w = model.log_weights(xb, q.loc + q.scale * eps, q)           # (k, n)
        total += float((torch.logsumexp(log_w, 0) - math.log(k)).sum())
    return -total / len(x)


def as_images(flat: torch.Tensor) -> torch.Tensor:
    """``(N, 784)`` -> ``(N, 1, 28, 28)``."""
    return flat.reshape(-1, 1, SIDE, SIDE)


@torch.no_grad()
def reconstructions(model: VAE, x: torch.Tensor, per_row: int = 8) -> torch.Tensor:
    """Rows of test images, each followed by the row of their reconstructions (the Bernoulli
    means of ``p(x | z)`` at ``z`` = the mean of ``q(z | x)``)."""
    x = x[:len(x) - len(x) % per_row] if len(x) >= per_row else x
    recon = torch.sigmoid(model.decode(model.encode(x).loc))
    rows = [t for i in range(0, len(x), per_row)
            for t in (x[i:i + per_row], recon[i:i + per_row])]
    return as_images(torch.cat(rows)).cpu()


def prior_sampler(model: VAE, n: int, seed: int) -> Callable[[Any], torch.Tensor]:
    """``fn(trainer)``: the Bernoulli means of ``p(x | z)`` for ``n`` fixed ``z ~ p(z)``."""
    z = torch.randn(n, model.latent, generator=torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def sample(trainer: Any = None) -> torch.Tensor:
        device = next(model.parameters()).device
        return as_images(torch.sigmoid(model.decode(z.to(device)))).cpu()
    return sample


@torch.no_grad()
def manifold(model: VAE, n: int = 15) -> torch.Tensor:
    """A 2-D latent: images decoded on an ``n x n`` grid of the prior's quantiles."""
    normal = torch.distributions.Normal(0.0, 1.0)
    ticks = normal.icdf(torch.linspace(0.5 / n, 1 - 0.5 / n, n))
    z = torch.stack(torch.meshgrid(ticks, -ticks, indexing='xy'), -1).reshape(-1, 2)
    device = next(model.parameters()).device
    return as_images(torch.sigmoid(model.decode(z.to(device)))).cpu()


@torch.no_grad()
def latent_means(model: VAE, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """The means of ``q(z | x)`` of every row of ``x`` (on the CPU)."""
    return torch.cat([model.encode(x[i:i + batch]).loc.cpu() for i in range(0, len(x), batch)])


def plot_latent(means: torch.Tensor, labels: torch.Tensor, path: str,
                title: str = '') -> Tuple[float, float]:
    """Scatter of 2-D latent means coloured by class, with the prior's 1- and 2-sigma
    circles; returns the means' overall (std z1, std z2)."""
    figure = new_figure((6.4, 5.6))
    axes = figure.add_subplot(1, 1, 1)
    points = axes.scatter(means[:, 0], means[:, 1], c=labels, cmap='tab10', s=4,
                          vmin=-0.5, vmax=9.5)
    angle = torch.linspace(0, 2 * math.pi, 200)
    for r in (1, 2):
        axes.plot(r * torch.cos(angle), r * torch.sin(angle), 'k:', linewidth=0.8)
    figure.colorbar(points, ax=axes, ticks=range(10), label='class')
    axes.set_xlabel('z1 (mean of q(z | x))')
    axes.set_ylabel('z2')
    axes.set_aspect('equal', 'datalim')
    axes.set_title(title or 'held-out images in the 2-D latent space')
    save_png(figure, path, dpi=100)
    std = means.std(0)
    return float(std[0]), float(std[1])


def reference_line(nats: float) -> Callable[[Any, Any, Any], None]:
    """A PlotReport ``postprocess`` drawing the independent-Bernoulli ELBO ``-nats``."""
    def draw(figure: Any, axes: Any, summary: Any) -> None:
        axes.axhline(-nats, color='grey', linestyle='--',
                     label=f'independent Bernoulli ({-nats:.1f})')
        axes.set_ylabel('ELBO (nats per image)')
    return draw
