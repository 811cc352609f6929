"""Classifier: the label is taken out by position or keyword; loss and accuracy reported."""
import pytest
import torch
import torch.nn.functional as F

from trainerlib import Classifier, Reporter


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
