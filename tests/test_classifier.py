"""Classifier: the label is taken out by position or keyword; loss and accuracy reported;
any integer label dtype (Chainer's int32) works; ``accuracy`` as Chainer's."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainerlib import Classifier, Reporter
from trainerlib.models import _long_labels, accuracy, cross_entropy


class TwoInputs(torch.nn.Module):
    """A predictor with two inputs, to exercise the general call path."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 4)

    def forward(self, x, bias=None):
        y = self.linear(x)
        return y if bias is None else y + bias


@pytest.mark.parametrize('label_key, call, with_bias', [
    (-1, lambda c, x, t, b: c(x, t), False),            # the usual (x, t)
    (-1, lambda c, x, t, b: c(x, b, t), True),          # more inputs
    (0, lambda c, x, t, b: c(t, x), False),             # the label first
    (-2, lambda c, x, t, b: c(x, t, b), True),          # another position from the end
    ('t', lambda c, x, t, b: c(x, t=t), False),         # by keyword
    ('t', lambda c, x, t, b: c(x, bias=b, t=t), True),
])
def test_loss_and_reports_for_every_label_position(label_key, call, with_bias):
    torch.manual_seed(0)
    predictor = TwoInputs()
    classifier = Classifier(predictor, label_key=label_key)
    x, t, b = torch.randn(5, 3), torch.tensor([0, 1, 2, 3, 0]), torch.randn(4)
    reporter, observation = Reporter(), {}
    reporter.add_observer('main', classifier)
    with reporter.scope(observation):
        loss = call(classifier, x, t, b)
    y = predictor(x, b) if with_bias else predictor(x)
    assert torch.equal(loss, F.cross_entropy(y, t))
    assert torch.equal(classifier.y, y)
    assert set(observation) == {'main/loss', 'main/accuracy'}
    assert not observation['main/loss'].requires_grad
    assert observation['main/accuracy'] == (y.argmax(1) == t).float().mean()


@pytest.mark.parametrize('label_key, args, kwargs, message', [
    (-1, (), {'x': torch.zeros(1, 3)}, 'no positional input'),
    ('t', (torch.zeros(1, 3),), {}, "label key 't' not in the inputs"),
])
def test_a_missing_label_is_one_clear_error(label_key, args, kwargs, message):
    with pytest.raises(TypeError, match=message):
        Classifier(TwoInputs(), label_key=label_key)(*args, **kwargs)


DTYPES = [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8]


@pytest.mark.parametrize('dtype', DTYPES)
def test_default_loss_and_accuracy_take_any_integer_label_dtype(dtype):
    """Chainer's labels are usually int32; F.cross_entropy alone wants int64."""
    torch.manual_seed(0)
    classifier = Classifier(torch.nn.Linear(3, 4))
    x, t = torch.randn(6, 3), torch.tensor([0, 1, 2, 3, 0, 2])
    reporter, observation = Reporter(), {}
    reporter.add_observer('main', classifier)
    with reporter.scope(observation):
        loss = classifier(x, t.to(dtype))
    y = classifier.predictor(x)
    assert torch.equal(loss, F.cross_entropy(y, t))
    assert observation['main/accuracy'] == (y.argmax(1) == t).float().mean()


def test_labels_are_converted_only_when_needed():
    t = torch.tensor([0, 1])
    assert _long_labels(t) is t                         # int64: no copy
    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    assert _long_labels(probs) is probs                 # class probabilities pass unchanged
    y = torch.randn(2, 2)
    assert torch.equal(cross_entropy(y, probs), F.cross_entropy(y, probs))
    assert cross_entropy(y, t.int(), reduction='none').shape == (2,)


@pytest.mark.parametrize('dtype', DTYPES[:2])
@pytest.mark.parametrize('y_shape, t_shape', [((10, 3), (10,)), ((10, 3, 1), (10,)),
                                              ((10, 3, 5), (10, 5)), ((10, 3, 2, 4), (10, 2, 4))])
@pytest.mark.parametrize('ignore_label', [None, 0, 2])
def test_accuracy_as_chainer(dtype, y_shape, t_shape, ignore_label):
    """Chainer's ``F.accuracy``: argmax over axis 1, reshaped to the labels' shape; labels
    equal to ``ignore_label`` are left out."""
    g = torch.Generator().manual_seed(1)
    y, t = torch.rand(y_shape, generator=g), torch.randint(0, 3, t_shape, generator=g)
    pred = y.numpy().argmax(axis=1).reshape(t_shape)
    keep = np.ones(t_shape, bool) if ignore_label is None else t.numpy() != ignore_label
    expected = (pred == t.numpy())[keep].mean()
    assert accuracy(y, t.to(dtype), ignore_label).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize('dtype', DTYPES[:2])
def test_accuracy_when_every_label_is_ignored_is_zero(dtype):
    assert accuracy(torch.rand(4, 3), torch.full((4,), 1, dtype=dtype), ignore_label=1) == 0
