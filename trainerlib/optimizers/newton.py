"""Newton's method (damped, with a step size) as a torch optimizer for small problems."""
from __future__ import annotations

from typing import Callable, Iterable, List, Optional, Tuple, Union

import torch

from trainerlib.errors import TrainerlibError

FALLBACKS = ('gradient', 'raise')


class NewtonStepError(TrainerlibError, RuntimeError):
    """The Newton system was singular or gave no descent direction (``fallback='raise'``)."""


class Newton(torch.optim.Optimizer):
    """Newton's method: ``d = (H + damping·I)⁻¹ g``, then ``p ← p − lr·d``.

    Each :meth:`step` calls the closure once, and computes the gradient ``g`` and the
    Hessian ``H`` of its loss with respect to all parameters of all groups, flattened
    into one vector (in group order, then parameter order), by autograd: one
    ``torch.autograd.grad(create_graph=True)`` for ``g``, then one backward pass per
    row of ``H`` (so ``n`` passes and an ``n × n`` solve for ``n`` parameters: meant for
    small problems, a few hundred numbers at most). ``H`` is symmetrised
    (``(H + Hᵀ) / 2``). Where groups differ, each coordinate gets the ``damping`` and
    ``lr`` of its group: ``(H + diag(λ)) d = g``, ``p_i ← p_i − lr_i d_i``.

    **Unusable or uphill directions.** ``torch.linalg.solve_ex`` may report a singular
    system (or give a non-finite ``d``): then the step cannot be a Newton step, and
    ``fallback`` decides:

    * ``'gradient'`` (default): steepest descent for this step, ``d = g`` (the
      parameters move by ``lr·g``, which is large where the gradient is: prefer
      ``damping > 0`` where singular Hessians are expected). Counted in the state as
      ``fallbacks`` (:attr:`fallbacks`).
    * ``'raise'``: :class:`NewtonStepError` (a one-line user error naming the fix:
      ``damping > 0``); costs one host-device synchronisation per step.

    Where the Hessian is indefinite the Newton direction may point uphill (``gᵀd <= 0``:
    moving along ``−d`` does not decrease the loss to first order). Newton's method
    takes that step anyway (it seeks a stationary point; on the Rosenbrock function
    from (−1, 1.5) with ``lr=0.5`` two such steps are followed by convergence); such
    steps are counted as ``non_descent``. With ``require_descent=True`` they are
    treated like a singular system instead (the fallback or the error).

    A zero gradient (a stationary point) gives no step and counts as neither.
    ``damping > 0`` interpolates towards gradient descent with step ``lr / damping``
    (Levenberg's damping) and makes every step a descent direction wherever
    ``H + damping·I`` is positive definite. The choice between the Newton direction
    and the gradient is made with ``torch.where``, without a synchronisation.

    After a step every parameter's ``.grad`` holds the gradient at the point where the
    step started (as after ``loss.backward()``), so gradient-reading extensions work.
    The state of each parameter is ``step`` (a float32 tensor, as Adam's),
    ``fallbacks`` and ``non_descent`` (counts, tensors of the parameter's dtype, the same
    in every parameter's state); ``state_dict()`` and ``load_state_dict()`` are torch's.

    Args:
        params: parameters or param groups, as for any torch optimizer.
        lr: step size along the Newton direction (default 1.0: the full Newton step).
        damping: λ added to the Hessian's diagonal (default 0.0: undamped).
        fallback: ``'gradient'`` (default) or ``'raise'``, see above.
        require_descent: also fall back (or raise) where the Newton direction is not a
            descent direction (default False: take the Newton step, as Newton's method
            does).

    Raises:
        ValueError: ``lr`` or ``damping`` is negative or not finite, or ``fallback`` is
            not one of ``'gradient'``, ``'raise'``.

    Example::

        point = torch.nn.Parameter(torch.tensor([-1.5, 2.0], dtype=torch.float64))
        optimizer = Newton([point], lr=1.0)
        for _ in range(10):
            optimizer.step(lambda: (1 - point[0]) ** 2 + 100 * (point[1] - point[0] ** 2) ** 2)
    """

    def __init__(self, params: Union[Iterable[torch.Tensor], Iterable[dict]], lr: float = 1.0,
                 damping: float = 0.0, fallback: str = 'gradient',
                 require_descent: bool = False) -> None:
        for name, value in (('lr', lr), ('damping', damping)):
            if not (isinstance(value, (int, float)) and 0 <= value < float('inf')):
                raise ValueError(f'Newton: {name} must be a finite number >= 0, got {value!r}')
        if fallback not in FALLBACKS:
            raise ValueError(f"Newton: fallback must be 'gradient' or 'raise', got {fallback!r}")
        super().__init__(params, dict(lr=lr, damping=damping))
        self.fallback = fallback
        self.require_descent = bool(require_descent)

    @property
    def fallbacks(self) -> int:
        """Steps so far that used the gradient instead of the Newton direction."""
        return self._count('fallbacks')

    @property
    def non_descent(self) -> int:
        """Newton steps so far taken along a direction that was not a descent direction."""
        return self._count('non_descent')

    def _count(self, key: str) -> int:
        for group in self.param_groups:
            for p in group['params']:
                if key in self.state[p]:
                    return int(self.state[p][key].item())
        return 0

    def _coordinates(self) -> Tuple[List[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Trainable parameters, and the lr and damping of each of their coordinates."""
        params, lrs, dampings = [], [], []
        for group in self.param_groups:
            for p in group['params']:
                if p.requires_grad:
                    params.append(p)
                    lrs.append(torch.full((p.numel(),), float(group['lr']), dtype=p.dtype,
                                          device=p.device))
                    dampings.append(torch.full((p.numel(),), float(group['damping']),
                                               dtype=p.dtype, device=p.device))
        if not params:
            raise ValueError('Newton: no parameter requires grad')
        return params, torch.cat(lrs), torch.cat(dampings)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], torch.Tensor]] = None  # type: ignore[override]
             ) -> torch.Tensor:
        """One (damped) Newton step.

        Args:
            closure: called once, with gradients enabled; returns the loss (a scalar
                tensor computed from the parameters by twice-differentiable operations).
                It must not call ``loss.backward()`` (the optimizer differentiates the
                loss itself; a backward pass would free the graph it needs).

        Returns:
            The closure's loss, detached.

        Raises:
            TypeError: no closure was given, or it returned something else than a
                scalar tensor that depends on the parameters.
            NewtonStepError: ``fallback='raise'`` and the Newton direction was unusable.
        """
        if closure is None:
            raise TypeError('Newton.step needs a closure: step(lambda: loss_fn(...)) returning '
                            'the loss; the optimizer computes its gradient and Hessian itself')
        params, lrs, dampings = self._coordinates()
        with torch.enable_grad():
            loss = closure()
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.requires_grad:
                raise TypeError('Newton.step: the closure must return the loss as a scalar '
                                'tensor computed from the parameters (requires_grad), got '
                                f'{_describe(loss)}')
            grad, hessian = _gradient_and_hessian(loss.reshape(()), params)
        direction, unusable, uphill, reason = _direction(hessian + torch.diag(dampings), grad,
                                                         self.require_descent)
        if self.fallback == 'raise' and bool(unusable):
            count = self._step_count(params[0])
            raise NewtonStepError(f'Newton step {count + 1}: {reason()}; set damping '
                                  "> 0 or use fallback='gradient'")
        update = lrs * direction
        offset = 0
        for p in params:
            n = p.numel()
            state = self.state[p]
            if not state:
                state['step'] = torch.zeros((), dtype=torch.float32)
                state['fallbacks'] = torch.zeros((), dtype=p.dtype, device=p.device)
                state['non_descent'] = torch.zeros((), dtype=p.dtype, device=p.device)
            state['step'] += 1
            state['fallbacks'] += unusable.to(p.dtype)
            state['non_descent'] += uphill.to(p.dtype)
            p.grad = grad[offset:offset + n].view_as(p).clone()
            p.sub_(update[offset:offset + n].view_as(p))
            offset += n
        return loss.detach()

    def _step_count(self, p: torch.Tensor) -> int:
        state = self.state.get(p) or {}
        return int(state['step'].item()) if 'step' in state else 0


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f'a tensor of shape {tuple(value.shape)} (requires_grad={value.requires_grad})'
    return type(value).__name__


def _gradient_and_hessian(loss: torch.Tensor, params: List[torch.Tensor]
                          ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The flattened gradient and the symmetrised Hessian (both detached)."""
    try:
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    except RuntimeError as e:
        if 'second time' in str(e):
            raise RuntimeError('Newton.step: the closure\'s loss has no graph left; the closure '
                               'must return the loss without calling loss.backward()') from e
        raise
    flat = torch.cat([torch.zeros(p.numel(), dtype=p.dtype, device=p.device) if g is None
                      else g.reshape(-1) for g, p in zip(grads, params)])
    n = flat.numel()
    rows = []
    for i in range(n):
        if flat.requires_grad:
            row = torch.autograd.grad(flat[i], params, retain_graph=i < n - 1, allow_unused=True)
        else:   # the gradient does not depend on the parameters: H = 0
            row = (None,) * len(params)
        rows.append(torch.cat([torch.zeros(p.numel(), dtype=p.dtype, device=p.device)
                               if r is None else r.reshape(-1) for r, p in zip(row, params)]))
    hessian = torch.stack(rows)
    return flat.detach(), (hessian + hessian.T) / 2


def _direction(system: torch.Tensor, grad: torch.Tensor, require_descent: bool):
    """``(d, unusable, uphill, reason)``: the Newton direction, or ``grad`` where unusable.

    ``unusable`` and ``uphill`` are 0-d bool tensors (the fallback was taken; a Newton
    step that is not a descent direction was taken), both False at a zero gradient;
    ``reason()`` says why the Newton direction was unusable, for the error message.
    """
    newton, info = torch.linalg.solve_ex(system, grad)
    solved = (info == 0) & torch.isfinite(newton).all()
    slope = torch.dot(grad, torch.where(solved, newton, torch.zeros_like(newton)))
    moving = (grad != 0).any()
    usable = solved & (slope > 0) if require_descent else solved
    unusable = ~usable & moving
    uphill = usable & (slope <= 0) & moving
    direction = torch.where(usable, newton, grad)

    def reason() -> str:
        if not bool(solved):
            return 'the system H + damping*I is singular'
        return (f'the Newton direction is not a descent direction (g.d = {float(slope):.3g} '
                '<= 0: the Hessian is not positive definite here)')
    return direction, unusable, uphill, reason
