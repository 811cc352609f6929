"""γ_p of every weight and bias from one pass of the "squared network" (Path-SGD).

The network is a DAG whose paths run from the inputs (and from a constant-1 node
per bias) to the outputs. For an edge ``e`` the path curvature is

    γ_p(w, e) = ( Σ_{paths ∋ e} Π_{e_k ≠ e} |w_{e_k}|^p )^{2/p}

Replacing every weight and bias by ``|w|^p``, every ReLU by the identity and
feeding an all-ones input gives ``φ_p^p = out.sum()``; since ``φ_p^p`` is affine
in each ``|w_e|^p``, ``∂ out.sum() / ∂|w_e|^p`` is the inner sum above. Autograd
of the squared network thus returns it for all edges at once (one forward and one
backward at batch size 1); a shared (conv) weight gets the sum over its edges.
For a Linear layer used once the inner sum is ``γ_out(v) · γ_in(u)``: the gradient
at the layer's output times its input, two vectors that autograd gives without
forming the outer product (:func:`path_gamma_factors`).
See ALGORITHMS.md §1.3–1.5.
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from trainerlib.models import Classifier
from trainerlib.optimizers.squared_network import (PASS_THROUGH, RESHAPE, SquaredNetwork,
                                                   UnsupportedModuleError, abs_pow,
                                                   check_supported)

__all__ = ['GammaFactors', 'UnsupportedModuleError', 'check_supported', 'input_linear',
           'path_gamma_factors', 'path_gammas', 'path_regularizer', 'scratch_like']


class GammaFactors(NamedTuple):
    """γ_p of a Linear weight as ``torch.outer(rows, cols)``: γ_out of its outputs
    (``out_features``) times γ_in of its inputs (``in_features``)."""

    rows: torch.Tensor
    cols: torch.Tensor


def path_gammas(model: nn.Module, input_shape: Sequence[int], p: float = 2,
                scratch: Optional[Dict[int, torch.Tensor]] = None
                ) -> Dict[nn.Parameter, torch.Tensor]:
    """γ_p for every parameter of ``model`` (same shape; detached, fresh every call).

    Args:
        model: a supported network (see :func:`check_supported`).
        input_shape: one example's shape without the batch axis, e.g. ``(C, H, W)``
            or ``(in_features,)``.
        p: the path-norm exponent (default 2, the paper's choice).
        scratch: optional dict kept by the caller between calls; the ``|w|^p`` are
            written into its tensors instead of new ones (faster for big layers).

    Returns:
        ``{parameter: γ_p}``; a parameter on no path (γ undefined) gets zeros.
    """
    return {w: g if isinstance(g, torch.Tensor) else torch.outer(*g)
            for w, g in path_gamma_factors(model, input_shape, p, scratch).items()}


def path_gamma_factors(model: nn.Module, input_shape: Sequence[int], p: float = 2,
                       scratch: Optional[Dict[int, torch.Tensor]] = None
                       ) -> Dict[nn.Parameter, Union[torch.Tensor, GammaFactors]]:
    """:func:`path_gammas`, with the γ of a Linear weight left as its two factors.

    A Linear layer used once, applied to one feature vector, has the rank-one
    γ_p = γ_out ⊗ γ_in (ALGORITHMS.md §1.3): its weight gets
    :class:`GammaFactors` ``(rows, cols)`` with γ_p = ``torch.outer(rows, cols)``,
    which is never formed (an optimizer can divide by the factors in turn). Every
    other parameter gets its full γ_p tensor. Same arguments as :func:`path_gammas`.
    """
    params = list(model.parameters())
    counts = Counter(id(w) for _, w in model.named_parameters(remove_duplicate=False))
    factorable = {id(m.weight) for m in model.modules()
                  if isinstance(m, nn.Linear) and counts[id(m.weight)] == 1}
    scratch = {} if scratch is None else scratch
    squared: Dict[int, torch.Tensor] = {}

    def square(w: torch.Tensor) -> torch.Tensor:
        """|w|^p in its scratch tensor, made once; a factorable weight needs no gradient."""
        leaf = squared.get(id(w))
        if leaf is None:
            with torch.no_grad():
                leaf = squared[id(w)] = abs_pow(w, p, out=scratch_like(scratch, w))
            leaf.requires_grad_(id(w) not in factorable)
        return leaf

    first = input_linear(model)
    if first is not None and id(first.weight) not in factorable:
        first = None
    net = SquaredNetwork(p, square, taps={}, ones_fed=first)
    ones = torch.ones(1, *input_shape, dtype=params[0].dtype, device=params[0].device)
    with torch.enable_grad():
        out = net.forward(model, ones)
        dense = [leaf for leaf in squared.values() if leaf.requires_grad]
        outputs = [tap[1] for tap in net.taps.values()]
        grads = torch.autograd.grad(out.sum(), dense + outputs, allow_unused=True)
    by_leaf = dict(zip(map(id, dense), grads))
    by_tap = dict(zip(net.taps, grads[len(dense):]))
    gammas: Dict[nn.Parameter, Union[torch.Tensor, GammaFactors]] = {}
    for w in params:
        if id(w) in net.taps:
            rows, cols = by_tap[id(w)], net.taps[id(w)][0]
            rows = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device) \
                if rows is None else rows[0]
            gammas[w] = GammaFactors(*(rows, cols) if p == 2 else
                                     (rows.pow(2.0 / p), cols.pow(2.0 / p)))
            continue
        leaf = squared.get(id(w))   # None: not in the network
        g = None if leaf is None else by_leaf.get(id(leaf))
        g = torch.zeros_like(w) if g is None else g.contiguous()   # no expanded views
        gammas[w] = g if p == 2 else g.pow(2.0 / p)
    return gammas


def path_regularizer(model: nn.Module, input_shape: Sequence[int], p: float = 2
                     ) -> torch.Tensor:
    """φ_p(w) = (Σ_paths Π_k |w_{e_k}|^p)^{1/p} (a 0-d tensor; biases are paths too)."""
    w0 = next(model.parameters())
    ones = torch.ones(1, *input_shape, dtype=w0.dtype, device=w0.device)
    with torch.no_grad():
        net = SquaredNetwork(p, lambda w: abs_pow(w.detach(), p))
        return net.forward(model, ones).sum().pow(1.0 / p)


def input_linear(model: nn.Module, through: Tuple[type, ...] = PASS_THROUGH + RESHAPE
                 ) -> Optional[nn.Linear]:
    """The Linear layer that the model's input reaches through ``through`` modules
    only (the first layer, after e.g. Flatten), or None."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            return m
        if not isinstance(m, (nn.Sequential, Classifier) + through):
            return None
    return None


def scratch_like(scratch: Dict[int, torch.Tensor], w: torch.Tensor) -> torch.Tensor:
    """The tensor kept in ``scratch`` for ``w`` (its shape, dtype and device), made once."""
    buffer = scratch.get(id(w))
    if buffer is None or buffer.shape != w.shape or buffer.dtype != w.dtype \
            or buffer.device != w.device:
        buffer = scratch[id(w)] = torch.empty_like(w)
    return buffer
