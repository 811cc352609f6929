"""Evaluator against Chainer 7.8's own ``test_evaluator.py`` (assertions kept), plus the
deliberate differences: sample-weighted means and a repeating iterator is an error."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import extensions as E
from extensions.evaluator import batch_size
from trainerlib import Reporter, report
from trainerlib.iterators import DataLoaderIterator, Iterator, SerialIterator


class DummyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.args = []

    def forward(self, x):
        self.args.append(x)
        report({'loss': x.sum()}, self)


class DummyModelTwoArgs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.args = []

    def forward(self, x, y):
        self.args.append((x, y))
        report({'loss': x.sum() + y.sum()}, self)


class DummyIterator(Iterator):
    def __init__(self, return_values):
        self.return_values = return_values
        self.iterator = iter(return_values)
        self.finalized = False

    def reset(self):
        self.iterator = iter(self.return_values)

    def __next__(self):
        return next(self.iterator)

    def finalize(self):
        self.finalized = True


class DummyConverter:
    def __init__(self, return_values):
        self.args = []
        self.iterator = iter(return_values)

    def __call__(self, batch, device):
        self.args.append({'batch': batch, 'device': device})
        return next(self.iterator)


def uniform(*shape):
    return np.random.default_rng(len(shape)).uniform(-1, 1, shape).astype('f')


@pytest.fixture
def setup():
    data = [uniform(3, 4) for _ in range(2)]
    batches = [uniform(2, 3, 4) + i for i in range(2)]
    iterator, converter, target = DummyIterator(data), DummyConverter(batches), DummyModel()
    evaluator = E.Evaluator(iterator, target, converter=converter)
    return data, batches, iterator, converter, target, evaluator, \
        np.mean([np.sum(x) for x in batches])


def test_evaluate(setup):
    data, batches, iterator, converter, target, evaluator, expect_mean = setup
    reporter = Reporter()
    reporter.add_observer('target', target)
    with reporter:
        mean = evaluator.evaluate()
    assert len(reporter.observation) == 0      # collected by the evaluator, not reported
    assert len(converter.args) == len(data)
    for arg, x in zip(converter.args, data):
        np.testing.assert_array_equal(arg['batch'], x)
        assert arg['device'] is None
    assert len(target.args) == len(batches)
    for arg, x in zip(target.args, batches):
        np.testing.assert_array_equal(arg, x)
    assert mean['target/loss'] == pytest.approx(expect_mean, abs=1e-4)
    evaluator.finalize()
    assert iterator.finalized


@pytest.mark.parametrize('name, key', [(None, 'main/loss'), ('eval', 'eval/main/loss')])
def test_call_prefix_is_the_name(setup, name, key):
    *_, evaluator, expect_mean = setup
    if name is not None:
        evaluator.name = name
    mean = evaluator()
    assert set(mean) == {key}
    assert mean[key] == pytest.approx(expect_mean, abs=1e-4)


def test_current_report(setup):
    *_, evaluator, _ = setup
    reporter = Reporter()
    with reporter:
        mean = evaluator()
    assert reporter.observation == mean


@pytest.mark.parametrize('kind', ['tuple', 'dict'])
def test_tuple_and_dict_data(kind):
    data = [uniform(3, 4) for _ in range(2)] if kind == 'tuple' else range(2)  # plain ints
    pairs = [(uniform(2, 3, 4), uniform(2, 3, 4) - i) for i in range(2)]
    batches = pairs if kind == 'tuple' else [{'x': x, 'y': y} for x, y in pairs]
    converter, target = DummyConverter(batches), DummyModelTwoArgs()
    evaluator = E.Evaluator(DummyIterator(data), target, converter=converter, device='cpu')
    reporter = Reporter()
    reporter.add_observer('target', target)
    with reporter:
        mean = evaluator.evaluate()
    assert [a['device'] for a in converter.args] == ['cpu', 'cpu']
    for (x, y), (ex, ey) in zip(target.args, pairs):
        np.testing.assert_array_equal(x, ex)
        np.testing.assert_array_equal(y, ey)
    expect = np.mean([x.sum() + y.sum() for x, y in pairs])
    assert mean['target/loss'] == pytest.approx(expect, abs=1e-4)


def test_eval_func_without_targets():
    batches = [uniform(2, 3, 4) for _ in range(2)]
    target = DummyModel()
    evaluator = E.Evaluator(DummyIterator([0, 1]), {}, converter=DummyConverter(batches),
                            eval_func=target)
    reporter = Reporter()
    reporter.add_observer('target', target)
    with reporter:
        evaluator.evaluate()
    assert len(target.args) == 2
    for arg, x in zip(target.args, batches):
        np.testing.assert_array_equal(arg, x)


def test_progress_bar(capsys):
    data = [uniform(3, 4) for _ in range(2)]
    target = DummyModel()
    evaluator = E.Evaluator(SerialIterator(data, 1, repeat=False, shuffle=False), {},
                            eval_func=target, progress_bar=True)
    reporter = Reporter()
    reporter.add_observer('target', target)
    with reporter:
        mean = evaluator.evaluate()
    assert len(target.args) == 2
    assert float(mean['target/loss']) == pytest.approx(np.mean([x.sum() for x in data]),
                                                       abs=1e-4)
    assert 'validation' in capsys.readouterr().err


# -- deliberate differences ------------------------------------------------------------

@pytest.mark.parametrize('make', [
    lambda repeat: SerialIterator(np.ones((4, 6)), 2, repeat=repeat),
    lambda repeat: DataLoaderIterator(DataLoader(TensorDataset(torch.ones(4, 6)), 2),
                                      repeat=repeat),
])
@pytest.mark.parametrize('repeat', [True, False])
def test_a_repeating_iterator_is_an_error(make, repeat):
    """Chainer warns (and the evaluation never ends); here it is a ValueError."""
    if repeat:
        with pytest.raises(ValueError, match="iterator 'main' repeats forever.*repeat=False"):
            E.Evaluator(make(repeat), {}, eval_func=lambda *a: None)
    else:
        E.Evaluator(make(repeat), {}, eval_func=lambda *a: None)


def test_means_are_sample_weighted_not_means_of_batch_means():
    batches = [np.full((3, 1), 1.0), np.full((1, 1), 5.0)]    # a short last batch
    target = DummyModel()
    mean = E.Evaluator(DummyIterator(batches), target,
                       eval_func=lambda x: report({'v': x.mean()}, target))()
    assert mean['main/v'] == pytest.approx((3 * 1.0 + 1 * 5.0) / 4)   # 2.0
    assert mean['main/v'] != pytest.approx((1.0 + 5.0) / 2)            # Chainer's 3.0


# -- batches whose size cannot be measured ---------------------------------------------

class NoLen:
    pass


@pytest.mark.parametrize('in_arrays, batch, expected', [
    ((torch.zeros(5, 2), torch.zeros(5)), [0] * 5, 5),      # dim 0 of the first tensor
    (np.zeros((4, 3)), None, 4),                             # a NumPy array
    ({'x': np.zeros((6, 1)), 'y': 1}, {'x': 0}, 6),          # first value of a dict
    ([torch.zeros(2, 7)], None, 2),
    (NoLen(), np.zeros((3, 2)), 3),                          # the raw batch's dim 0
    (NoLen(), [NoLen()] * 4, 4),                             # a list of examples
    (7, 7, 1),                                               # plain ints: weight 1
    ({'a': 1.0}, {'a': 1.0, 'b': 2.0}, 1),                   # a dict of scalars
    (NoLen(), NoLen(), 1),                                   # no len, no shape
    (torch.zeros(()), torch.zeros(()), 1),                   # 0-d
    ((), (), 0),                                             # an empty tuple batch
])
def test_batch_size(in_arrays, batch, expected):
    assert batch_size(in_arrays, batch) == expected


@pytest.mark.parametrize('batches', [[3, 5], [{'n': 3}, {'n': 5}], [NoLen(), NoLen()]])
def test_unmeasurable_batches_weigh_one_each(batches):
    values = iter([3.0, 5.0])
    mean = E.Evaluator(DummyIterator(batches), {}, converter=lambda b, d: b,
                       eval_func=lambda *a, **k: report({'v': next(values)}))()
    assert mean == {'v': pytest.approx(4.0)}    # the mean of batch means, as Chainer


def test_finalize_skips_iterators_without_finalize():
    own = DummyIterator([1])
    evaluator = E.Evaluator({'main': DataLoader(TensorDataset(torch.ones(2))), 'own': own},
                            {}, eval_func=lambda *a: None)
    evaluator.finalize()
    assert own.finalized


def test_the_trainer_finalizes_the_evaluators_iterators(tmp_path):
    from trainerlib import Trainer
    from trainerlib.updaters import StandardUpdater
    model = torch.nn.Linear(2, 1)
    data = TensorDataset(torch.randn(4, 2))
    updater = StandardUpdater(SerialIterator(data, 2, shuffle=False),
                              torch.optim.SGD(model.parameters(), lr=0.1), model,
                              loss_func=lambda x: model(x).pow(2).mean())
    own = DummyIterator([np.zeros((2, 1))])
    trainer = Trainer(updater, (1, 'epoch'), out=str(tmp_path))
    trainer.extend(E.Evaluator(own, {}, eval_func=lambda x: report({'v': x.sum()})))
    trainer.run()
    assert own.finalized
    assert 'validation/v' not in trainer.observation and 'v' in trainer.observation
