"""The "squared network" of a ReLU net, on which Path-SGD's γ and φ are computed.

Every weight and bias ``w`` is replaced by ``|w|^p``, every ReLU (positively
homogeneous) and Dropout by the identity, and pools by sums over their windows;
fed an all-ones input, its outputs sum to φ_p^p (see :mod:`.path_norm`).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

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


def abs_pow(w: torch.Tensor, p: float, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``|w|^p`` (``w * w`` for p = 2), into ``out`` if given."""
    if p == 2:
        return torch.mul(w, w, out=out)
    return torch.pow(torch.abs(w, out=out), p, out=out)


class SquaredNetwork:
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
