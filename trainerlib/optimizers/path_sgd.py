"""Path-SGD (Neyshabur, Salakhutdinov & Srebro, NeurIPS 2015) as a torch optimizer."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from trainerlib.optimizers.path_norm import (GammaFactors, check_supported, input_linear,
                                             path_gamma_factors, path_gammas, scratch_like)
from trainerlib.optimizers.squared_network import PASS_THROUGH


class PathSGD(torch.optim.Optimizer):
    """Steepest descent in the rescaling-invariant path geometry, one coordinate at a time.

    Each :meth:`step` recomputes γ_p(w, e) from the current weights (one forward and
    backward of the squared network, see :mod:`~trainerlib.optimizers.path_norm`) and,
    for every weight and bias element ``w`` with gradient ``g``::

        d   = g / γ                      (γ = 0 guarded, see below)
        buf = momentum · buf + d         (if momentum > 0; then d = buf)
        w   ← (1 − lr · weight_decay) · w − lr · d

    All three lines commute with a node rescaling ρ (w → c·w into a unit, w/c out of
    it): ``g/γ`` scales like ``w`` (g by 1/c, γ by 1/c²), so the momentum buffer does
    too, and decoupled decay is linear. Hence runs from ``w`` and ``ρ(w)`` stay
    equal up to ρ (Theorem 4.1). L2 added to ``g`` would break this.

    γ = 0 means the edge lies on no path of non-zero weight; then the loss does not
    depend on it and its gradient is exactly 0. γ is clamped to the dtype's smallest
    normal number (``finfo.tiny``), so such an edge gets ``0 / tiny = 0``: no step
    (weight decay still applies), and no NaN. A Linear weight's γ = γ_out ⊗ γ_in is
    never formed: ``g`` is divided by γ_in, then by γ_out (each clamped to ``tiny``),
    which costs two passes over the weight where forming, clamping and dividing by γ
    cost four.

    Args:
        model: a ReLU network of Linear/Conv layers (see ``check_supported``; a
            ``Classifier`` is unwrapped); the optimizer covers ``model.parameters()``.
        lr: step size η (required; the paper picks it from 10^-α, α = 0…10).
        momentum: heavy-ball coefficient applied to ``g/γ`` (default 0).
        weight_decay: decoupled decay rate λ per unit of lr (default 0).
        p: path-norm exponent (default 2, as in the paper's experiments).
        input_shape: one example's shape without the batch axis, ``(C, H, W)`` for
            conv nets, ``(features,)`` for MLPs. None: a forward pre-hook records
            the shape of the model's first positional input on its first forward,
            then removes itself (so call the model once before ``step()``); a net
            that starts with Linear (after Flatten/Dropout) needs no hook: (in_features,).

    Raises:
        UnsupportedModuleError: the model holds e.g. BatchNorm, LayerNorm or Tanh.
    """

    def __init__(self, model: nn.Module, lr: float, momentum: float = 0.,
                 weight_decay: float = 0., p: float = 2,
                 input_shape: Optional[Sequence[int]] = None) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0 or p < 1:
            raise ValueError(f'PathSGD needs lr, momentum, weight_decay >= 0 and p >= 1; got '
                             f'lr={lr}, momentum={momentum}, weight_decay={weight_decay}, p={p}')
        check_supported(model)
        super().__init__(model.parameters(),
                         dict(lr=lr, momentum=momentum, weight_decay=weight_decay))
        self.model = model
        self.p = p
        self.input_shape: Optional[Tuple[int, ...]] = None
        self._hook = None
        self._scratch: Dict[int, torch.Tensor] = {}   # |w|^p, then g / γ_in, in each step
        if input_shape is None:
            input_shape = _linear_input(model)
        if input_shape is not None:
            self.input_shape = tuple(int(s) for s in input_shape)
        else:
            self._hook = model.register_forward_pre_hook(self._record_input_shape)

    def _record_input_shape(self, module: nn.Module, args: Tuple[Any, ...]) -> None:
        if self.input_shape is None and args and isinstance(args[0], torch.Tensor):
            self.input_shape = tuple(args[0].shape[1:])
        self._remove_hook()

    def _remove_hook(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def gammas(self) -> Dict[nn.Parameter, torch.Tensor]:
        """γ_p of every model parameter at the current weights."""
        return path_gammas(self.model, *self._gamma_args())

    def _gamma_factors(self) -> Dict[nn.Parameter, Union[torch.Tensor, GammaFactors]]:
        return path_gamma_factors(self.model, *self._gamma_args())

    def _gamma_args(self) -> Tuple[Tuple[int, ...], float, Dict[int, torch.Tensor]]:
        if self.input_shape is None:
            raise RuntimeError('PathSGD does not know the input shape yet: pass '
                               'input_shape=(C, H, W) or (features,), or run a forward of '
                               'the model before step()')
        return self.input_shape, self.p, self._scratch

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], torch.Tensor]] = None
             ) -> Optional[torch.Tensor]:
        """One Path-SGD update (``closure`` re-evaluates the loss, as in torch.optim)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        gammas = self._gamma_factors()
        for group in self.param_groups:
            lr, mom, wd = group['lr'], group['momentum'], group['weight_decay']
            for w in group['params']:
                if w.grad is None:
                    continue
                num, den = self._divided(w, gammas[w])
                if wd:
                    w.mul_(1. - lr * wd)
                if not mom:
                    w.addcdiv_(num, den, value=-lr)
                    continue
                buf = self.state[w].get('momentum_buffer')
                if buf is None:
                    buf = self.state[w]['momentum_buffer'] = num / den
                else:
                    buf.mul_(mom).addcdiv_(num, den)
                w.add_(buf, alpha=-lr)
        return loss

    def _divided(self, w: torch.Tensor, gamma: Union[torch.Tensor, GammaFactors]
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(num, den)`` with ``num / den`` = g / γ, γ = 0 guarded by ``finfo.tiny``.

        A factored γ = rows ⊗ cols is applied as ``(g / cols) / rows``, each factor
        guarded on its own, with ``g / cols`` written into the scratch tensor that
        held |w|^p (free once γ is known): the full γ is never formed, let alone clamped.
        """
        tiny = torch.finfo(w.dtype).tiny
        if isinstance(gamma, torch.Tensor):
            return w.grad, gamma.clamp_min_(tiny)
        rows, cols = gamma
        out = scratch_like(self._scratch, w)
        return torch.div(w.grad, cols.clamp_min(tiny), out=out), rows.clamp_min(tiny)[:, None]

    def state_dict(self) -> Dict[str, Any]:
        """torch's optimizer state plus the (possibly recorded) ``input_shape``."""
        state = super().state_dict()
        state['input_shape'] = None if self.input_shape is None else list(self.input_shape)
        return state

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        shape = state_dict.pop('input_shape', None)
        super().load_state_dict(state_dict)
        if shape is not None and self.input_shape is None:
            self.input_shape = tuple(shape)
            self._remove_hook()


def _linear_input(model: nn.Module) -> Optional[Tuple[int]]:
    """``(in_features,)`` if the first layer with weights is a Linear, else None."""
    first = input_linear(model, PASS_THROUGH + (nn.Flatten,))
    return None if first is None else (first.in_features,)
