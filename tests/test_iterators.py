"""Tests of trainerlib.iterators: epoch bookkeeping, order, fast batching, exact resume."""
import collections
import io
import itertools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from trainerlib import Trainer
from trainerlib.convert import CollatedBatch, concat_examples
from trainerlib.datasets import TupleDataset
from trainerlib.iterators import DataLoaderIterator, SerialIterator
from trainerlib.updaters import StandardUpdater


def roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def indices(batch):
    """The example indices of a batch drawn from ``torch.arange(n)`` or ``list(range(n))``."""
    if isinstance(batch, CollatedBatch):
        return batch.arrays.tolist()
    return list(batch)


def bookkeeping(it):
    return (it.epoch, it.epoch_detail, it.previous_epoch_detail, it.is_new_epoch)


def same(a, b):
    """Structural equality of converted batches (tuples, dicts, tensors)."""
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a.dtype == b.dtype and torch.equal(a, b)


# ---------------------------------------------------------------- SerialIterator bookkeeping

@pytest.mark.parametrize('n, batch, repeat, sizes, new_epoch', [
    (10, 3, True, [3, 3, 3, 3, 3, 3, 3], [0, 0, 0, 1, 0, 0, 1]),
    (10, 3, False, [3, 3, 3, 1], [0, 0, 0, 1]),
    (4, 2, True, [2, 2, 2, 2, 2], [0, 1, 0, 1, 0]),
    (4, 2, False, [2, 2], [0, 1]),
    (3, 5, True, [5, 5, 5], [1, 1, 1]),             # several epochs in one batch
    (3, 5, False, [3], [1]),
    (1, 1, True, [1, 1, 1], [1, 1, 1]),
    (7, 7, False, [7], [1]),
    (5, 2, True, [2, 2, 2, 2, 2, 2], [0, 0, 1, 0, 1, 0]),
])
@pytest.mark.parametrize('shuffle', [False, True])
def test_serial_iterator_bookkeeping(n, batch, repeat, sizes, new_epoch, shuffle):
    it = SerialIterator(list(range(n)), batch, repeat=repeat, shuffle=shuffle, seed=0)
    assert bookkeeping(it) == (0, 0.0, None, False)
    consumed = 0
    for size, is_new in zip(sizes, new_epoch):
        previous = consumed // n + consumed % n / n
        b = next(it)
        consumed += size
        assert len(b) == size
        assert bookkeeping(it) == (consumed // n, consumed // n + consumed % n / n, previous,
                                   bool(is_new))
    if not repeat:
        for _ in range(2):
            with pytest.raises(StopIteration):
                next(it)
        assert it.epoch_detail == 1.0


@pytest.mark.parametrize('n, batch, epochs', [(12, 4, 4), (10, 3, 3), (3, 5, 5), (7, 2, 4)])
@pytest.mark.parametrize('fast', [False, True])
def test_serial_iterator_every_example_once_per_epoch(n, batch, epochs, fast):
    dataset = torch.arange(n) if fast else list(range(n))
    it = SerialIterator(dataset, batch, seed=3)
    stream = []
    while len(stream) < n * epochs:
        b = next(it)
        assert isinstance(b, CollatedBatch) == fast
        stream += indices(b)
    # Chainer's wrap-around: a batch crossing the end of an epoch is completed
    # with the first examples of the next epoch's order.
    orders = [stream[e * n:(e + 1) * n] for e in range(epochs)]
    assert all(sorted(order) == list(range(n)) for order in orders)
    assert len({tuple(order) for order in orders}) > 1       # reshuffled each epoch


@pytest.mark.parametrize('n, batch', [(10, 3), (6, 6), (5, 8)])
def test_serial_iterator_no_shuffle_keeps_order(n, batch):
    it = SerialIterator(list(range(n)), batch, shuffle=False)
    stream = list(itertools.chain.from_iterable(next(it) for _ in range(2 * n)))
    assert stream[:2 * n * batch] == [i % n for i in range(2 * n * batch)]


def test_serial_iterator_repeat_false_is_a_python_iterator():
    batches = list(SerialIterator(list(range(10)), 4, repeat=False, shuffle=False))
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def draw(it, k=6):
    return [indices(next(it)) for _ in range(k)]


def test_serial_iterator_seed_determinism():
    ds = list(range(20))
    assert draw(SerialIterator(ds, 3, seed=5)) == draw(SerialIterator(ds, 3, seed=5))
    assert draw(SerialIterator(ds, 3, seed=5)) != draw(SerialIterator(ds, 3, seed=6))
    assert draw(SerialIterator(ds, 3, shuffle=None, seed=5)) == \
        draw(SerialIterator(ds, 3, shuffle=True, seed=5))


