"""observe_value / observe_lr: put a value computed from the trainer into the observation."""
from __future__ import annotations

from typing import Any, Callable

from trainerlib.extension import PRIORITY_WRITER, make_extension


def observe_value(observation_key: str, target_func: Callable[[Any], Any]) -> Callable:
    """An extension that records ``target_func(trainer)`` under ``observation_key``.

    Default trigger ``(1, 'epoch')``, priority ``PRIORITY_WRITER``: it runs before the
    readers (LogReport) and before the hyperparameter shifts, which run at
    ``PRIORITY_READER`` and change values for the next iteration.

    Args:
        observation_key: key written into ``trainer.observation``.
        target_func: ``fn(trainer)`` returning the value (a number or a tensor,
            reported as is: no device sync).
    """
    @make_extension(trigger=(1, 'epoch'), priority=PRIORITY_WRITER,
                    default_name='observe_' + observation_key.replace('/', '_'))
    def _observe_value(trainer) -> None:
        trainer.observation[observation_key] = target_func(trainer)
    return _observe_value


def observe_lr(optimizer_name: str = 'main', observation_key: str = 'lr', *,
               param_group: int = 0) -> Callable:
    """An extension that records the learning rate used by the iteration that just ran.

    Args:
        optimizer_name: name of the updater's optimizer, default ``'main'``.
        observation_key: key written into the observation, default ``'lr'``.
        param_group: index of the param group whose ``'lr'`` is recorded, default 0.
    """
    return observe_value(observation_key, lambda trainer: trainer.updater.get_optimizer(
        optimizer_name).param_groups[param_group]['lr'])
