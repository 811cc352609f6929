"""One model, one loss, one optimizer: the default update."""
from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable, Dict, Mapping, Optional, Union

import torch

from trainerlib import reporter
from trainerlib.convert import DeviceLike, concat_examples
from trainerlib.updaters.amp import AmpContext
from trainerlib.updaters.data_parallel import no_sync
from trainerlib.updaters.grad_utils import clip_grads, zero_grad
from trainerlib.updaters.updater import Updater


def call_with(fn: Callable, batch: Any) -> Any:
    """``fn(*batch)`` for a tuple, ``fn(**batch)`` for a dict, else ``fn(batch)``."""
    if isinstance(batch, tuple):
        return fn(*batch)
    if isinstance(batch, dict):
        return fn(**batch)
    return fn(batch)


def _check_loss(loss: Any) -> None:
    """Raise unless ``loss`` is a scalar tensor (a subclass of Tensor included)."""
    if not isinstance(loss, torch.Tensor) or loss.ndim:
        raise TypeError('the loss function must return a scalar tensor, got '
                        f'{type(loss).__name__}{tuple(getattr(loss, "shape", ()))}')


def compile_options(value: Any) -> Optional[Dict[str, Any]]:
    """The ``torch.compile`` keyword arguments of ``compile=`` (None: do not compile)."""
    if value is False:
        return None
    if value is True:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError('StandardUpdater(compile=...) takes False, True or a dict of '
                        "torch.compile keyword arguments (e.g. {'mode': 'max-autotune'}), got "
                        f'{value!r}')
    known = [k for k in inspect.signature(torch.compile).parameters if k != 'model']
    unknown = sorted(str(k) for k in value if k not in known)
    if unknown:
        raise ValueError(f'StandardUpdater(compile=...): torch.compile has no argument '
                         f'{", ".join(map(repr, unknown))}; it takes {", ".join(known)}')
    return dict(value)


def compiled(fn: Callable, options: Mapping[str, Any]) -> Callable:
    """``torch.compile(fn, **options)``; a bad backend or mode is a ValueError naming it."""
    try:
        return torch.compile(fn, **options)
    except Exception as e:   # InvalidBackend, RuntimeError('Unrecognized mode …') …
        raise ValueError(f'StandardUpdater(compile={dict(options)!r}): torch.compile refused '
                         f'it: {e}') from e


