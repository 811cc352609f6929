"""The Updater interface: what one training iteration is."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Union

import torch

from trainerlib._state import load_into, state_of
from trainerlib.errors import SnapshotMismatchError
from trainerlib.snapshot_compat import check_optimizer, check_same_shapes, optimizer_record
from trainerlib.updaters.data_parallel import is_compiled, uncompiled, wrap_models


def as_dict(obj: Any, what: str) -> Dict[str, Any]:
    """``{'main': obj}`` for a single object; a copy for a dict; ``{}`` for None."""
    if obj is None:
        return {}
    if isinstance(obj, Mapping):
        if not obj:
            raise ValueError(f'the {what} dict is empty')
        return dict(obj)
    return {'main': obj}


class Updater:
    """Base class of updaters: override :meth:`update_core`.

    An updater owns named iterators, optimizers and models (the main ones are
    ``'main'``). The trainer calls :meth:`update` once per iteration; epoch
    bookkeeping comes from the ``'main'`` iterator. Subclasses that set
    ``self._iterators``, ``self._optimizers``, ``self._models`` and
    ``self.iteration`` themselves (as Chainer custom updaters do) work too. An
    :class:`AmpContext` stored as ``self.amp`` is saved with the state.

    A model given compiled (``torch.compile(model)``) is kept as the plain module
    (``model._orig_mod``: state dicts, snapshots and report names as without compiling)
    and :meth:`ddp` forwards through the compiled one.

    Args:
        iterators: an iterator or a dict of them.
        optimizers: a ``torch.optim.Optimizer`` or a dict of them.
        models: an ``nn.Module`` or a dict of them (reports of a model are
            prefixed by its name: ``main/loss``); default: the optimizers' ``target``
            modules where they have one (Chainer's ``optimizer.setup(model)``, see
            :mod:`trainerlib.chainer_compat.optimizers`).
    """

    def __init__(self, iterators: Any, optimizers: Any,
                 models: Union[None, torch.nn.Module, Mapping[str, torch.nn.Module]] = None
                 ) -> None:
        self._iterators = as_dict(iterators, 'iterator')
        self._optimizers = as_dict(optimizers, 'optimizer')
        self._models = as_dict(models, 'model') if models is not None else {
            name: opt.target for name, opt in self._optimizers.items()
            if isinstance(getattr(opt, 'target', None), torch.nn.Module)}
        # name -> the module to forward through where it is not the plain model: the
        # compiled module given, DDP wrappers (setup_data_parallel)
        self._forward_modules = {name: m for name, m in self._models.items() if is_compiled(m)}
        self._models = {name: uncompiled(m) for name, m in self._models.items()}
        if 'main' not in self._iterators:
            raise ValueError(f"the iterators need a 'main' entry (epochs are counted on it); "
                             f'got {sorted(self._iterators)}')
        self.iteration = 0

    # -- the step ---------------------------------------------------------
    def update(self) -> None:
        """Run one iteration: :meth:`update_core`, then count it."""
        self.update_core()
        self.iteration += 1

    def update_core(self) -> None:
        raise NotImplementedError

    def connect_trainer(self, trainer) -> None:
        """Called by the Trainer on construction; under a data-parallel trainer
        (``trainer.comm.size > 1``) it wraps the models for :meth:`ddp`. Subclasses
        that override it call ``super().connect_trainer(trainer)``."""
        comm = getattr(trainer, 'comm', None)
        if comm is not None and comm.size > 1:
            self.setup_data_parallel(comm)

    def setup_data_parallel(self, comm: Any) -> None:
        """Wrap every model with trainable parameters in ``DistributedDataParallel`` (a
        model given compiled: its compiled module)."""
        models = self.get_all_models()
        wrapped = wrap_models(models, comm, {name: self.ddp(name) for name in models})
        self._forward_modules = {**(getattr(self, '_forward_modules', None) or {}),
                                 **wrapped}

    def ddp(self, name: str = 'main') -> torch.nn.Module:
        """The module to forward through when the loss backpropagated should train
        ``name`` on every rank: its DDP wrapper in a data-parallel run, the compiled
        module of a model given compiled, else the model itself. Reports and state
        always use the plain model."""
        wrapped = getattr(self, '_forward_modules', None)
        if wrapped and name in wrapped:
            return wrapped[name]
        models = getattr(self, '_models', None)   # the hot path: no dict copy
        return models[name] if models and name in models else self.get_model(name)

    def finalize(self) -> None:
        """Finalize every iterator."""
        for iterator in self._iterators.values():
            iterator.finalize()

    # -- accessors --------------------------------------------------------
    def get_iterator(self, name: str) -> Any:
        return _get(self._iterators, name, 'iterator')

    def get_optimizer(self, name: str) -> torch.optim.Optimizer:
        return _get(self._optimizers, name, 'optimizer')

    def get_model(self, name: str) -> torch.nn.Module:
        return _get(self.get_all_models(), name, 'model')

    def get_all_optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        return dict(self._optimizers)

    def get_all_models(self) -> Dict[str, torch.nn.Module]:
        """The plain models by name (compiled ones unwrapped, for a subclass that set
        ``self._models`` itself)."""
        return {k: uncompiled(m) for k, m in (getattr(self, '_models', None) or {}).items()}

    # -- epoch bookkeeping (from the main iterator) -----------------------
    @property
    def epoch(self) -> int:
        return self._iterators['main'].epoch

    @property
    def epoch_detail(self) -> float:
        return self._iterators['main'].epoch_detail

    @property
    def previous_epoch_detail(self) -> Optional[float]:
        return self._iterators['main'].previous_epoch_detail

    @property
    def is_new_epoch(self) -> bool:
        return self._iterators['main'].is_new_epoch

    # -- state ------------------------------------------------------------
    def state_dict(self) -> dict:
        return {'iteration': self.iteration,
                'iterators': {k: state_of(v) for k, v in self._iterators.items()},
                'optimizers': {k: v.state_dict() for k, v in self._optimizers.items()},
                # class and parameter shapes: a resume with another optimizer is refused
                'optimizer_records': {k: optimizer_record(v) for k, v in self._optimizers.items()},
                'models': {k: v.state_dict() for k, v in self.get_all_models().items()},
                'amp': state_of(getattr(self, 'amp', None))}   # an AmpContext's GradScaler

    def check_state_dict(self, state: Any) -> None:
        """Raise SnapshotMismatchError if ``state`` cannot be loaded; changes nothing.

        Every model must have the saved keys and shapes, every optimizer the saved
        class (recorded since trainerlib 0.1; older snapshots: checked by structure)
        and param-group layout, and every iterator a saved state. Called first by
        :meth:`load_state_dict`, so a mismatch never leaves the updater half-loaded.
        """
        fix = 'resume with the same models, optimizers and iterators'
        if not isinstance(state, Mapping) or not all(
                isinstance(state.get(k), Mapping) for k in ('models', 'optimizers', 'iterators')):
            raise SnapshotMismatchError('holds no updater state (models, optimizers, '
                                        'iterators)', fix)
        if not isinstance(state.get('iteration'), int):
            raise SnapshotMismatchError('holds no iteration count of the updater', fix)
        for kind, mine in (('model', self.get_all_models()), ('optimizer', self._optimizers),
                           ('iterator', self._iterators)):
            saved = state[kind + 's']
            for k in mine:
                if k not in saved:
                    raise SnapshotMismatchError(f'has no {kind} named {k!r} (it has '
                                                f'{sorted(saved) or "none"})', fix)
        for k, model in self.get_all_models().items():
            check_same_shapes(model.state_dict(), state['models'][k], f'model {k!r}')
        records = state.get('optimizer_records')
        records = records if isinstance(records, Mapping) else {}
        for k, opt in self._optimizers.items():
            check_optimizer(opt, state['optimizers'][k], f'optimizer {k!r}', records.get(k))

    def load_state_dict(self, state: dict) -> None:
        self.check_state_dict(state)
        for k, model in self.get_all_models().items():
            model.load_state_dict(state['models'][k])
        for k, opt in self._optimizers.items():
            opt.load_state_dict(state['optimizers'][k])
        for k, it in self._iterators.items():
            load_into(it, state['iterators'][k])
        self.iteration = state['iteration']
        load_into(getattr(self, 'amp', None), state.get('amp', {}))


def _get(d: Mapping[str, Any], name: str, what: str) -> Any:
    try:
        return d[name]
    except KeyError:
        raise KeyError(f'no {what} named {name!r}; available: {sorted(d)}') from None
