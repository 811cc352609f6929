"""Tests of trainerlib.convert.concat_examples: structures, dtypes, padding, devices."""
import functools

import numpy as np
import pytest
import torch

from trainerlib import Trainer
from trainerlib.convert import CollatedBatch, concat_examples, to_device
from trainerlib.iterators import SerialIterator
from trainerlib.updaters import StandardUpdater

T = torch.tensor


def same(a, b):
    """Exact structural equality, dtypes included."""
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    return a == b


@pytest.mark.parametrize('batch, expected', [
    # single arrays
    ([T([1., 2.]), T([3., 4.])], T([[1., 2.], [3., 4.]])),
    ([T(1), T(2), T(3)], T([1, 2, 3])),
    ([np.array([1, 2], np.int32), np.array([3, 4], np.int32)],
     T([[1, 2], [3, 4]], dtype=torch.int32)),
    ([np.array(0.5), np.array(1.5)], T([0.5, 1.5], dtype=torch.float64)),
    ([np.array([True]), np.array([False])], T([[True], [False]])),
    ([np.float32(1.5), np.float32(2.5)], T([1.5, 2.5])),
    ([1, 2, 3], T([1, 2, 3])),
    ([0.5, 1.5], T([0.5, 1.5], dtype=torch.get_default_dtype())),
    ([True, False], T([True, False])),
    # tuples
    ([(T([1., 2.]), 0), (T([3., 4.]), 1)], (T([[1., 2.], [3., 4.]]), T([0, 1]))),
    ([(np.zeros(2, np.float32), np.int64(3), 0.25)] * 2,
     (torch.zeros(2, 2), T([3, 3]), T([0.25, 0.25]))),
    ([(T(1),), (T(2),)], (T([1, 2]),)),
    # dicts
    ([{'x': T([1.]), 'y': 2}, {'x': T([3.]), 'y': 4}], {'x': T([[1.], [3.]]), 'y': T([2, 4])}),
    ([{'img': np.ones((1, 2), np.uint8)}] * 3, {'img': torch.ones(3, 1, 2, dtype=torch.uint8)}),
    # values that are not arrays stay a list
    ([(T(1), 'a'), (T(2), 'b')], (T([1, 2]), ['a', 'b'])),
    ([{'name': None, 'v': 1.0}, {'name': 'x', 'v': 2.0}], {'name': [None, 'x'], 'v': T([1., 2.])}),
    ([np.array(['a', 'b']), np.array(['c', 'd'])], [np.array(['a', 'b']), np.array(['c', 'd'])]),
])
def test_concat_examples(batch, expected):
    got = concat_examples(batch)
    if isinstance(expected, list) and isinstance(expected[0], np.ndarray):
        assert isinstance(got, list) and all(map(np.array_equal, got, expected))
    else:
        assert same(got, expected), got


def test_concat_examples_accepts_any_sequence_and_does_not_copy_needlessly():
    rows = (T([1, 2]), T([3, 4]))                 # a tuple of examples (not of columns)
    assert same(concat_examples(list(rows)), T([[1, 2], [3, 4]]))
    x = torch.zeros(3)
    assert concat_examples(CollatedBatch(x, 3)) is x
    t = torch.ones(3)
    got = concat_examples(CollatedBatch((x, t), 3))
    assert type(got) is tuple and got[0] is x and got[1] is t


@pytest.mark.parametrize('batch, padding, expected', [
    ([T([1, 2, 3]), T([4])], 0, T([[1, 2, 3], [4, 0, 0]])),
    ([T([[1, 2, 3], [4, 5, 6]]), T([[7, 8, 9, 10]])], -1,
     T([[[1, 2, 3, -1], [4, 5, 6, -1]], [[7, 8, 9, 10], [-1, -1, -1, -1]]])),
    ([np.array([1., 2.], np.float32), np.array([3.], np.float32)], 9.5,
     T([[1., 2.], [3., 9.5]])),
    ([T([1., 2.]), T([3., 4.])], 0, T([[1., 2.], [3., 4.]])),          # nothing to pad
    ([(T([1, 2]), T([5])), (T([3]), T([6, 7, 8]))], (0, -1),
     (T([[1, 2], [3, 0]]), T([[5, -1, -1], [6, 7, 8]]))),
    ([(T([1, 2]), T([5])), (T([3]), T([6, 7]))], 7, (T([[1, 2], [3, 7]]), T([[5, 7], [6, 7]]))),
    ([(T([1, 2]), 4), (T([3]), 5)], 0, (T([[1, 2], [3, 0]]), T([4, 5]))),   # numbers unpadded
    ([{'x': T([1, 2]), 'y': T([1])}, {'x': T([3]), 'y': T([1, 2])}], {'x': 0, 'y': -1},
     {'x': T([[1, 2], [3, 0]]), 'y': T([[1, -1], [1, 2]])}),
    ([{'x': T([1, 2]), 'y': T([1])}, {'x': T([3]), 'y': T([1, 2])}], 0,
     {'x': T([[1, 2], [3, 0]]), 'y': T([[1, 0], [1, 2]])}),
])
def test_concat_examples_padding(batch, padding, expected):
    assert same(concat_examples(batch, padding=padding), expected)


