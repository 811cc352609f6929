"""The optim_study recipe's training pieces: the Rosenbrock point, a data-free iterator, an
updater doing one optimizer step per iteration, and the per-iteration trajectory record."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from trainerlib import reporter
from trainerlib.extension import PRIORITY_READER, Extension
from trainerlib.iterators import Iterator
from trainerlib.optimizers import Newton
from trainerlib.updaters import Updater

FIRST_ORDER = ('sgd', 'momentum_sgd', 'rmsprop', 'adam')
METHODS = FIRST_ORDER + ('newton', 'lbfgs')
LABELS = {'sgd': 'SGD', 'momentum_sgd': 'Momentum-SGD', 'rmsprop': 'RMSprop', 'adam': 'Adam',
          'newton': 'Newton', 'lbfgs': 'L-BFGS'}


def budget_of(method: str) -> str:
    """The ``budget`` section of a method: ``first_order``, ``newton`` or ``lbfgs``."""
    return 'first_order' if method in FIRST_ORDER else method


def rosenbrock(point: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """``f(x, y) = (a - x)^2 + b (y - x^2)^2`` at ``point = (x, y)``; minimum 0 at (a, a²)."""
    x, y = point[0], point[1]
    return (a - x) ** 2 + b * (y - x ** 2) ** 2


class RosenbrockPoint(nn.Module):
    """The 2-D point being optimized (parameter ``point``); ``forward()`` is f at it."""

    def __init__(self, start: Sequence[float], a: float, b: float,
                 dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.point = nn.Parameter(torch.tensor([float(v) for v in start], dtype=dtype))
        self.a, self.b = float(a), float(b)

    def forward(self) -> torch.Tensor:
        return rosenbrock(self.point, self.a, self.b)

    @property
    def minimum(self) -> torch.Tensor:
        """The minimizer (a, a²)."""
        return torch.tensor([self.a, self.a * self.a], dtype=self.point.dtype,
                            device=self.point.device)


class FullBatchIterator(Iterator):
    """A data-free iterator: each ``next()`` is one step on the whole (deterministic)
    objective, i.e. one full-batch epoch by default, and returns the step number.

    It keeps the bookkeeping the updater and the triggers read (``epoch``,
    ``epoch_detail``, ``previous_epoch_detail``, ``is_new_epoch``) and saves it.

    Args:
        epoch_size: iterations per epoch (default 1: every step sees all the "data").
    """

    def __init__(self, epoch_size: int = 1) -> None:
        if epoch_size < 1:
            raise ValueError(f'epoch_size must be >= 1, got {epoch_size}')
        self._epoch_size = epoch_size
        self.reset()

    def __next__(self) -> int:
        self._previous_epoch_detail = self.epoch_detail
        self.current_position += 1
        self.is_new_epoch = self.current_position == self._epoch_size
        if self.is_new_epoch:
            self.epoch += 1
            self.current_position = 0
        return self.epoch * self._epoch_size + self.current_position

    def reset(self) -> None:
        self.epoch, self.current_position, self.is_new_epoch = 0, 0, False
        self._previous_epoch_detail = -1.0

    def state_dict(self) -> dict:
        return {'epoch': self.epoch, 'current_position': self.current_position,
                'is_new_epoch': self.is_new_epoch,
                'previous_epoch_detail': self._previous_epoch_detail}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.current_position = state['epoch'], state['current_position']
        self.is_new_epoch = state['is_new_epoch']
        self._previous_epoch_detail = state['previous_epoch_detail']


class PointUpdater(Updater):
    """One optimizer step on the model's point per iteration, then a report of where it is.

    First-order optimizers: ``zero_grad``, ``loss.backward()``, ``step()``.
    :class:`~trainerlib.optimizers.Newton`: ``step(model)`` (its closure returns the loss).
    ``torch.optim.LBFGS``: ``step(closure)`` with a closure that backpropagates.
    Reports ``loss``, ``x``, ``y`` and ``distance`` (to the minimum) at the point after
    the step, as 0-d tensors (prefixed ``main/`` by the trainer).
    """

    def __init__(self, iterator: Iterator, optimizer: torch.optim.Optimizer,
                 model: RosenbrockPoint) -> None:
        super().__init__(iterator, optimizer, model)

    def update_core(self) -> None:
        next(self._iterators['main'])
        model, optimizer = self._models['main'], self._optimizers['main']
        if isinstance(optimizer, Newton):
            optimizer.step(model)
        elif isinstance(optimizer, torch.optim.LBFGS):
            def closure() -> torch.Tensor:
                optimizer.zero_grad()
                loss = model()
                loss.backward()
                return loss
            optimizer.step(closure)
        else:
            optimizer.zero_grad()
            model().backward()
            optimizer.step()
        with torch.no_grad():
            point = model.point.detach().clone()
            reporter.report({'loss': model(), 'x': point[0], 'y': point[1],
                             'distance': torch.linalg.vector_norm(point - model.minimum)},
                            model)


class Trajectory(Extension):
    """Records the point after every iteration (saved in snapshots, so a resumed run
    has the whole path); :meth:`points` is ``(iterations, 2)``."""

    trigger = (1, 'iteration')
    priority = PRIORITY_READER

    def __init__(self, model: RosenbrockPoint) -> None:
        self.model = model
        self._points: List[torch.Tensor] = []

    def __call__(self, trainer: Any) -> None:
        self._points.append(self.model.point.detach().clone())

    def points(self) -> torch.Tensor:
        if not self._points:
            return self.model.point.detach().new_zeros((0, 2))
        return torch.stack(self._points)

    def state_dict(self) -> Dict[str, Any]:
        return {'points': self.points().cpu()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        device = self.model.point.device
        self._points = [p.to(device) for p in state['points'].unbind(0)]


def make_optimizer(method: str, model: RosenbrockPoint, cfg: Dict[str, Any]
                   ) -> torch.optim.Optimizer:
    """The optimizer of ``method`` over ``model.parameters()`` with the config's settings."""
    lr = cfg['lr'][method]
    params = model.parameters()
    if method == 'sgd':
        return torch.optim.SGD(params, lr=lr)
    if method == 'momentum_sgd':
        return torch.optim.SGD(params, lr=lr, momentum=cfg['momentum'])
    if method == 'rmsprop':
        return torch.optim.RMSprop(params, lr=lr)
    if method == 'adam':
        return torch.optim.Adam(params, lr=lr)
    if method == 'newton':
        n = cfg['newton']
        return Newton(params, lr=lr, damping=n['damping'], fallback=n['fallback'],
                      require_descent=n['require_descent'])
    if method == 'lbfgs':
        lb = cfg['lbfgs']
        search: Optional[str] = None if lb['line_search'] == 'none' else lb['line_search']
        # max_iter=1: one L-BFGS iteration per trainer iteration; max_eval bounds the
        # function evaluations of that iteration (torch's default, 1 * 5 // 4 = 1, would
        # leave the line search no evaluation at all and the point would never move)
        return torch.optim.LBFGS(params, lr=lr, max_iter=1, max_eval=lb['max_eval'],
                                 history_size=lb['history_size'], line_search_fn=search)
    raise ValueError(f'unknown method {method!r}; choose from {", ".join(METHODS)}')


def function_evaluations(method: str, optimizer: torch.optim.Optimizer, steps: int) -> int:
    """Evaluations of f (with its gradient; Newton: and its Hessian) the run made."""
    if method == 'lbfgs':
        states = list(optimizer.state.values())
        return int(states[0].get('func_evals', 0)) if states else 0
    return steps
