"""Optuna pruning: report a value to a trial at a trigger; stop the run cleanly when pruned.

Chainer users had Optuna's ``ChainerPruningExtension(trial, observation_key,
pruner_trigger)``; this is the same extension for trainerlib (that name is kept)::

    pruning = E.OptunaPruning(trial, 'validation/main/accuracy', (1, 'epoch'))
    trainer.extend(pruning)
    trainer.run()
    pruning.raise_if_pruned()       # optuna.TrialPruned, as an objective should end

Optuna is an optional dependency (``pip install trainerlib[optuna]``): this module imports
without it, and building the extension without it raises a one-line ImportError.
"""
from __future__ import annotations

import warnings
from typing import Any, List, Optional, Tuple

from trainerlib._state import guess_previous, load_into, state_of
from trainerlib.distributed.context import comm_of
from trainerlib.extension import PRIORITY_READER, Extension
from trainerlib.summary import DictSummary
from trainerlib.triggers.get_trigger import TriggerLike, get_trigger


def import_optuna(what: str = 'OptunaPruning') -> Any:
    """The ``optuna`` module, or an ImportError saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise ImportError(f'{what} needs optuna: pip install trainerlib[optuna]') from None
    return optuna


class OptunaPruning(Extension):
    """Reports ``observation_key`` to an Optuna trial and stops training when it is pruned.

    Every iteration it adds the key's value (when reported) to a running mean; at each
    ``pruner_trigger`` it calls ``trial.report(mean, step)`` with the mean since the
    previous check (for a key the Evaluator reports once per epoch: that epoch's value),
    then asks ``trial.should_prune()``. The step is the updater's ``epoch`` for a trigger
    in epochs and its ``iteration`` otherwise (as Chainer's ``ChainerPruningExtension``):
    a pruner's warm-up (``MedianPruner(n_warmup_steps=...)``) counts in that unit (checks
    more often than once an epoch need a trigger in iterations: a step is reported once).

    When the trial should be pruned, the run stops as it does at its stop trigger, right
    after this iteration: the extensions that save on a stop (``extensions.snapshot``:
    its ``on_preemption``) write a snapshot of this iteration unless they just did, the
    extensions finalize (``LogReport`` writes its log) and ``Trainer.run`` returns.
    Nothing is raised: the caller reads :attr:`pruned` (or calls
    :meth:`raise_if_pruned`) and tells the study. The stop works by wrapping
    ``trainer.stop_trigger`` from :meth:`initialize` to :meth:`finalize` (its state,
    hence the snapshots, are those of the trigger it wraps). One process only.

    Args:
        trial: an ``optuna.trial.Trial``.
        observation_key: the reported key, e.g. ``'validation/main/accuracy'``.
        pruner_trigger: when to report and ask, default ``(1, 'epoch')``.

    Attributes:
        pruned: whether the trial was pruned (the run then stopped).
        pruned_at: ``(unit, step)`` of the check that pruned it (None: not pruned).
        reported: the ``(step, value)`` pairs reported to the trial by this run.
    """

    trigger = (1, 'iteration')   # accumulates every iteration; reports at pruner_trigger
    priority = PRIORITY_READER

    def __init__(self, trial: Any, observation_key: str,
                 pruner_trigger: TriggerLike = (1, 'epoch')) -> None:
        import_optuna()
        if not isinstance(observation_key, str) or not observation_key:
            raise ValueError(f'observation_key must be a reported key such as '
                             f"'validation/main/loss', got {observation_key!r}")
        self.trial = trial
        self.observation_key = observation_key
        self._check_trigger = get_trigger(pruner_trigger)
        self.unit = getattr(self._check_trigger, 'unit', 'iteration')
        self._summary = DictSummary()
        self.pruned = False
        self.pruned_at: Optional[Tuple[str, int]] = None
        self.reported: List[Tuple[int, float]] = []
        self._warned = False
        self._wrapped: Optional[_StopWhenPruned] = None

    def initialize(self, trainer) -> None:
        if comm_of(trainer).size > 1:
            raise ValueError('OptunaPruning runs in one process: a trial cannot be told '
                             'the same decision on every rank of a data-parallel run')
        self._wrapped = _StopWhenPruned(trainer.stop_trigger, self)
        trainer.stop_trigger = self._wrapped

    def __call__(self, trainer) -> None:
        observation = trainer.observation
        key = self.observation_key
        if key in observation:
            self._summary.add({key: observation[key]})
        if self.pruned or not self._check_trigger(trainer):
            return
        stats = self._summary.compute_mean() if len(self._summary) else {}
        self._summary = DictSummary()
        if key not in stats:
            if not self._warned:
                warnings.warn(f'OptunaPruning: {key!r} was not reported before this check, '
                              f'so nothing was reported to the trial; reported keys: '
                              f'{sorted(observation)}')
                self._warned = True
            return
        value = float(stats[key])
        step = int(getattr(trainer.updater, 'epoch' if self.unit == 'epoch' else 'iteration'))
        self.trial.report(value, step)
        self.reported.append((step, value))
        if self.trial.should_prune():
            self.pruned = True
            self.pruned_at = (self.unit, step)

    @property
    def message(self) -> str:
        """``'trial N was pruned at epoch E'`` (empty when not pruned)."""
        if self.pruned_at is None:
            return ''
        return f'trial {self.trial.number} was pruned at {self.pruned_at[0]} {self.pruned_at[1]}'

    def raise_if_pruned(self) -> None:
        """Raise ``optuna.TrialPruned`` if the trial was pruned (end an objective with it)."""
        if self.pruned:
            raise import_optuna().TrialPruned(self.message)

    def finalize(self, trainer=None) -> None:
        if trainer is not None and trainer.stop_trigger is self._wrapped is not None:
            trainer.stop_trigger = self._wrapped.inner
        self._wrapped = None

    def guess_previous(self) -> None:
        guess_previous(self._check_trigger)

    def state_dict(self) -> dict:
        return {'summary': self._summary.state_dict(), 'trigger': state_of(self._check_trigger),
                'reported': [list(r) for r in self.reported]}

    def load_state_dict(self, state: dict) -> None:
        self._summary.load_state_dict(state['summary'])
        load_into(self._check_trigger, state['trigger'])
        self.reported = [(int(s), float(v)) for s, v in state['reported']]


class _StopWhenPruned:
    """The trainer's stop trigger while :class:`OptunaPruning` runs: fires once pruned."""

    def __init__(self, inner: Any, pruning: OptunaPruning) -> None:
        self.inner = inner
        self._pruning = pruning

    def __call__(self, trainer) -> bool:
        if self._pruning.pruned:
            for extension in list(trainer.extensions.values()):
                save = getattr(extension, 'on_preemption', None)  # a snapshot, unless just made
                if save is not None:
                    save(trainer)
            return True
        return self.inner(trainer)

    def get_training_length(self):
        return getattr(self.inner, 'get_training_length', lambda: None)()

    def guess_previous(self) -> None:
        guess_previous(self.inner)

    def state_dict(self) -> dict:
        return state_of(self.inner)

    def load_state_dict(self, state: dict) -> None:
        load_into(self.inner, state)


ChainerPruningExtension = OptunaPruning
"""Optuna's name for it in ``optuna.integration`` (Chainer)."""
