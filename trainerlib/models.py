"""``Classifier``: wraps a predictor with a loss and an accuracy, as Chainer's ``L.Classifier``."""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from trainerlib import reporter


def _long_labels(t: torch.Tensor) -> torch.Tensor:
    """``t`` as int64 when it holds integer labels of another dtype (int32, uint8 …)."""
    if t.dtype is torch.int64 or t.dtype.is_floating_point or t.dtype.is_complex:
        return t
    return t.long()


def cross_entropy(y: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
    """``F.cross_entropy(y, t, **kwargs)`` accepting integer labels of any dtype.

    Chainer's labels are usually int32; ``F.cross_entropy`` wants int64, so
    other integer dtypes are converted on the device (no sync). Floating ``t``
    (class probabilities) passes unchanged.
    """
    if t.dtype is not torch.int64:   # (the usual dtype: no call)
        t = _long_labels(t)
    return F.cross_entropy(y, t, **kwargs)


def accuracy(y: torch.Tensor, t: torch.Tensor, ignore_label: Optional[int] = None) -> torch.Tensor:
    """Fraction of the labels ``t`` (any integer dtype) equal to ``y.argmax(dim=1)``.

    As Chainer's ``F.accuracy``: ``y`` is ``(N, C, ...)`` and ``t`` ``(N, ...)``;
    labels equal to ``ignore_label`` are left out (0 if all are). A float32
    tensor, computed on the device (no sync).
    """
    pred = y.argmax(dim=1).reshape(t.shape)
    if ignore_label is None:
        return (pred == t).float().mean()
    mask = t != ignore_label
    return ((pred == t) & mask).sum().float() / mask.sum().clamp_min(1).float()


class Classifier(torch.nn.Module):
    """``loss = lossfun(predictor(*x), t)``; reports ``loss`` and ``accuracy``.

    Called as ``classifier(*args)``: the last argument (``label_key=-1``) is the
    target, the others go to the predictor. Reports are prefixed by the name the
    updater registers the classifier under (``main/loss``, ``main/accuracy``).

    Args:
        predictor: the network producing scores (logits or log-probabilities).
        lossfun: ``lossfun(y, t)``, default :func:`cross_entropy` (``F.cross_entropy``
            taking integer labels of any dtype, e.g. Chainer's int32).
        accfun: ``accfun(y, t)``, default :func:`accuracy`; None disables it.
        label_key: position (int) or keyword (str) of the target among the args.

    Attributes:
        y, loss, accuracy: results of the last call (tensors).
    """

    def __init__(self, predictor: torch.nn.Module,
                 lossfun: Callable[..., torch.Tensor] = cross_entropy,
                 accfun: Optional[Callable[..., torch.Tensor]] = accuracy,
                 label_key=-1) -> None:
        super().__init__()
        self.predictor = predictor
        self.lossfun = lossfun
        self.accfun = accfun
        self.compute_accuracy = accfun is not None
        self.label_key = label_key
        self.y = self.loss = self.accuracy = None

    def forward(self, *args, **kwargs) -> torch.Tensor:
        key = self.label_key
        if key == -1 and type(key) is int and args:   # the default: the last argument
            t = args[-1]
            args = args[:-1]
        elif isinstance(key, int):
            if not args:
                raise TypeError('Classifier: no positional input to take the label from')
            k = key % len(args)   # (IndexError below if out of range, as pop)
            t = args[key]
            args = args[:k] + args[k + 1:]
        else:
            if key not in kwargs:
                raise TypeError(f'Classifier: label key {key!r} not in the inputs '
                                f'{sorted(kwargs)}')
            kwargs = dict(kwargs)
            t = kwargs.pop(key)
        # the instance dict directly: nn.Module's __getattr__/__setattr__ are slow
        state = self.__dict__
        y = state['_modules']['predictor'](*args, **kwargs)
        loss = state['loss'] = self.lossfun(y, t)
        state['y'] = y
        values = {'loss': loss}
        if self.compute_accuracy:
            values['accuracy'] = state['accuracy'] = self.accfun(y, t)
        reporter.report(values, self)
        return loss
