"""Evaluator: the mean of what the targets report over a validation set."""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Dict, Iterator, Mapping, Optional

import torch
from tqdm import tqdm
from trainerlib import reporter as reporter_module
from trainerlib._state import load_into, state_of
from trainerlib.convert import DeviceLike, concat_examples
from trainerlib.distributed.context import comm_of
from trainerlib.extension import PRIORITY_WRITER, Extension
from trainerlib.summary import DictSummary
from trainerlib.updaters.data_parallel import unwrap
from trainerlib.updaters.standard_updater import call_with

from trainerlib.extensions.progress_bar import batches_per_epoch


def _dim0(obj: Any) -> Optional[int]:
    """Length of dim 0 of a tensor or NumPy array (read from its shape: no sync), else None."""
    shape = getattr(obj, 'shape', None)
    return int(shape[0]) if isinstance(shape, tuple) and len(shape) else None


def batch_size(in_arrays: Any, batch: Any) -> int:
    """The weight of one batch: its number of examples where it can be measured, else 1.

    Tried in order: dim 0 of the first converted array (a tensor or NumPy array,
    first of a tuple / list / dict), dim 0 of the raw batch, ``len`` of a raw list
    or tuple (a list of examples); anything else (a plain int, a dict of scalars, an
    object without ``len``) weighs 1.
    """
    first = in_arrays
    if isinstance(first, Mapping):
        first = next(iter(first.values()), None)
    elif isinstance(first, (tuple, list)):
        first = first[0] if first else None
    size = _dim0(first)
    if size is None:
        size = _dim0(batch)
    if size is None and isinstance(batch, (tuple, list)):
        size = len(batch)
    return 1 if size is None else size


def _plain(target: Any) -> Any:
    """The module inside ``DistributedDataParallel`` and ``torch.compile`` wrappers (its
    names are the report's; evaluating through DDP with uneven shards would hang in its
    forward-time buffer broadcast)."""
    return unwrap(target)[0]


def broadcast_buffers(modules: Any, comm: Any, root: int = 0) -> None:
    """Give every rank ``root``'s buffers of ``modules`` (BatchNorm running statistics,
    ``num_batches_tracked`` …): one broadcast per dtype, in place. Collective; nothing
    to do (and no collective) when there are no buffers."""
    seen, groups = set(), {}
    for module in modules:
        for buffer in module.buffers():
            if id(buffer) not in seen:
                seen.add(id(buffer))
                groups.setdefault(buffer.dtype, []).append(buffer)
    device = getattr(comm, 'device', None) or torch.device('cpu')
    with torch.no_grad():
        for dtype, buffers in groups.items():
            wire = torch.uint8 if dtype is torch.bool else dtype
            flat = torch.cat([b.detach().reshape(-1).to(device, wire) for b in buffers])
            comm.bcast_tensor(flat, root)
            offset = 0
            for b in buffers:
                b.copy_(flat[offset:offset + b.numel()].view(b.shape).to(b.device, b.dtype))
                offset += b.numel()


@contextlib.contextmanager
def _eval_mode(modules: Any) -> Iterator[None]:
    """Put ``modules`` (and their submodules) in eval mode; restore each one's mode after."""
    saved = [(m, m.training) for module in modules for m in module.modules()]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for m, training in saved:
            m.training = training


