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
from trainerlib.extension import PRIORITY_WRITER, Extension
from trainerlib.summary import DictSummary
from trainerlib.updaters.standard_updater import call_with

from extensions.progress_bar import batches_per_epoch


def _batch_size(in_arrays: Any, batch: Any) -> int:
    """Examples in a batch: dim 0 of the first converted tensor, else ``len(batch)``."""
    first = in_arrays
    if isinstance(first, Mapping):
        first = next(iter(first.values()), None)
    elif isinstance(first, (tuple, list)):
        first = first[0] if first else None
    if isinstance(first, torch.Tensor) and first.dim() > 0:
        return first.shape[0]
    return len(batch)


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
    the batches, weighted by their size, and reported to the trainer prefixed
    by the extension's name: a :class:`~trainerlib.Classifier` target gives
    ``validation/main/loss`` and ``validation/main/accuracy``. Reported tensors
    stay on the device during the loop; they are reduced once at the end.

    Args:
        iterator: the validation iterator (``repeat=False``), or a dict with
            ``'main'``. Any re-iterable without ``reset`` (a DataLoader) works.
        target: the ``nn.Module`` to evaluate, or a dict with ``'main'``.
        converter: ``converter(batch, device)`` (default ``concat_examples``).
        device: where batches go (None: leave them where they are).
        eval_hook: ``eval_hook(evaluator)`` called before each evaluation.
        eval_func: called on each batch; default: the main target.
        progress_bar: show a tqdm bar of the batches on stderr (default False).
        name: report prefix and default extension name (default ``'validation'``).

    Default trigger ``(1, 'epoch')``, priority ``PRIORITY_WRITER``.
    """

    trigger = (1, 'epoch')
    priority = PRIORITY_WRITER
    default_name = 'validation'

    def __init__(self, iterator: Any, target: Any, converter: Callable[..., Any] = concat_examples,
                 device: DeviceLike = None,
                 eval_hook: Optional[Callable[['Evaluator'], None]] = None,
                 eval_func: Optional[Callable[..., Any]] = None, *, progress_bar: bool = False,
                 name: str = 'validation') -> None:
        self._iterators = dict(iterator) if isinstance(iterator, Mapping) else {'main': iterator}
        self._targets = dict(target) if isinstance(target, Mapping) else {'main': target}
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
        self.default_name = name

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
        prefix = (self.name or self.default_name) + '/'
        modules = [t for t in self._targets.values() if isinstance(t, torch.nn.Module)]
        for name, target in self._targets.items():
            add = reporter.add_module if target in modules else reporter.add_observer
            add(prefix + name, target)
        with reporter, _eval_mode(modules):
            result = self.evaluate()
        reporter_module.report(result)
        return result

    def evaluate(self) -> Dict[str, float]:
        """Run the evaluation loop; return the weighted means of the reported values.

        Called by ``__call__`` with the targets in eval mode and a reporter that
        knows their names; override it for a custom loop.
        """
        iterator = self._iterators['main']
        eval_func = self._targets['main'] if self.eval_func is None else self.eval_func
        if self.eval_hook is not None:
            self.eval_hook(self)
        if hasattr(iterator, 'reset'):
            iterator.reset()
        batches = iterator
        if self.progress_bar:
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
                size = _batch_size(in_arrays, batch)
                summary.add({key: (value, size) for key, value in observation.items()})
        return summary.compute_mean() if len(summary) else {}

    def state_dict(self) -> dict:
        """The iterators' state (their order and RNG), so a resumed run evaluates identically."""
        return {'iterators': {k: state_of(it) for k, it in self._iterators.items()}}

    def load_state_dict(self, state: dict) -> None:
        for key, it in self._iterators.items():
            load_into(it, state.get('iterators', {}).get(key))