def test_concat_examples_without_padding_needs_equal_shapes():
    with pytest.raises(RuntimeError):
        concat_examples([T([1, 2]), T([3])])


@pytest.mark.parametrize('arrays, n, expected', [
    ((T([[1.], [2.]]), T([0, 1])), 2, (T([[1.], [2.]]), T([0, 1]))),
    ({'x': T([1, 2, 3])}, 3, {'x': T([1, 2, 3])}),
    (np.arange(4, dtype=np.int16), 4, T([0, 1, 2, 3], dtype=torch.int16)),
    ((np.zeros((2, 1), np.float32), T([5, 6])), 2, (torch.zeros(2, 1), T([5, 6]))),
])
def test_collated_batch_passthrough(arrays, n, expected):
    batch = CollatedBatch(arrays, n)
    assert len(batch) == n
    assert same(concat_examples(batch), expected)
    assert same(concat_examples(batch, padding=0), expected)        # never re-stacked
    assert same(concat_examples(list(batch)), expected)             # rows behave as examples


@pytest.mark.parametrize('device', [None, 'cpu'])
def test_collated_batch_of_tensors_is_handed_through(device):
    arrays = (T([[1.], [2.]]), T([0, 1]))
    batch = CollatedBatch(arrays, 2, tensors=True)
    out = concat_examples(batch, device)
    assert (out is arrays) if device is None else same(out, arrays)
    assert same(concat_examples(list(batch), device), arrays)


@pytest.mark.parametrize('device', [None, -1, 'cpu', torch.device('cpu')])
def test_concat_examples_devices(device):
    batch = [(T([1., 2.]), np.int64(1)), (T([3., 4.]), np.int64(0))]
    x, t = concat_examples(batch, device)
    assert x.device.type == 'cpu' and t.device.type == 'cpu'
    assert same((x, t), (T([[1., 2.], [3., 4.]]), T([1, 0])))
    y = torch.ones(2)
    assert to_device(y, device) is y                                  # no copy on CPU
    assert same(to_device({'a': [np.ones(1)], 'b': 'keep'}, device),
                {'a': [torch.ones(1, dtype=torch.float64)], 'b': 'keep'})


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('device', [0, 'cuda', 'cuda:0', torch.device('cuda', 0)])
def test_concat_examples_cuda(device):
    x, t = concat_examples([(T([1., 2.]), 1), (T([3., 4.]), 0)], device)
    assert x.device.type == 'cuda' and t.device.type == 'cuda'
    assert x.cpu().tolist() == [[1., 2.], [3., 4.]] and t.cpu().tolist() == [1, 0]


@pytest.mark.parametrize('batch', [[], ()])
def test_concat_examples_empty_batch(batch):
    with pytest.raises(ValueError, match='empty'):
        concat_examples(batch)


# ---------------------------------------------------------------- with the real Trainer

class BagOfTokens(torch.nn.Module):
    """Mean embedding of padded token sequences (0 is padding), scored against a label."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(6, 2, padding_idx=0)
        self.out = torch.nn.Linear(2, 2)
        self.shapes = []

    def forward(self, tokens, label):
        self.shapes.append(tuple(tokens.shape))
        assert tokens.dtype == torch.int64 and label.dtype == torch.int64
        h = self.emb(tokens).sum(1) / (tokens != 0).sum(1, keepdim=True)
        return torch.nn.functional.cross_entropy(self.out(h), label)


def test_trainer_with_dict_examples_and_padding(tmp_path):
    torch.manual_seed(0)
    lengths = [1, 4, 2, 3, 2, 1, 4]
    dataset = [{'tokens': torch.randint(1, 6, (n,)), 'label': n % 2} for n in lengths]
    model = BagOfTokens()
    before = model.out.weight.detach().clone()
    updater = StandardUpdater(SerialIterator(dataset, 3, shuffle=False),
                              torch.optim.SGD(model.parameters(), lr=0.5), model,
                              converter=functools.partial(concat_examples, padding=0),
                              device='cpu')
    Trainer(updater, (2, 'epoch'), out=str(tmp_path)).run()
    # batches of 3 in order, wrapping around: widths are the longest sequence of each batch
    assert model.shapes == [(3, 4), (3, 3), (3, 4), (3, 3), (3, 4)]
    assert updater.iteration == 5 and updater.epoch_detail == 2 + 1 / 7
    assert not torch.equal(model.out.weight, before)
