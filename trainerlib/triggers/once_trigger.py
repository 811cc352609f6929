"""Fire exactly once (optionally once more after each resume)."""
from __future__ import annotations


class OnceTrigger:
    """Fires at its first call only.

    Args:
        call_on_resume: also fire at the first call after loading a snapshot.
    """

    def __init__(self, call_on_resume: bool = False) -> None:
        self._fired = False
        self._call_on_resume = call_on_resume
        self._resumed = False

    @property
    def finished(self) -> bool:
        """Whether it will never fire again (Chainer's flag: an extension whose trigger is
        finished need not be initialized after a resume)."""
        return self._fired and not self._resumed

    def __call__(self, trainer) -> bool:
        fire = not self._fired or self._resumed
        self._fired, self._resumed = True, False
        return fire

    def state_dict(self) -> dict:
        return {'fired': self._fired}

    def load_state_dict(self, state: dict) -> None:
        self._fired = state['fired']
        self._resumed = self._call_on_resume