def test_serial_iterator_seed_none_follows_torch_manual_seed():
    ds = list(range(20))
    torch.manual_seed(1)
    a, b = SerialIterator(ds, 3), SerialIterator(ds, 3)
    torch.manual_seed(1)
    a2, b2 = SerialIterator(ds, 3), SerialIterator(ds, 3)
    first, second = draw(a), draw(b)
    assert first == draw(a2) and second == draw(b2)
    assert first != second             # each draws its own seed from the global RNG


# ---------------------------------------------------------------- fast path

class Columns:
    """A dataset that batches itself (``supports_batch``) into a dict of columns."""
    supports_batch = True

    def __init__(self, n):
        self.x = torch.arange(n * 2, dtype=torch.float32).reshape(n, 2)
        self.y = torch.arange(n) % 3

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {'x': self.x[i], 'y': self.y[i]}

    def get_batch(self, idx):
        return {'x': self.x[idx], 'y': self.y[idx]}


FAST_DATASETS = {
    'TensorDataset': lambda n: TensorDataset(torch.randn(n, 3), torch.arange(n)),
    'tensor': lambda n: torch.randn(n, 2, 2),
    'ndarray': lambda n: np.random.RandomState(0).rand(n, 2).astype(np.float32),
    'supports_batch': Columns,
    'TupleDataset': lambda n: TupleDataset(torch.randn(n, 3), np.arange(n)),
}


@pytest.mark.parametrize('name', sorted(FAST_DATASETS))
@pytest.mark.parametrize('n, batch, repeat', [(10, 3, True), (10, 4, False), (4, 6, True)])
def test_fast_path_equals_slow_path(name, n, batch, repeat):
    dataset = FAST_DATASETS[name](n)
    examples = [dataset[i] for i in range(n)]
    fast = SerialIterator(dataset, batch, repeat=repeat, seed=11)
    slow = SerialIterator(examples, batch, repeat=repeat, seed=11)
    for _ in range(5 if repeat else 3):
        f, s = next(fast), next(slow)
        assert isinstance(f, CollatedBatch) and isinstance(s, list)
        assert len(f) == len(s)
        assert same(concat_examples(f), concat_examples(s))
        for i in (0, len(s) - 1):                              # rows as examples
            assert same(concat_examples([f[i]]), concat_examples([s[i]]))
        assert bookkeeping(fast) == bookkeeping(slow)


# ---------------------------------------------------------------- SerialIterator resume

@pytest.mark.parametrize('n, batch, repeat, shuffle', [
    (10, 3, True, True), (10, 3, False, True), (8, 4, True, True), (3, 5, True, True),
    (10, 3, True, False),
])
@pytest.mark.parametrize('fast', [False, True])
def test_serial_iterator_resume_at_every_position(n, batch, repeat, shuffle, fast):
    dataset = torch.arange(n) if fast else list(range(n))
    steps = 3 * n // batch + 2

    def batches(it, k):
        out = []
        for _ in range(k):
            try:
                out.append((indices(next(it)), bookkeeping(it)))
            except StopIteration:
                out.append('stop')
        return out

    expected = batches(SerialIterator(dataset, batch, repeat, shuffle, seed=1), steps)
    for k in range(steps):
        a = SerialIterator(dataset, batch, repeat, shuffle, seed=1)
        batches(a, k)
        b = SerialIterator(dataset, batch, repeat, shuffle, seed=99)
        b.load_state_dict(roundtrip(a.state_dict()))
        assert bookkeeping(b) == bookkeeping(a)
        assert batches(b, steps - k) == expected[k:], f'resumed after {k} batches'


@pytest.mark.parametrize('make, error, match', [
    (lambda: SerialIterator(list(range(5)), 0), ValueError, 'batch_size'),
    (lambda: SerialIterator(list(range(5)), -2), ValueError, 'batch_size'),
    (lambda: SerialIterator(list(range(5)), 2.5), ValueError, 'batch_size'),
    (lambda: SerialIterator([], 2), ValueError, 'empty'),
    (lambda: SerialIterator(torch.zeros(0, 3), 2), ValueError, 'empty'),
    (lambda: SerialIterator(list(range(6)), 2).load_state_dict(
        SerialIterator(list(range(5)), 2).state_dict()), ValueError, '5 examples.*6'),
    (lambda: DataLoaderIterator(DataLoader(TensorDataset(torch.zeros(0, 2)), batch_size=2)),
     ValueError, 'no batch'),
    (lambda: DataLoaderIterator(DataLoader(TensorDataset(torch.zeros(3, 2)), batch_size=4,
                                           drop_last=True)), ValueError, 'drop_last'),
])
def test_iterator_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


# ---------------------------------------------------------------- DataLoaderIterator

def loader(seed=0, shuffle=True, n=10, batch=4, generator=True):
    gen = torch.Generator().manual_seed(seed) if generator else None
    return DataLoader(TensorDataset(torch.arange(n) * 10, torch.arange(n)), batch_size=batch,
                      shuffle=shuffle, generator=gen, drop_last=False, num_workers=0)


