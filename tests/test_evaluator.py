"""Tests of extensions.Evaluator: weighted means, eval mode, no grad, naming, Trainer use."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import extensions as E
from trainerlib import Classifier, Trainer, report
from trainerlib.iterators import DataLoaderIterator, SerialIterator
from trainerlib.updaters import StandardUpdater


def make_data(n=10):
    torch.manual_seed(0)
    x = torch.randn(n, 4)
    x[8:] += 5.0  # the last, smaller batch differs: weighted and unweighted means differ
    return x, (x[:, 0] > 0).long()


def make_model():
    torch.manual_seed(1)
    return Classifier(torch.nn.Linear(4, 2))


def val_iter(x, t, batch_size=4, shuffle=False, seed=None):
    return SerialIterator(TensorDataset(x, t), batch_size, repeat=False, shuffle=shuffle,
                          seed=seed)


class Spy(torch.nn.Module):
    """Reports the batch mean of x; records grad mode and its own mode at each call."""

    def __init__(self):
        super().__init__()
        self.child = torch.nn.Linear(1, 1)
        self.calls = []

    def forward(self, x, t):
        self.calls.append((torch.is_grad_enabled(), self.training, self.child.training))
        report({'mean': x.mean()}, self)
        return x.mean()


def test_means_are_weighted_by_batch_size():
    x, t = make_data()
    model = make_model()
    result = E.Evaluator(val_iter(x, t), model)()
    with torch.no_grad():
        y = model.predictor(x)
        loss, acc = F.cross_entropy(y, t), (y.argmax(1) == t).double().mean()
    assert set(result) == {'main/loss', 'main/accuracy'}   # called alone: no prefix
    assert result['main/loss'] == pytest.approx(loss.item(), rel=1e-6)
    assert result['main/accuracy'] == pytest.approx(acc.item(), rel=1e-6)
    per_batch = [F.cross_entropy(model.predictor(x[i:i + 4]), t[i:i + 4]).item()
                 for i in (0, 4, 8)]
    assert abs(sum(per_batch) / 3 - loss.item()) > 1e-3   # the test can tell them apart


def test_weighting_with_collated_batches_from_a_dataloader():
    x, t = make_data()
    loader = DataLoader(TensorDataset(x, t), batch_size=4)  # yields [x, t] lists
    spy = Spy()
    result = E.Evaluator(loader, spy, converter=lambda batch, device: tuple(batch))()
    assert result['main/mean'] == pytest.approx(x.mean().item(), rel=1e-6)


@pytest.mark.parametrize('train', [True, False])
def test_eval_mode_and_no_grad_inside_then_modes_restored(train):
    x, t = make_data()
    spy = Spy().train(train)
    spy.child.train(not train)  # mixed modes come back exactly
    E.Evaluator(val_iter(x, t), spy)()
    assert spy.calls == [(False, False, False)] * 3
    assert spy.training is train and spy.child.training is (not train)
    assert torch.is_grad_enabled()


def test_modes_restored_on_error():
    x, t = make_data()
    model = make_model().train()

    def failing(*args):
        assert not model.training
        raise RuntimeError('boom')

    with pytest.raises(RuntimeError, match='boom'):
        E.Evaluator(val_iter(x, t), model, eval_func=failing)()
    assert all(m.training for m in model.modules())


def test_repeating_iterator_is_rejected():
    x, t = make_data()
    with pytest.raises(ValueError, match='repeat=False'):
        E.Evaluator(SerialIterator(TensorDataset(x, t), 4), make_model())


@pytest.mark.parametrize('kwargs, extend_name, prefix', [
    ({}, None, 'validation'),
    ({'name': 'test'}, None, 'test'),
    ({}, 'val2', 'val2'),
])
def test_report_prefix(tmp_path, kwargs, extend_name, prefix):
    x, t = make_data()
    model = make_model()
    evaluator = E.Evaluator({'main': val_iter(x, t)}, {'main': model}, **kwargs)
    trainer = Trainer(StandardUpdater(SerialIterator(TensorDataset(x, t), 5, seed=0),
                                      torch.optim.SGD(model.parameters(), lr=0.1), model),
                      (1, 'epoch'), out=str(tmp_path))
    trainer.extend(evaluator, name=extend_name)
    trainer.run()
    assert f'{prefix}/main/loss' in trainer.observation
    assert set(evaluator()) == {f'{prefix}/main/loss', f'{prefix}/main/accuracy'}


@pytest.mark.parametrize('kwargs, name, prefix', [
    ({}, None, ''),                           # Chainer: no name, no prefix
    ({}, 'eval', 'eval/'),                    # the name set by extend, or by hand
    ({'name': 'test'}, None, 'test/'),        # an explicit name= is the prefix too
])
def test_prefix_of_a_call_outside_a_trainer(kwargs, name, prefix):
    x, t = make_data()
    evaluator = E.Evaluator(val_iter(x, t), make_model(), **kwargs)
    if name is not None:
        evaluator.name = name
    assert set(evaluator()) == {prefix + 'main/loss', prefix + 'main/accuracy'}


def test_results_reach_the_log_report(tmp_path):
    x, t = make_data()
    model = make_model()
    evaluator = E.Evaluator(val_iter(x, t), model)
    trainer = Trainer(StandardUpdater(SerialIterator(TensorDataset(x, t), 5, seed=0),
                                      torch.optim.SGD(model.parameters(), lr=0.1), model),
                      (3, 'epoch'), out=str(tmp_path))
    trainer.extend(E.LogReport())
    trainer.extend(evaluator)
    trainer.run()
    log = trainer.get_extension('LogReport').log
    assert len(log) == 3
    assert all('validation/main/loss' in e and 'validation/main/accuracy' in e for e in log)
    final = evaluator()  # the model did not change since the last evaluation
    assert log[-1]['validation/main/loss'] == pytest.approx(final['validation/main/loss'])
    assert model.training


def test_each_evaluation_resets_the_iterator_and_calls_the_hook():
    x, t = make_data()
    hooked = []
    evaluator = E.Evaluator(val_iter(x, t), make_model(), eval_hook=hooked.append)
    assert evaluator() == evaluator()
    assert hooked == [evaluator, evaluator]


def test_progress_bar_option(capsys):
    x, t = make_data()
    plain = E.Evaluator(val_iter(x, t), make_model())()
    assert E.Evaluator(val_iter(x, t), make_model(), progress_bar=True)() == plain
    assert 'validation' in capsys.readouterr().err


def test_state_round_trip_keeps_the_shuffled_order_of_a_dataloader():
    x, t = make_data()

    def make(seed):
        loader = DataLoader(TensorDataset(x, t), batch_size=4, shuffle=True,
                            generator=torch.Generator().manual_seed(seed))
        seen = []
        evaluator = E.Evaluator(DataLoaderIterator(loader, repeat=False), make_model(),
                                eval_func=lambda x, t: seen.append(x[:, 0].clone()))
        return evaluator, seen

    first, seen_first = make(3)
    first()
    second, seen_second = make(4)
    second.load_state_dict(first.state_dict())
    seen_first.clear()
    first()
    second()
    assert len(seen_first) == 3
    assert all(torch.equal(a, b) for a, b in zip(seen_first, seen_second))
