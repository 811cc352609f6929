"""Automatic mixed precision for updaters: autocast + an optional GradScaler."""
from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Union

import torch

from trainerlib.convert import DeviceLike

_DTYPES = {'float16': torch.float16, 'bfloat16': torch.bfloat16}


def _device_type(device: DeviceLike) -> str:
    if device is None:
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    if isinstance(device, int):
        return 'cpu' if device < 0 else 'cuda'
    return torch.device(device).type


class AmpContext:
    """Autocast and loss scaling for one or several optimizers.

    Args:
        amp: False (off), True (float16 on CUDA, bfloat16 elsewhere), or
            ``'float16'`` / ``'bfloat16'``.
        device: the device the forward runs on (its type picks the autocast).

    With float16 a ``torch.amp.GradScaler`` scales losses; use
    :meth:`scale` for ``backward``, :meth:`unscale_` before clipping,
    :meth:`step` per optimizer and :meth:`update` once per iteration.
    Without AMP these are plain pass-throughs.
    """

    def __init__(self, amp: Union[bool, str] = False, device: DeviceLike = None) -> None:
        self.device_type = _device_type(device)
        if amp is True:
            amp = 'float16' if self.device_type == 'cuda' else 'bfloat16'
        if amp not in (False, None, *_DTYPES):
            raise ValueError(f"amp must be False, True, 'float16' or 'bfloat16', got {amp!r}")
        self.dtype = _DTYPES.get(amp) if amp else None
        self.scaler = torch.amp.GradScaler(self.device_type) \
            if self.dtype is torch.float16 else None
        self._unscaled: set = set()
        self._off = contextlib.nullcontext()   # reusable

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    def autocast(self) -> ContextManager:
        if self.dtype is None:
            return self._off
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss if self.scaler is None else self.scaler.scale(loss)

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None and id(optimizer) not in self._unscaled:
            self.scaler.unscale_(optimizer)
            self._unscaled.add(id(optimizer))

    def step(self, optimizer: torch.optim.Optimizer) -> Any:
        if self.scaler is None:
            return optimizer.step()
        return self.scaler.step(optimizer)

    def update(self) -> None:
        self._unscaled.clear()
        if self.scaler is not None:
            self.scaler.update()

    def state_dict(self) -> dict:
        return {} if self.scaler is None else {'scaler': self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state.get('scaler'):
            self.scaler.load_state_dict(state['scaler'])
