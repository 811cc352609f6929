"""The plain deep ReLU MLP of the init_study recipe, its two initialisations, and its
signal statistics at initialisation.

Glorot (Xavier) is ``torch.nn.init.xavier_normal_`` (gain 1), Var[w] = 2 / (fan_in + fan_out):
on the square hidden layers that is 1 / fan_in, exactly the "Xavier" He et al. (2015)
compare against in their 22- vs 30-layer experiment (Caffe's fan-in form). He (Kaiming) is
``torch.nn.init.kaiming_normal_(mode='fan_in', nonlinearity='relu')``, Var[w] = 2 / fan_in,
which keeps the second moment of the signal constant through ReLU layers (a ReLU halves it).
``distribution='uniform'`` uses ``xavier_uniform_`` / ``kaiming_uniform_`` with the same
variances. All biases are zero, as in both papers' derivations (a nonzero bias would mask
the vanishing signal, see /work/shared/ALGORITHMS.md §4.3).
"""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F

INITS = ('glorot', 'he')
DISTRIBUTIONS = ('normal', 'uniform')


def init_linear(layer: nn.Linear, init: str, distribution: str = 'normal') -> None:
    """Initialise one Linear layer in place: weights by ``init``, bias zero.

    Args:
        layer: the layer.
        init: ``'glorot'`` (Var = 2/(fan_in+fan_out)) or ``'he'`` (Var = 2/fan_in).
        distribution: ``'normal'`` (default) or ``'uniform'`` with the same variance.
    """
    if init not in INITS or distribution not in DISTRIBUTIONS:
        raise ValueError(f'init must be one of {INITS} and distribution one of '
                         f'{DISTRIBUTIONS}, got {init!r}, {distribution!r}')
    with torch.no_grad():
        if init == 'glorot':
            (nn.init.xavier_normal_ if distribution == 'normal'
             else nn.init.xavier_uniform_)(layer.weight, gain=1.0)
        else:
            (nn.init.kaiming_normal_ if distribution == 'normal'
             else nn.init.kaiming_uniform_)(layer.weight, mode='fan_in', nonlinearity='relu')
        if layer.bias is not None:
            layer.bias.zero_()


class PlainMLP(nn.Module):
    """``depth`` hidden Linear+ReLU layers of ``width`` units, then a Linear to the classes.

    No normalisation, no residuals: a "plain" net whose trainability depends only on
    the initialisation. ``depth`` counts hidden layers (the net has ``depth + 1`` weight
    layers). Input: ``(N, in_features)`` or images (flattened); output: logits.
    """

    def __init__(self, in_features: int, n_classes: int, depth: int, width: int,
                 init: str, distribution: str = 'normal') -> None:
        super().__init__()
        sizes = [in_features] + [width] * depth
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(sizes[-1], n_classes)
        for layer in (*self.hidden, self.out):
            init_linear(layer, init, distribution)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.out(x)

    def activations(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Post-ReLU activations of every hidden layer, then the logits."""
        acts = []
        x = x.flatten(1)
        for layer in self.hidden:
            x = torch.relu(layer(x))
            acts.append(x)
        acts.append(self.out(x))
        return acts


def signal_stats(net: PlainMLP, x: torch.Tensor, t: torch.Tensor) -> Dict[str, List[float]]:
    """Forward and backward signal of ``net`` on one batch (call it at initialisation).

    Returns ``act_std`` (std over units and examples of each hidden layer's post-ReLU
    output, then of the logits; one entry per weight layer), ``act_rms_ratio`` (the root
    mean square of each of those divided by the input's) and ``grad_std`` (std of the
    cross-entropy gradient of each weight matrix, first layer first). The net's ``.grad``
    are left as they were (None after construction).
    """
    params = [layer.weight for layer in (*net.hidden, net.out)]
    with torch.enable_grad():
        acts = net.activations(x)
        grads = torch.autograd.grad(F.cross_entropy(acts[-1], t), params)
    acts = [a.detach() for a in acts]
    x_rms = x.flatten(1).pow(2).mean().sqrt()
    return {
        'act_std': [float(a.std()) for a in acts],
        'act_rms_ratio': [float(a.pow(2).mean().sqrt() / x_rms) for a in acts],
        'grad_std': [float(g.std()) for g in grads],
    }
