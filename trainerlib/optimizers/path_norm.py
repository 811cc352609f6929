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
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from trainerlib.errors import TrainerlibError
from trainerlib.models import Classifier

class GammaFactors(NamedTuple):
    """γ_p of a Linear weight as ``torch.outer(rows, cols)``: γ_out of its outputs
    (``out_features``) times γ_in of its inputs (``in_features``)."""

    rows: torch.Tensor
    cols: torch.Tensor


#: identity at γ: ReLU is positively homogeneous; dropout is off for the γ pass
PASS_THROUGH = (nn.ReLU, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
RESHAPE = (nn.Flatten, nn.Unflatten)
CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
SUPPORTED = 'Sequential, Linear, Conv1d/2d/3d, ReLU, Dropout, Identity, Flatten, ' \
            'Unflatten, AvgPool2d, MaxPool2d (a Classifier is unwrapped to its predictor)'


class UnsupportedModuleError(TrainerlibError, TypeError):
    """The model holds a module outside Path-SGD's theory (ReLU networks of linear maps)."""


def check_supported(model: nn.Module) -> None:
    """Raise :class:`UnsupportedModuleError` naming the first module γ cannot handle."""
    for name, m in model.named_modules():
        if isinstance(m, (nn.Sequential, Classifier) + PASS_THROUGH + RESHAPE + CONV
                      + (nn.Linear, nn.AvgPool2d, nn.MaxPool2d)):
            continue
        raise UnsupportedModuleError(
            f'Path-SGD cannot handle module {name or "<root>"!r} ({type(m).__name__}): '
            'it is outside the path-norm theory (normalisation layers, non-ReLU activations '
            'and custom forward() code have no path decomposition). Supported: '
            f'{SUPPORTED}. Remove it, or fold eval-mode BatchNorm into the preceding layer.')


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
                leaf = squared[id(w)] = _abs_pow(w, p, out=scratch_like(scratch, w))
            leaf.requires_grad_(id(w) not in factorable)
        return leaf

    first = input_linear(model)
    net = _SquaredNet(p, square, taps={},
                      ones_fed=first if first is not None and id(first.weight) in factorable
                      else None)
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
        net = _SquaredNet(p, lambda w: _abs_pow(w.detach(), p))
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


def _abs_pow(w: torch.Tensor, p: float, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    if p == 2:
        return torch.mul(w, w, out=out)
    return torch.pow(torch.abs(w, out=out), p, out=out)


class _SquaredNet:
    """The model with every parameter ``w`` → ``square(w)`` (|w|^p), ReLU → identity
    and pools → sums.

    With ``taps``, a Linear whose ``square(weight)`` needs no gradient and whose
    input is one feature vector records ``{id(weight): (input vector, output)}``
    (the output made differentiable); any other use of such a weight makes it
    require grad, so that its γ comes from autograd instead. The tapped Linear
    ``ones_fed``, whose input is the all-ones vector, is computed from the row sums
    of |w|^p, without forming |w|^p.
    """

    def __init__(self, p: float, square: Callable[[torch.Tensor], torch.Tensor],
                 taps: Optional[Dict[int, Tuple[torch.Tensor, torch.Tensor]]] = None,
                 ones_fed: Optional[nn.Linear] = None) -> None:
        self.p, self.square, self.taps, self.ones_fed = p, square, taps, ones_fed

    def forward(self, m: nn.Module, h: torch.Tensor) -> torch.Tensor:
        if isinstance(m, Classifier):
            return self.forward(m.predictor, h)
        if isinstance(m, nn.Sequential):
            for child in m:
                h = self.forward(child, h)
            return h
        bias = None if getattr(m, 'bias', None) is None else self.square(m.bias)
        if isinstance(m, nn.Linear):
            return self._linear(m, h, bias)
        if isinstance(m, CONV):
            return m._conv_forward(h, self.square(m.weight), bias)
        if isinstance(m, nn.AvgPool2d):
            return _sum_pool(h, m, self.p)
        if isinstance(m, nn.MaxPool2d):
            if m.dilation not in (1, (1, 1)):
                raise UnsupportedModuleError(f'Path-SGD: MaxPool2d with dilation {m.dilation}')
            # each window input is an edge of weight 1 (Gonon et al. 2024): a sum-pool
            return F.avg_pool2d(h, m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                divisor_override=1)
        if isinstance(m, PASS_THROUGH):
            return h
        if isinstance(m, RESHAPE):
            return m(h)
        check_supported(m)   # raises with the module's name
        raise UnsupportedModuleError(f'Path-SGD cannot handle {type(m).__name__}')

    def _linear(self, m: nn.Linear, h: torch.Tensor, bias: Optional[torch.Tensor]
                ) -> torch.Tensor:
        taps = self.taps
        if taps is None:
            return _linear(h, self.square(m.weight), bias)
        if m is self.ones_fed and h.dim() == 2:
            with torch.no_grad():   # Σ_u |w_vu|^p · 1, one pass over w
                out = torch.linalg.vector_norm(m.weight, self.p, dim=1).pow_(self.p)[None]
            if bias is not None:
                out = out + bias
        else:
            w = self.square(m.weight)
            if w.requires_grad:
                return _linear(h, w, bias)
            if h.dim() != 2:   # applied at several positions: γ is not rank one
                return _linear(h, w.requires_grad_(), bias)
            out = _linear(h, w, bias)
        taps[id(m.weight)] = (h[0].detach(), out if out.requires_grad else out.requires_grad_())
        return out


def _linear(h: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor]) -> torch.Tensor:
    """F.linear at batch size 1; as (add)mv, whose backward is a cheap outer product."""
    if h.dim() != 2:
        return F.linear(h, w, b)
    out = torch.mv(w, h[0]) if b is None else torch.addmv(b, w, h[0])
    return out[None]


def _sum_pool(h: torch.Tensor, m: nn.AvgPool2d, p: float) -> torch.Tensor:
    """AvgPool2d(k): every window edge weighs 1/|window|, i.e. |1/|window||^p when squared."""
    k = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * 2
    window = m.divisor_override or k[0] * k[1]
    pad = m.padding if isinstance(m.padding, tuple) else (m.padding,) * 2
    if m.divisor_override is None and (m.ceil_mode or (any(pad) and not m.count_include_pad)):
        raise UnsupportedModuleError('Path-SGD: AvgPool2d with ceil_mode or '
                                     'count_include_pad=False has position-dependent weights')
    summed = F.avg_pool2d(h, m.kernel_size, m.stride, m.padding, m.ceil_mode,
                          divisor_override=1)
    return summed * float(window) ** -p
