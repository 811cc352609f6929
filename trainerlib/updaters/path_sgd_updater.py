"""StandardUpdater whose optimizer is Path-SGD."""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch

from trainerlib.convert import DeviceLike, concat_examples
from trainerlib.optimizers import PathSGD
from trainerlib.updaters.grad_utils import zero_grad
from trainerlib.updaters.standard_updater import StandardUpdater, call_with


class PathSGDUpdater(StandardUpdater):
    """One iteration: zero_grad → forward → loss → backward → Path-SGD step.

    Args:
        iterator: the training iterator (or a dict with ``'main'``).
        model: the network (a ``Classifier`` is fine); trained through
            ``loss_func`` or, if that is None, called on the batch to get the loss.
        optimizer: a :class:`~trainerlib.optimizers.PathSGD` over ``model``; None
            builds one from ``lr``, ``momentum``, ``weight_decay``, ``p``, ``input_shape``.
        lr, momentum, weight_decay, p, input_shape: as in ``PathSGD`` (used only
            when ``optimizer`` is None; lr defaults to 0.1).
        converter, device, loss_func: as in ``StandardUpdater``.
    """

    def __init__(self, iterator: Any, model: torch.nn.Module,
                 optimizer: Optional[PathSGD] = None, *, lr: float = 0.1,
                 momentum: float = 0., weight_decay: float = 0., p: float = 2,
                 input_shape: Optional[Sequence[int]] = None,
                 converter: Callable[..., Any] = concat_examples, device: DeviceLike = None,
                 loss_func: Optional[Callable[..., torch.Tensor]] = None) -> None:
        if optimizer is None:
            optimizer = PathSGD(model, lr, momentum, weight_decay, p, input_shape)
        elif not isinstance(optimizer, PathSGD):
            raise TypeError(f'PathSGDUpdater needs a PathSGD optimizer, got '
                            f'{type(optimizer).__name__}; use StandardUpdater for others')
        super().__init__(iterator, optimizer, model, converter, device, loss_func)

    def update_core(self) -> None:
        optimizer = self.get_optimizer('main')
        zero_grad(optimizer)
        batch = self.converter(next(self.get_iterator('main')), self.device)
        loss = call_with(self.loss_func or self.ddp('main'), batch)   # DDP under W ranks
        loss.backward()
        optimizer.step()
