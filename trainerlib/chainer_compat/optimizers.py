"""``chainer.optimizers``: torch optimizers created the Chainer way, ``opt.setup(link)``.

``Adam()`` holds its hyperparameters (Chainer's names and defaults) until ``setup(link)``
gives it the link's parameters; from then on it *is* a ``torch.optim.Adam`` (saved,
loaded and stepped as one) with ``target`` the link, which an updater built without
``model=`` trains (Chainer's ``optimizer.target``).
"""
from __future__ import annotations

import torch


class _SetUp:
    """Mixin: defer ``torch.optim.Optimizer.__init__`` to :meth:`setup`."""

    _torch_class: type = torch.optim.Optimizer

    def __init__(self, **hyper) -> None:   # the Optimizer is not initialised yet
        self._hyper = hyper
        self.target = None

    def setup(self, link: torch.nn.Module) -> '_SetUp':
        """Optimize ``link``'s parameters; returns the optimizer (Chainer's chaining)."""
        if not isinstance(link, torch.nn.Module):
            raise TypeError(f'{type(self).__name__}.setup needs an nn.Module (a Chain), '
                            f'got {type(link).__name__}')
        self._torch_class.__init__(self, link.parameters(), **self._hyper)
        self.target = link
        return self


class Adam(_SetUp, torch.optim.Adam):
    """Chainer's ``Adam(alpha=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay_rate=0,
    amsgrad=False)``; ``weight_decay_rate`` is decoupled as Chainer's (torch's AdamW)."""

    _torch_class = torch.optim.Adam

    def __init__(self, alpha: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay_rate: float = 0.0, amsgrad: bool = False) -> None:
        if weight_decay_rate:
            raise ValueError('Adam(weight_decay_rate=...) is decoupled weight decay: use '
                             'trainerlib.chainer_compat.optimizers.AdamW(weight_decay_rate=...)')
        super().__init__(lr=alpha, betas=(beta1, beta2), eps=eps, amsgrad=amsgrad)


class AdamW(_SetUp, torch.optim.AdamW):
    """Adam with decoupled weight decay (Chainer's ``Adam(weight_decay_rate=…)``).

    Chainer multiplies the decay by ``eta`` (1), torch's AdamW by the learning rate:
    ``weight_decay_rate / alpha`` gives Chainer's step."""

    _torch_class = torch.optim.AdamW

    def __init__(self, alpha: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay_rate: float = 0.0, amsgrad: bool = False) -> None:
        super().__init__(lr=alpha, betas=(beta1, beta2), eps=eps,
                         weight_decay=weight_decay_rate / alpha, amsgrad=amsgrad)


class SGD(_SetUp, torch.optim.SGD):
    """Chainer's ``SGD(lr=0.01)``."""

    _torch_class = torch.optim.SGD

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__(lr=lr)


class MomentumSGD(_SetUp, torch.optim.SGD):
    """Chainer's ``MomentumSGD(lr=0.01, momentum=0.9)`` as torch's SGD with momentum: the
    same steps while ``lr`` is constant (torch scales the velocity by ``lr``, Chainer each
    gradient, so here a changed ``lr`` takes effect at once, in Chainer gradually)."""

    _torch_class = torch.optim.SGD

    def __init__(self, lr: float = 0.01, momentum: float = 0.9) -> None:
        super().__init__(lr=lr, momentum=momentum)


__all__ = ['Adam', 'AdamW', 'MomentumSGD', 'SGD']
