"""``chainer.get_device``: a device name that torch accepts wherever it takes a device."""
from __future__ import annotations

from typing import Union

import torch


class Device(str):
    """A torch device name (``'cpu'``, ``'cuda:0'``) with Chainer's ``use()`` and ``xp``.

    It is a ``str``, so ``module.to(device)``, ``tensor.to(device)`` and trainerlib's
    ``device=`` arguments take it as they are.
    """

    @property
    def xp(self):
        """The array module: ``torch`` (Chainer: numpy, cupy or chainerx)."""
        return torch

    @property
    def torch_device(self) -> torch.device:
        return torch.device(str(self))

    def use(self) -> None:
        """Make it the current CUDA device (nothing to do on the CPU)."""
        if self.torch_device.type == 'cuda':
            torch.cuda.set_device(self.torch_device)

    def __repr__(self) -> str:
        return f'<Device {str(self)}>'


def get_device(spec: Union[str, int, torch.device, None] = None) -> Device:
    """Chainer's device specifiers as a :class:`Device`.

    ``-1``, ``'-1'``, ``'@numpy'``, ``'@intel64'``, ``None``: the CPU; ``0``, ``'0'``,
    ``'@cupy:0'``, ``'cuda:0'``: the first GPU; any torch device name as it is.

    Raises:
        ValueError: a specifier torch and Chainer do not know, e.g. ``'@chainerx'``.
    """
    if isinstance(spec, torch.device):
        return Device(str(spec))
    text = '-1' if spec is None else str(spec).strip()
    if text in ('@numpy', '@intel64') or text.lstrip('-').isdigit() and int(text) < 0:
        return Device('cpu')
    if text.isdigit():
        return Device(f'cuda:{int(text)}')
    if text.startswith('@cupy:') and text[6:].isdigit():
        return Device(f'cuda:{int(text[6:])}')
    try:
        return Device(str(torch.device(text)))
    except RuntimeError:
        raise ValueError(f'unknown device specifier {spec!r}: use -1 or @numpy for the CPU, '
                         "0 or @cupy:0 or 'cuda:0' for a GPU") from None
