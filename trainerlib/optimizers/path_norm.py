"""γ_p of every weight and bias from one pass of the "squared network" (Path-SGD).

The network is a DAG whose paths run from the inputs (and from a constant-1 node
per bias) to the outputs. For an edge ``e`` the path curvature is

    γ_p(w, e) = ( Σ_{paths ∋ e} Π_{e_k ≠ e} |w_{e_k}|^p )^{2/p}

Replacing every weight and bias by ``|w|^p``, every ReLU by the identity and
feeding an all-ones input gives ``φ_p^p = out.sum()``; since ``φ_p^p`` is affine
in each ``|w_e|^p``, ``∂ out.sum() / ∂|w_e|^p`` is the inner sum above. Autograd
of the squared network thus returns it for all edges at once (one forward and one
backward at batch size 1); a shared (conv) weight gets the sum over its edges.
See ALGORITHMS.md §1.3–1.5.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from trainerlib.errors import TrainerlibError
from trainerlib.models import Classifier

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
    params = list(model.parameters())
    scratch = {} if scratch is None else scratch
    with torch.no_grad():
        leaves = [_abs_pow(w, p, out=_leaf(scratch, w)) for w in params]
    ones = torch.ones(1, *input_shape, dtype=params[0].dtype, device=params[0].device)
    with torch.enable_grad():
        out = _squared_forward(model, ones, dict(zip(map(id, params), leaves)), p)
        grads = torch.autograd.grad(out.sum(), leaves, allow_unused=True)
    gammas = {}
    for w, g in zip(params, grads):
        g = torch.zeros_like(w) if g is None else g.contiguous()   # no expanded views
        gammas[w] = g if p == 2 else g.pow(2.0 / p)
    return gammas


def path_regularizer(model: nn.Module, input_shape: Sequence[int], p: float = 2
                     ) -> torch.Tensor:
    """φ_p(w) = (Σ_paths Π_k |w_{e_k}|^p)^{1/p} (a 0-d tensor; biases are paths too)."""
    leaves = {id(w): _abs_pow(w.detach(), p) for w in model.parameters()}
    w0 = next(model.parameters())
    ones = torch.ones(1, *input_shape, dtype=w0.dtype, device=w0.device)
    with torch.no_grad():
        return _squared_forward(model, ones, leaves, p).sum().pow(1.0 / p)


def _leaf(scratch: Dict[int, torch.Tensor], w: torch.Tensor) -> torch.Tensor:
    """The reusable leaf tensor (requires_grad) that holds ``|w|^p``."""
    leaf = scratch.get(id(w))
    if leaf is None or leaf.shape != w.shape or leaf.dtype != w.dtype or leaf.device != w.device:
        leaf = scratch[id(w)] = torch.empty_like(w).requires_grad_()
    return leaf


def _abs_pow(w: torch.Tensor, p: float, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    if p == 2:
        return torch.mul(w, w, out=out)
    return torch.pow(torch.abs(w, out=out), p, out=out)


def _squared_forward(m: nn.Module, h: torch.Tensor, sq: Dict[int, torch.Tensor],
                     p: float) -> torch.Tensor:
    """Run ``m`` on ``h`` with parameters ``sq`` (|w|^p), ReLU → identity, pools → sums."""
    if isinstance(m, Classifier):
        return _squared_forward(m.predictor, h, sq, p)
    if isinstance(m, nn.Sequential):
        for child in m:
            h = _squared_forward(child, h, sq, p)
        return h
    bias = None if getattr(m, 'bias', None) is None else sq[id(m.bias)]
    if isinstance(m, nn.Linear):
        return _linear(h, sq[id(m.weight)], bias)
    if isinstance(m, CONV):
        return m._conv_forward(h, sq[id(m.weight)], bias)
    if isinstance(m, nn.AvgPool2d):
        return _sum_pool(h, m, p)
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
