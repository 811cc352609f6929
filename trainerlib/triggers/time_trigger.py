"""Fire every ``period`` seconds of training time."""
from __future__ import annotations


class TimeTrigger:
    """Fires when ``trainer.elapsed_time`` passes the next multiple of ``period``.

    Args:
        period: interval in seconds (> 0).
    """

    def __init__(self, period: float) -> None:
        if not period > 0:
            raise ValueError(f'TimeTrigger period must be positive seconds, got {period!r}')
        self.period = period
        self._next_time = period

    def __call__(self, trainer) -> bool:
        if self._next_time <= trainer.elapsed_time:
            self._next_time += self.period
            return True
        return False

    def state_dict(self) -> dict:
        return {'next_time': self._next_time}

    def load_state_dict(self, state: dict) -> None:
        self._next_time = state['next_time']
