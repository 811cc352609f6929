"""A shared trunk with several heads, each with its own target, loss and optimizer."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Union

import torch
import torch.nn.functional as F

from trainerlib import reporter
from trainerlib.convert import DeviceLike, concat_examples
from trainerlib.models import accuracy
from trainerlib.updaters.amp import AmpContext
from trainerlib.updaters.grad_utils import (clip_grads, parameters_of, skip_all_on_overflow,
                                            step_all, zero_grads)
from trainerlib.updaters.updater import Updater

Selector = Union[int, str, Callable[[Any], Any]]


def select(batch: Any, key: Selector) -> Any:
    """``key(batch)`` if ``key`` is callable, else ``batch[key]`` (column index or dict key)."""
    return key(batch) if callable(key) else batch[key]


@dataclasses.dataclass
class Head:
    """One output of a :class:`MultiHeadUpdater`.

    Args:
        module: maps the trunk's output to this head's output.
        target: where this head's target is in the converted batch: a column
            index (tuple batches), a key (dict batches) or a callable ``batch -> t``.
        optimizer: name of the optimizer that updates ``module`` (checked to hold its
            parameters; default: the one named like the head if any, else ``'main'``).
        loss_fn: ``loss_fn(y, t) -> scalar`` (default ``F.cross_entropy``).
        weight: factor of this loss in the total (default 1.0).
        train: False evaluates and reports the head without training it; its
            parameters get no gradient and stay unchanged (default True).
    """

    module: torch.nn.Module
    target: Selector
    optimizer: Optional[str] = None
    loss_fn: Callable[[Any, Any], torch.Tensor] = F.cross_entropy
    weight: float = 1.0
    train: bool = True


class MultiHeadUpdater(Updater):
    """``trunk`` once → every head's loss → one backward of the weighted total.

    The trunk's gradient is ``Σ weight·∂loss/∂trunk`` over the training heads; a
    head's parameters get gradient from its own loss only. Every optimizer steps
    exactly once per iteration, also when several heads share it. Reports
    ``<head>/loss``, ``<head>/accuracy`` (for 2-D outputs with integer targets)
    and ``main/loss`` (the weighted total).

    Args:
        iterator: the training iterator (or a dict with ``'main'``).
        trunk: the shared ``nn.Module``, registered as model ``'trunk'``.
        heads: name → :class:`Head` (or a dict of its fields); heads are
            registered as models under their names, which prefix their reports.
        optimizers: name → ``torch.optim.Optimizer``, or one optimizer (named
            ``'main'``) for everything.
        input_key: where the trunk's input is in the converted batch (default 0;
            same forms as ``Head.target``).
        trunk_optimizer: name of the trunk's optimizer (default ``'trunk'`` if
            given, else ``'main'``).
        converter: ``converter(batch, device)`` (default :func:`concat_examples`).
        device: where batches and modules go; None leaves them where they are.
        amp: False (default), True or ``'float16'``/``'bfloat16'``, as in
            :class:`StandardUpdater` (the GradScaler state is saved). With float16,
            an overflow in any gradient skips the step of every optimizer.
        clip_grad_norm: if set, clip the global gradient 2-norm of all
            optimizers' parameters together to this value.
    """

    def __init__(self, iterator: Any, trunk: torch.nn.Module,
                 heads: Mapping[str, Union[Head, Mapping[str, Any]]], optimizers: Any, *,
                 input_key: Selector = 0, trunk_optimizer: Optional[str] = None,
                 converter: Callable[..., Any] = concat_examples, device: DeviceLike = None,
                 amp: Union[bool, str] = False, clip_grad_norm: Optional[float] = None) -> None:
        self.heads = {name: h if isinstance(h, Head) else Head(**h) for name, h in heads.items()}
        if not any(h.train for h in self.heads.values()):
            raise ValueError('MultiHeadUpdater: no head has train=True; nothing would be trained')
        if {'main', 'trunk'} & set(self.heads):
            raise ValueError("head names 'main' and 'trunk' are taken (main/loss, the trunk)")
        models = {'trunk': trunk, **{name: h.module for name, h in self.heads.items()}}
        super().__init__(iterator, optimizers, models)
        self.trunk = trunk
        self.input_key = input_key
        self.converter = converter
        self.device = device
        self.clip_grad_norm = clip_grad_norm
        self.amp = AmpContext(amp, device)
        if device is not None:
            for m in models.values():
                m.to(device)
        self._check_optimizer('trunk', trunk, trunk_optimizer, 'trunk')
        for name, head in self.heads.items():
            if head.train:
                self._check_optimizer(f'head {name!r}', head.module, head.optimizer, name)
        # each optimizer once, even if given under several names
        self._steppers = list({id(o): o for o in self._optimizers.values()}.values())

    def _check_optimizer(self, what: str, module: torch.nn.Module, name: Optional[str],
                         default: str) -> None:
        """Raise unless optimizer ``name`` (None: ``default``, else ``'main'``) holds ``module``."""
        if name is None:
            name = default if default in self._optimizers else 'main'
        held = {id(p) for p in parameters_of([self.get_optimizer(name)])}
        missing = [n for n, p in module.named_parameters() if p.requires_grad and id(p) not in held]
        if missing:
            raise ValueError(f'{what}: optimizer {name!r} does not hold its parameters '
                             f'{missing[:5]}; pass them to that optimizer or name another one')

    def update_core(self) -> None:
        batch = self.converter(next(self._iterators['main']), self.device)
        zero_grads(self._steppers)
        total = 0.0
        with self.amp.autocast():
            features = self.ddp('trunk')(select(batch, self.input_key))
            for name, head in self.heads.items():
                with torch.set_grad_enabled(head.train):
                    y = (self.ddp(name) if head.train else head.module)(features)
                    t = select(batch, head.target)
                    loss = head.loss_fn(y, t)
                if head.train:
                    total = total + head.weight * loss
                observation = {'loss': loss}
                if y.dim() == 2 and not t.is_floating_point():
                    observation['accuracy'] = accuracy(y, t)
                reporter.report(observation, head.module)
        self.amp.scale(total).backward()
        if self.clip_grad_norm is not None:
            clip_grads(self._steppers, self.clip_grad_norm, amp=self.amp)
        else:
            skip_all_on_overflow(self._steppers, self.amp)
        step_all(self._steppers, self.amp)
        reporter.report({'main/loss': total})