class Evaluator(Extension):
    """Evaluates the targets on a validation set and reports the means.

    At each call the targets are put in eval mode (each module's previous mode
    is restored afterwards, even on error), the main iterator is reset and run
    to its end under ``torch.no_grad()``, and ``eval_func`` is called on each
    converted batch (``*tuple`` / ``**dict``). What it reports is averaged over
    the batches, weighted by their size (:func:`batch_size`: dim 0 of the first
    converted array; a batch that cannot be measured weighs 1), and reported with
    the targets' names prefixed by :attr:`name`, as in Chainer: registered with
    ``trainer.extend`` (default name ``'validation'``), a
    :class:`~trainerlib.Classifier` target gives ``validation/main/loss`` and
    ``validation/main/accuracy``; called alone (``evaluator()``, no name) it gives
    ``main/loss``. Reported tensors stay on the device during the loop; they are
    reduced once at the end.

    Differences from Chainer, on purpose: the means are weighted by batch size
    (Chainer averages the batch means, which a short last batch biases; with
    batches that cannot be measured the two agree); an iterator that repeats is
    an error here (Chainer only warns, then never ends).

    Data-parallel (``trainer.comm``, or ``comm=``, of several ranks): give each rank
    its shard of the validation set (unpadded, sizes may differ, a rank may have
    none). It runs on every rank: rank 0's module buffers (BatchNorm statistics) are
    broadcast first, so every rank evaluates the same model; the loop has no
    collective (uneven shards cannot hang; a ``DistributedDataParallel`` target is
    evaluated through its plain ``.module``); at the end the (Σ size·value, Σ size)
    sums of all ranks are added in one packed all-reduce, so the result is the exact
    sample-weighted mean over the whole set, the same on every rank. The progress
    bar shows on rank 0 only.

    A target given compiled (``torch.compile(model)``) is evaluated through the compiled
    module (its eval-mode, no-grad graph is compiled at the first evaluation) and reported
    under the plain module's names (``validation/main/loss``).

    Args:
        iterator: the validation iterator (``repeat=False``), or a dict with
            ``'main'``. Any re-iterable without ``reset`` (a DataLoader) works.
        target: the ``nn.Module`` to evaluate, or a dict with ``'main'``.
        converter: ``converter(batch, device)`` (default ``concat_examples``).
        device: where batches go (None: leave them where they are).
        eval_hook: ``eval_hook(evaluator)`` called before each evaluation.
        eval_func: called on each batch; default: the main target.
        progress_bar: show a tqdm bar of the batches on stderr (default False).
        name: default extension name (``'validation'`` if None); given, it is also
            the report prefix of a call outside a trainer (``extend`` renames it).
        comm: the communicator to reduce over (default: the trainer's).

    Default trigger ``(1, 'epoch')``, priority ``PRIORITY_WRITER``.
    """

    trigger = (1, 'epoch')
    priority = PRIORITY_WRITER
    default_name = 'validation'

    def __init__(self, iterator: Any, target: Any, converter: Callable[..., Any] = concat_examples,
                 device: DeviceLike = None,
                 eval_hook: Optional[Callable[['Evaluator'], None]] = None,
                 eval_func: Optional[Callable[..., Any]] = None, *, progress_bar: bool = False,
                 name: Optional[str] = None, comm: Any = None) -> None:
        self._iterators = dict(iterator) if isinstance(iterator, Mapping) else {'main': iterator}
        targets = dict(target) if isinstance(target, Mapping) else {'main': target}
        self._targets = {key: _plain(t) for key, t in targets.items()}
        # the compiled module of a target given compiled (without DDP inside): evaluated through
        self._compiled_targets = {key: c for key, c in (
            (k, unwrap(t)[1]) for k, t in targets.items()) if c is not None}
        for key, it in self._iterators.items():
            if getattr(it, 'repeat', False):
                raise ValueError(f'Evaluator: the iterator {key!r} repeats forever, so the '
                                 'evaluation would never end; create it with repeat=False, e.g. '
                                 'SerialIterator(dataset, batch_size, repeat=False, shuffle=False)')
        if 'main' not in self._iterators or (eval_func is None and 'main' not in self._targets):
            raise ValueError("Evaluator: the iterator and target dicts need a 'main' entry")
        self.converter = converter
        self.device = device
        self.eval_hook = eval_hook
        self.eval_func = eval_func
        self.progress_bar = progress_bar
        self.default_name = name or 'validation'
        if name is not None:
            self.name = name
        self.comm = comm
        self._active_comm: Any = None   # the communicator of the current call

    def get_iterator(self, name: str) -> Any:
        return self._iterators[name]

    def get_all_iterators(self) -> Dict[str, Any]:
        return dict(self._iterators)

    def get_target(self, name: str) -> Any:
        return self._targets[name]

    def get_all_targets(self) -> Dict[str, Any]:
        return dict(self._targets)

    def __call__(self, trainer=None) -> Dict[str, float]:
        """Evaluate, report the result to the current reporter and return it."""
        reporter = reporter_module.Reporter()
        prefix = self.name + '/' if self.name else ''
        modules = [t for t in self._targets.values() if isinstance(t, torch.nn.Module)]
        for name, target in self._targets.items():
            add = reporter.add_module if target in modules else reporter.add_observer
            add(prefix + name, target)
        comm = self.comm if self.comm is not None else comm_of(trainer)
        if comm.size > 1:
            broadcast_buffers(modules, comm)
        self._active_comm = comm
        try:
            with reporter, _eval_mode(modules):
                result = self.evaluate()
        finally:
            self._active_comm = None
        reporter_module.report(result)
        return result

    @property
    def comm_in_use(self) -> Any:
        """The communicator of the current evaluation (the trainer's or ``comm``; None
        when called alone without ``comm``)."""
        return self._active_comm if self._active_comm is not None else self.comm

    def evaluate(self) -> Dict[str, float]:
        """Run the evaluation loop; return the weighted means of the reported values.

        Called by ``__call__`` with the targets in eval mode and a reporter that
        knows their names; override it for a custom loop (data-parallel, end it with
        ``summary = summary.allreduce(self.comm_in_use)`` on every rank).
        """
        iterator = self._iterators['main']
        eval_func = self.eval_func
        if eval_func is None:
            eval_func = self._compiled_targets.get('main', self._targets['main'])
        if self.eval_hook is not None:
            self.eval_hook(self)
        if hasattr(iterator, 'reset'):
            iterator.reset()
        batches = iterator
        comm = self.comm_in_use
        if self.progress_bar and getattr(comm, 'rank', 0) == 0:
            per_epoch = batches_per_epoch(iterator)
            total = None if per_epoch is None else math.ceil(per_epoch)
            batches = tqdm(iterator, total=total, leave=False,
                           desc=self.name or self.default_name, unit='batch')
        summary = DictSummary()
        with torch.no_grad():
            for batch in batches:
                observation: Dict[str, Any] = {}
                with reporter_module.report_scope(observation):
                    in_arrays = self.converter(batch, self.device)
                    call_with(eval_func, in_arrays)
                size = batch_size(in_arrays, batch)
                summary.add({key: (value, size) for key, value in observation.items()})
        summary = summary.allreduce(comm)   # every rank's sums (itself with one process)
        return summary.compute_mean() if len(summary) else {}

    def finalize(self, trainer: Any = None) -> None:
        """Finalize the iterators that have a ``finalize`` (as Chainer's; a DataLoader
        has none). Called when the training ends."""
        for iterator in self._iterators.values():
            finalize = getattr(iterator, 'finalize', None)
            if callable(finalize):
                finalize()

    def state_dict(self) -> dict:
        """The iterators' state (their order and RNG), so a resumed run evaluates identically."""
        return {'iterators': {k: state_of(it) for k, it in self._iterators.items()}}

    def load_state_dict(self, state: dict) -> None:
        for key, it in self._iterators.items():
            load_into(it, state.get('iterators', {}).get(key))


def create_multi_node_evaluator(evaluator: Evaluator, comm: Any) -> Evaluator:
    """ChainerMN's spelling: ``evaluator`` reducing over ``comm`` (returned, the same object).

    Unlike ChainerMN's, the result is the exact sample-weighted mean over all ranks'
    shards (not the equal-weight mean of per-rank means).
    """
    evaluator.comm = comm
    return evaluator