def dl_indices(batch):
    assert isinstance(batch, CollatedBatch)
    x, idx = concat_examples(batch)
    assert torch.equal(x, idx * 10)
    return idx.tolist()


def test_dataloader_iterator_bookkeeping():
    it = DataLoaderIterator(loader())
    assert bookkeeping(it) == (0, 0.0, None, False)
    sizes, stream = [], []
    for step in range(1, 10):
        previous = it.epoch_detail
        b = next(it)
        sizes.append(len(b))
        stream += dl_indices(b)
        assert bookkeeping(it) == (step // 3, step // 3 + step % 3 / 3, previous, step % 3 == 0)
    assert sizes == [4, 4, 2] * 3
    orders = [stream[:10], stream[10:20], stream[20:]]
    assert all(sorted(o) == list(range(10)) for o in orders) and orders[0] != orders[1]


def test_dataloader_iterator_repeat_false():
    it = DataLoaderIterator(loader(shuffle=False), repeat=False)
    assert [dl_indices(b) for b in it] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert it.epoch == 1 and it.is_new_epoch
    with pytest.raises(StopIteration):
        next(it)


_X, _T = torch.arange(6.).reshape(3, 2), torch.tensor([0, 1, 2])
_Pair = collections.namedtuple('_Pair', 'x t')


@pytest.mark.parametrize('batch, expected, tensors', [
    ([_X, _T], (_X, _T), True),              # default_collate's list of columns: a tuple
    ((_X, _T), (_X, _T), True),
    (_Pair(_X, _T), _Pair(_X, _T), True),    # a namedtuple stays one
    ((_X, ['a', 'b', 'c']), (_X, ['a', 'b', 'c']), False),
    ({'x': _X, 't': _T}, {'x': _X, 't': _T}, False),
    (_X, _X, False),
])
def test_dataloader_iterator_batches_are_taken_as_columns(batch, expected, tensors):
    wrapped = next(DataLoaderIterator([batch]))
    assert isinstance(wrapped, CollatedBatch) and len(wrapped) == 3
    assert wrapped.tensors is tensors
    got = concat_examples(wrapped)
    assert type(got) is type(expected)
    if isinstance(got, torch.Tensor):
        assert got is expected
    else:   # the columns themselves (a list of strings is rebuilt, equal)
        keys = got.keys() if isinstance(got, dict) else range(len(got))
        assert all(got[k] is expected[k] or got[k] == expected[k] for k in keys)


@pytest.mark.parametrize('batch', [[], (), 7, 'text'])
def test_dataloader_iterator_passes_other_batches_through(batch):
    assert next(DataLoaderIterator([batch])) is batch


@pytest.mark.parametrize('shuffle', [True, False])
def test_dataloader_iterator_resume_at_every_position(shuffle):
    def run(it, k):
        return [(dl_indices(next(it)), bookkeeping(it)) for _ in range(k)]

    expected = run(DataLoaderIterator(loader(0, shuffle)), 9)
    for k in range(8):
        a = DataLoaderIterator(loader(0, shuffle))
        run(a, k)
        b = DataLoaderIterator(loader(123, shuffle))   # another seed: the state must win
        b.load_state_dict(roundtrip(a.state_dict()))
        assert run(b, 9 - k) == expected[k:], f'resumed after {k} batches'


def test_dataloader_iterator_resume_without_generator_warns():
    a = DataLoaderIterator(loader(generator=False))
    next(a)
    b = DataLoaderIterator(loader(generator=False))
    with pytest.warns(UserWarning, match='seeded generator'):
        b.load_state_dict(roundtrip(a.state_dict()))
    assert bookkeeping(b) == bookkeeping(a)


# ---------------------------------------------------------------- with the real Trainer

class Recorder(torch.nn.Module):
    """A model whose loss records the example indices of each batch."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.seen = []

    def forward(self, x, idx):
        self.seen.append(idx.tolist())
        return (self.w * x.float()).mean()


@pytest.mark.parametrize('make_iterator, iterations', [
    (lambda: SerialIterator(TensorDataset(torch.arange(10) * 10, torch.arange(10)), 3, seed=0),
     10),
    (lambda: SerialIterator(list(zip(torch.arange(10) * 10, torch.arange(10))), 3, seed=0), 10),
    (lambda: DataLoaderIterator(loader()), 9),
])
def test_trainer_runs_epochs_of_an_iterator(tmp_path, make_iterator, iterations):
    model = Recorder()
    iterator = make_iterator()
    updater = StandardUpdater(iterator, torch.optim.SGD(model.parameters(), lr=0.0), model)
    Trainer(updater, (3, 'epoch'), out=str(tmp_path)).run()
    assert updater.iteration == iterations and updater.epoch == 3
    assert updater.epoch_detail == 3.0 and updater.is_new_epoch
    stream = list(itertools.chain.from_iterable(model.seen))
    assert len(stream) == 30
    assert all(sorted(stream[e * 10:(e + 1) * 10]) == list(range(10)) for e in range(3))
