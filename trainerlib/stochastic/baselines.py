"""Baselines of the likelihood-ratio estimator."""
from __future__ import annotations

from typing import Optional

import torch


class MovingAverageBaseline:
    """``b ← decay · b + (1 − decay) · mean(signal)``, a constant over each draw.

    A step uses the value *before* its own draws update it, so ``b`` never depends on
    the samples it centres (the estimate stays unbiased). It starts at 0 until the
    first update. Its value is a tensor on the signal's device (no sync); it is saved
    with the updater (exact resume).

    Args:
        decay: weight of the previous value (default 0.9; 0 keeps the last mean).
    """

    def __init__(self, decay: float = 0.9) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f'MovingAverageBaseline: decay must be in [0, 1), got {decay!r}')
        self.decay = decay
        self.value: Optional[torch.Tensor] = None

    def __call__(self) -> torch.Tensor:
        """The current baseline (a 0-d tensor; 0 before the first update)."""
        return torch.zeros(()) if self.value is None else self.value

    def update(self, signal: torch.Tensor) -> None:
        """Fold the mean of ``signal`` (detached) into the average."""
        mean = signal.detach().mean()
        self.value = mean if self.value is None else \
            self.decay * self.value + (1.0 - self.decay) * mean

    def state_dict(self) -> dict:
        return {'decay': self.decay, 'value': self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state['value']

    def __repr__(self) -> str:
        return f'MovingAverageBaseline(decay={self.decay!r})'
