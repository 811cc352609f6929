"""Networks and optimizers of the Path-SGD recipe: balanced and unbalanced ReLU MLPs.

Balanced (Neyshabur et al. 2015, §5): every weight into a unit is drawn from
N(0, 1/fan_in), biases are 0. Unbalanced: the same network after node rescalings
ρ — per hidden layer, ``fraction`` of its units are drawn *with replacement*;
each draw multiplies the unit's incoming weights and bias by
``s = scale · exp(N(0, sigma²))`` and divides its outgoing weights by ``s``. The
function is unchanged (ReLU(s·x) = s·ReLU(x)); only the parametrisation differs.
"""
from __future__ import annotations

import math
from typing import List

import torch
from torch import nn

from trainerlib.optimizers import PathSGD

OPTIMIZERS = ('sgd', 'adagrad', 'path_sgd')
INITS = ('balanced', 'unbalanced')


def build_mlp(in_features: int, hidden: int, depth: int, n_classes: int,
              seed: int) -> nn.Sequential:
    """Flatten → (Linear(·, hidden) → ReLU) × depth → Linear(hidden, n_classes), balanced.

    The weights depend on ``seed`` only, so every cell of the grid starts from the
    same balanced network.
    """
    generator = torch.Generator().manual_seed(seed)
    layers: List[nn.Module] = [nn.Flatten()]
    sizes = [in_features] + [hidden] * depth + [n_classes]
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        linear = nn.Linear(fan_in, fan_out)
        with torch.no_grad():
            linear.weight.normal_(0., fan_in ** -0.5, generator=generator)
            linear.bias.zero_()
        layers.append(linear)
        if i < depth:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def unbalance(model: nn.Sequential, fraction: float, scale: float, sigma: float,
              seed: int) -> List[torch.Tensor]:
    """Rescale hidden units of ``model`` in place (see the module doc); same function.

    Args:
        model: a net from :func:`build_mlp`.
        fraction: draws per hidden layer, as a fraction of its units (paper: 2000
            of 4000 units, i.e. 0.5).
        scale: the factor's median, 10 in the paper.
        sigma: standard deviation of the factor's log (log-normal), 1.
        seed: seed of the draws (independent of the init seed).

    Returns:
        per hidden layer, the product of the factors each unit received (1: untouched).
    """
    generator = torch.Generator().manual_seed(seed)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    factors = []
    with torch.no_grad():
        for into, out_of in zip(linears, linears[1:]):
            units = into.out_features
            draws = max(1, round(fraction * units)) if fraction > 0 else 0
            picked = torch.randint(0, units, (draws,), generator=generator)
            log_s = math.log(scale) + sigma * torch.randn(draws, generator=generator,
                                                         dtype=torch.float64)
            total = torch.zeros(units, dtype=torch.float64).index_add_(0, picked, log_s)
            c = total.exp()
            into.weight.mul_(c.to(into.weight.dtype).unsqueeze(1))
            into.bias.mul_(c.to(into.bias.dtype))
            out_of.weight.div_(c.to(out_of.weight.dtype).unsqueeze(0))
            factors.append(c)
    return factors


def make_optimizer(name: str, model: nn.Module, lr: float,
                   in_features: int) -> torch.optim.Optimizer:
    """Plain (no momentum, no decay) SGD, AdaGrad or Path-SGD over ``model``, step size ``lr``."""
    if name == 'sgd':
        return torch.optim.SGD(model.parameters(), lr=lr)
    if name == 'adagrad':
        return torch.optim.Adagrad(model.parameters(), lr=lr)
    if name == 'path_sgd':
        return PathSGD(model, lr=lr, input_shape=(in_features,))
    raise ValueError(f'unknown optimizer {name!r}; choose one of {", ".join(OPTIMIZERS)}')