class StandardUpdater(Updater):
    """Converter → forward/loss → backward → optimizer step, once per iteration.

    Args:
        iterator: the training iterator (or a dict with ``'main'``).
        optimizer: a ``torch.optim.Optimizer`` (or a dict with ``'main'``).
        model: the ``nn.Module`` trained (or a dict with ``'main'``). Its reports
            are prefixed by its name (``main/loss``). Moved to ``device`` if given.
        converter: ``converter(batch, device)`` builds the inputs
            (default :func:`~trainerlib.convert.concat_examples`).
        device: where batches (and the model) go; None leaves them where they are.
        loss_func: called with the converted batch (``*tuple`` / ``**dict``) to
            get the loss; None calls the main model instead.
        accumulate: micro-batches per update (default 1). Each update draws
            ``accumulate`` batches, backpropagates ``loss / accumulate`` for each
            and steps once, so an iteration is always one optimizer step.
        clip_grad_norm: if set, clip the global gradient 2-norm to this value.
        clip_grad_value: if set, clamp every gradient element to ±value.
        amp: ``False`` (default), ``True`` (float16 on CUDA, bfloat16 on CPU),
            or a dtype name ``'float16'``/``'bfloat16'``: autocast for the
            forward, with a GradScaler for float16 (its state is saved).
        compile: ``False`` (default), ``True`` or a dict of ``torch.compile``
            keyword arguments (``{'mode': 'max-autotune'}``, ``{'backend': 'aot_eager'}``):
            the forward goes through ``torch.compile`` of the main model (of ``loss_func``
            if given; under DDP, of the DDP wrapper, as torch recommends) while the
            plain model keeps its state-dict keys, so snapshots load compiled or not.
            A model passed already compiled (``torch.compile(model)``) trains the same
            way without this option.
    """

    def __init__(self, iterator: Any, optimizer: Any,
                 model: Union[None, torch.nn.Module, Dict[str, torch.nn.Module]] = None,
                 converter: Callable[..., Any] = concat_examples, device: DeviceLike = None,
                 loss_func: Optional[Callable[..., torch.Tensor]] = None, *,
                 accumulate: int = 1, clip_grad_norm: Optional[float] = None,
                 clip_grad_value: Optional[float] = None,
                 amp: Union[bool, str] = False,
                 compile: Union[bool, Mapping[str, Any]] = False) -> None:
        super().__init__(iterator, optimizer, model)
        if 'main' not in self._optimizers:
            raise ValueError("the optimizers need a 'main' entry")
        if loss_func is None and 'main' not in self._models:
            raise ValueError("StandardUpdater needs model= (called as the loss function) "
                             "or loss_func=")
        if not isinstance(accumulate, int) or accumulate < 1:
            raise ValueError(f'accumulate must be an integer >= 1, got {accumulate!r}')
        self.converter = converter
        self.device = device
        self.loss_func = loss_func
        self.accumulate = accumulate
        self.clip_grad_norm = clip_grad_norm
        self.clip_grad_value = clip_grad_value
        if device is not None:
            for m in self._models.values():
                m.to(device)
        self.amp = AmpContext(amp, device)
        self._compile_options = compile_options(compile)
        if self._compile_options is not None:
            if loss_func is None and 'main' in self._forward_modules:
                raise ValueError('StandardUpdater(compile=...): the model is already compiled '
                                 '(torch.compile(model)); pass the plain model with compile=, '
                                 'or the compiled one without it')
            options = self._compile_options
            if loss_func is None:
                self._forward_modules['main'] = compiled(self._models['main'], options)
            else:
                self._compiled_loss_func = compiled(loss_func, options)
        self._resolve_forward()
        self._own_loss = type(self)._loss is StandardUpdater._loss

    def _resolve_forward(self) -> None:
        """Fix what the step calls (no per-iteration lookup): the loss function (compiled
        with ``compile=``), else the main model's :meth:`ddp` module."""
        if self.loss_func is None:
            self._loss_call = self.ddp('main')
        else:
            self._loss_call = getattr(self, '_compiled_loss_func', self.loss_func)

    def setup_data_parallel(self, comm: Any) -> None:
        if self.loss_func is not None:
            raise ValueError(
                'StandardUpdater(loss_func=...) cannot be made data-parallel: the loss function '
                'calls the plain model, whose gradients DDP never sees; pass the module that '
                'returns the loss as model= (e.g. Classifier(predictor, lossfun)), or write '
                "update_core forwarding through self.ddp('main')")
        if self._compile_options is None:
            super().setup_data_parallel(comm)
        else:   # torch.compile(DDP(model)): DDP's buckets split the graph, overlapping comms
            self._forward_modules.pop('main', None)
            super().setup_data_parallel(comm)
            self._forward_modules['main'] = compiled(self.ddp('main'), self._compile_options)
        self._resolve_forward()

    def update_core(self) -> None:
        optimizer = self._optimizers['main']
        # cleared before the forward (as Chainer and the usual loop do), so extensions
        # see this iteration's gradients after the update
        zero_grad(optimizer)
        if self.accumulate == 1 and self.amp.dtype is None and \
                self.clip_grad_norm is None and self.clip_grad_value is None:
            # the plain step, without the pass-throughs (every call counts on small models)
            batch = next(self._iterators['main'])
            if self._own_loss:   # _loss, inlined
                batch = self.converter(batch, self.device)
                loss = self._loss_call(*batch) if type(batch) is tuple else \
                    call_with(self._loss_call, batch)
                if type(loss) is not torch.Tensor or loss.ndim:
                    _check_loss(loss)
            else:   # a subclass's own _loss
                loss = self._loss(batch)
            loss.backward()
            optimizer.step()
            return
        if self.accumulate == 1:
            self._forward_backward(next(self._iterators['main']), 1.0)
        else:
            self._accumulate_micro_batches()
        if self.clip_grad_norm is not None or self.clip_grad_value is not None:
            clip_grads([optimizer], self.clip_grad_norm, self.clip_grad_value, self.amp)
        self.amp.step(optimizer)
        self.amp.update()

    def _loss(self, batch: Any) -> torch.Tensor:
        """Convert ``batch`` and compute the loss (a scalar tensor) from it."""
        loss = call_with(self._loss_call, self.converter(batch, self.device))
        if type(loss) is not torch.Tensor or loss.ndim:
            _check_loss(loss)
        return loss

    def _forward_backward(self, batch: Any, scale: float) -> None:
        with self.amp.autocast():
            loss = self._loss(batch)
        if scale != 1.0:
            loss = loss * scale
        self.amp.scale(loss).backward()

    def _accumulate_micro_batches(self) -> None:
        """Run the micro-batches, then report the mean of what each reported."""
        observations = []
        iterator = self._iterators['main']
        wrapped = self.ddp('main') if 'main' in self._models else None
        for k in range(self.accumulate):
            observation: Dict[str, Any] = {}
            # under DDP gradients are averaged once per update, at the last micro-batch
            with reporter.report_scope(observation), \
                    (no_sync(wrapped) if k < self.accumulate - 1 else contextlib.nullcontext()):
                self._forward_backward(next(iterator), 1.0 / self.accumulate)
            observations.append(observation)
        merged = {}
        for key in observations[0]:
            values = [o[key] for o in observations if key in o]
            merged[key] = torch.stack([torch.as_tensor(v) for v in values]).mean(0) \
                if isinstance(values[0], torch.Tensor) else sum(values) / len(values)
        reporter.get_current_reporter().observation.update(merged)
