"""Data under data parallelism: one global order sharded over ranks, set_epoch, scatter_dataset.

Most checks build every rank's iterator in this process with a fake communicator (the
iterator's only collective is at construction); one test runs 2 real gloo ranks.
"""
import collections
import io
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, TensorDataset

from dist_helpers import run_ranks
from trainerlib.convert import CollatedBatch
from trainerlib.distributed import scatter_dataset
from trainerlib.distributed.sharding import (check_resume, cut_ranges, equal_length_bounds,
                                             shard_bounds)
from trainerlib.iterators import DataLoaderIterator, SerialIterator


class FakeComm:
    """Rank ``rank`` of ``size``: the collectives see every rank with this rank's values."""

    def __init__(self, rank, size, peers=None):
        self.rank, self.size = rank, size
        self.counts = collections.Counter()
        self._peers = peers   # what allgather_obj returns for the other ranks (None: mine)

    def allgather_obj(self, obj):
        self.counts['allgather_obj'] += 1
        if self._peers is None:
            return [obj] * self.size
        return [obj if r == self.rank else self._peers(obj, r) for r in range(self.size)]

    def bcast_obj(self, obj, root=0):
        self.counts['bcast_obj'] += 1
        return obj


def roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def indices(batch):
    """Example indices of a batch of ``torch.arange(n)``, ``list(range(n))`` or a TensorDataset."""
    if isinstance(batch, CollatedBatch):
        arrays = batch.arrays
        return (arrays[1] if isinstance(arrays, tuple) else arrays).tolist()
    return list(batch)


def bookkeeping(it):
    return (it.epoch, it.epoch_detail, it.previous_epoch_detail, it.is_new_epoch)


def make_dataset(kind, n):
    if kind == 'tensor':
        return torch.arange(n)
    if kind == 'pair':
        return TensorDataset(torch.arange(n) * 10, torch.arange(n))
    return list(range(n))


def rank_iterators(dataset, b, size, seed=3, **kwargs):
    return [SerialIterator(dataset, b, seed=seed, comm=FakeComm(r, size), **kwargs)
            for r in range(size)]


def states_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


# ---------------------------------------------------------------- sharding arithmetic

@pytest.mark.parametrize('n', [0, 1, 2, 5, 7, 8, 13])
@pytest.mark.parametrize('size', [1, 2, 3, 4])
def test_shard_bounds_is_array_split(n, size):
    parts = np.array_split(np.arange(n), size)
    assert [list(range(*shard_bounds(n, r, size))) for r in range(size)] == \
        [p.tolist() for p in parts]


@pytest.mark.parametrize('n, size, expected', [
    (7, 2, [(0, 4), (3, 7)]),             # one example on both ranks
    (10, 3, [(0, 4), (3, 7), (6, 10)]),
    (6, 3, [(0, 2), (2, 4), (4, 6)]),     # a multiple: disjoint
    (1, 2, [(0, 1), (0, 1)]),
    (5, 1, [(0, 5)]),
])
def test_equal_length_bounds(n, size, expected):
    assert [equal_length_bounds(n, r, size) for r in range(size)] == expected


@pytest.mark.parametrize('ranges, lo, hi, expected', [
    ([('a', 3, 10)], 2, 5, [('a', 5, 8)]),
    ([('a', 8, 10), ('b', 0, 6)], 0, 4, [('a', 8, 10), ('b', 0, 2)]),
    ([('a', 8, 10), ('b', 0, 6)], 4, 8, [('b', 2, 6)]),
    ([('a', 8, 10), ('b', 0, 6)], 1, 3, [('a', 9, 10), ('b', 0, 1)]),
    ([('a', 0, 3), ('b', 0, 3), ('c', 0, 3)], 2, 7, [('a', 2, 3), ('b', 0, 3), ('c', 0, 1)]),
    ([('a', 0, 3)], 3, 3, []),
])
def test_cut_ranges(ranges, lo, hi, expected):
    assert cut_ranges(ranges, lo, hi) == expected


@pytest.mark.parametrize('saved_global, saved_world, b, world, keep, result, error', [
    (8, 2, 4, 2, True, False, None),            # same run
    (8, 2, 8, 1, True, True, None),             # W=1, batch 2b: same global batch
    (8, 2, 2, 4, True, True, None),
    (6, 2, 2, 4, True, None, 'global batch is 6 .*4 ranks cannot share.*divides 6'),
    (6, 2, 4, 2, True, None, 'global batch is 6 .*is 8 .*use batch_size=3'),
    (6, 2, 2, 4, False, True, None),            # an evaluation iterator may regroup
    (6, None, 3, 2, True, True, None),
])
def test_check_resume(saved_global, saved_world, b, world, keep, result, error):
    if error:
        with pytest.raises(ValueError, match=error):
            check_resume(saved_global, saved_world, b, world, keep)
    else:
        assert check_resume(saved_global, saved_world, b, world, keep) is result


# ---------------------------------------------------------------- (a) one global order

@pytest.mark.parametrize('n, b, size', [(10, 2, 2), (7, 3, 2), (5, 4, 2), (11, 2, 3),
                                        (3, 2, 2), (9, 1, 4)])
@pytest.mark.parametrize('shuffle', [True, False])
@pytest.mark.parametrize('kind', ['tensor', 'pair', 'list'])
def test_ranks_concatenate_to_the_single_process_global_batch(n, b, size, shuffle, kind):
    dataset = make_dataset(kind, n)
    ranks = rank_iterators(dataset, b, size, shuffle=shuffle)
    single = SerialIterator(dataset, b * size, shuffle=shuffle, seed=3)
    steps = -(-3 * n // (b * size)) + 1         # past 3 epochs; n % B != 0: batches cross
    crossed = 0
    for _ in range(steps):
        parts = [indices(next(it)) for it in ranks]
        assert [len(p) for p in parts] == [b] * size
        assert sum(parts, []) == indices(next(single))
        for it in ranks:
            assert bookkeeping(it) == bookkeeping(single)
            assert it.batch_size == b and it.global_batch_size == b * size
        crossed += single.is_new_epoch and single.current_position > 0
    assert single.epoch >= 3
    assert crossed or n % (b * size) == 0 or b * size > n
    for it in ranks[1:]:
        states_equal(it.state_dict(), ranks[0].state_dict())


def test_state_records_the_batch_sizes_and_single_process_format_is_unchanged():
    state = rank_iterators(torch.arange(10), 3, 2)[1].state_dict()
    assert (state['batch_size'], state['global_batch_size'], state['world_size']) == (3, 6, 2)
    for comm in (None, FakeComm(0, 1)):
        assert set(SerialIterator(torch.arange(10), 3, seed=0, comm=comm).state_dict()) == {
            'epoch', 'current_position', 'is_new_epoch', 'order', 'previous_epoch_detail',
            'generator'}
    assert FakeComm(0, 1).counts == {}   # a single process: no collective


def _another_seed(mine, rank):
    return (mine[0] + 1,) + mine[1:]


def _another_length(mine, rank):
    return mine[:2] + (mine[2] + 1,) + mine[3:]


def test_the_seed_comes_from_rank_0_and_settings_must_agree():
    theirs = _another_seed
    with pytest.warns(UserWarning, match="seed=5 on rank 1 differs from rank 0's seed=6"):
        it = SerialIterator(torch.arange(10), 2, seed=5, comm=FakeComm(1, 2, theirs))
    reference = SerialIterator(torch.arange(10), 4, seed=6)
    assert indices(next(it)) == indices(next(reference))[2:]
    for rank in (0, 1):   # every rank sees every rank's setup: all of them raise
        with pytest.raises(ValueError, match=r'dataset length differs across ranks'):
            SerialIterator(torch.arange(10), 2, seed=0, comm=FakeComm(rank, 2, _another_length))


# ---------------------------------------------------------------- (b) evaluation: no padding

@pytest.mark.parametrize('n, b, size, rounds', [
    (7, 4, 2, [[4, 3]]),
    (7, 2, 2, [[2, 2], [2, 1]]),
    (7, 3, 2, [[3, 3], [1, 0]]),
    (7, 2, 3, [[2, 2, 2], [1, 0, 0]]),
    (1, 1, 2, [[1, 0]]),
    (8, 2, 2, [[2, 2], [2, 2]]),
])
@pytest.mark.parametrize('kind', ['tensor', 'list'])
def test_evaluation_splits_the_last_global_batch_without_padding(n, b, size, rounds, kind):
    ranks = rank_iterators(make_dataset(kind, n), b, size, repeat=False, shuffle=False)
    for _ in range(2):                        # and again after reset(), as the Evaluator does
        got = [[indices(batch) for batch in it] for it in ranks]
        for r, batches in enumerate(got):     # a rank whose part is empty stops: no [] batch
            assert [len(x) for x in batches] == [sizes[r] for sizes in rounds if sizes[r]]
        seen = [i for batches in got for batch in batches for i in batch]
        assert sorted(seen) == list(range(n))           # each example exactly once
        for it in ranks:
            assert bookkeeping(it) == (1, 1.0, bookkeeping(it)[2], True)
            with pytest.raises(StopIteration):
                next(it)
            states_equal(it.state_dict(), ranks[0].state_dict())
        for it in ranks:
            it.reset()


def test_evaluation_shards_a_shuffled_order_exactly_once():
    ranks = rank_iterators(torch.arange(7), 3, 2, repeat=False, shuffle=True)
    single = SerialIterator(torch.arange(7), 6, repeat=False, shuffle=True, seed=3)
    got = [[indices(batch) for batch in it] for it in ranks]
    expected = [indices(batch) for batch in single]
    assert got[0][0] + got[1][0] == expected[0]
    assert got[0][1] == expected[1] and len(got[1]) == 1


# ---------------------------------------------------------------- (c) resume

@pytest.mark.parametrize('n, b, repeat, shuffle', [(7, 2, True, True), (10, 3, True, False),
                                                   (7, 2, False, True), (5, 4, True, True)])
def test_resume_at_every_position_continues_identically_on_each_rank(n, b, repeat, shuffle):
    dataset, size = torch.arange(n), 2
    steps = 3 * n // (b * size) + 2 if repeat else -(-n // (b * size))

    def run(it, k):
        out = []
        for _ in range(k):
            try:
                out.append(indices(next(it)))
            except StopIteration:
                out.append(None)
        return out

    expected = [run(it, steps) for it in rank_iterators(dataset, b, size, seed=1, repeat=repeat,
                                                        shuffle=shuffle)]
    for k in range(steps + 1):
        states = []
        for r in range(size):
            a = SerialIterator(dataset, b, repeat, shuffle, seed=1, comm=FakeComm(r, size))
            head = run(a, k)
            state = roundtrip(a.state_dict())
            states.append(state)
            c = SerialIterator(dataset, b, repeat, shuffle, seed=99, comm=FakeComm(r, size))
            with warnings.catch_warnings():
                warnings.simplefilter('error')        # same world size: no warning
                c.load_state_dict(state)
            assert c.resharded_from is None
            assert bookkeeping(c) == bookkeeping(a)
            assert head + run(c, steps - k) == expected[r]
        states_equal(states[0], states[1])


@pytest.mark.parametrize('new_b, new_size', [(4, 1), (1, 4), (2, 2)])
def test_resume_on_another_world_size_continues_the_same_global_batches(new_b, new_size):
    dataset, b, size, k = torch.arange(9), 2, 2, 5
    ranks = rank_iterators(dataset, b, size)
    single = SerialIterator(dataset, b * size, seed=3)
    for _ in range(k):
        for it in ranks:
            next(it)
        next(single)
    state = roundtrip(ranks[1].state_dict())
    new = []
    for r in range(new_size):
        comm = None if new_size == 1 else FakeComm(r, new_size)
        it = SerialIterator(dataset, new_b, seed=42, comm=comm)
        if new_size == size:
            it.load_state_dict(state)
            assert it.resharded_from is None
        else:
            with pytest.warns(UserWarning, match='not be bit-identical'):
                it.load_state_dict(state)
            assert it.resharded_from == size
        new.append(it)
    for _ in range(8):
        assert sum((indices(next(it)) for it in new), []) == indices(next(single))
        assert all(bookkeeping(it) == bookkeeping(single) for it in new)


@pytest.mark.parametrize('new_b, new_size, match', [
    (1, 4, 'global batch is 6 .*4 ranks cannot share.*divides 6'),
    (2, 4, 'global batch is 6 .*4 ranks cannot share.*divides 6'),
    (2, 2, r'global batch is 6 .*this run\'s is 4 .*use batch_size=3'),
    (3, 1, r'global batch is 6 .*this run\'s is 3 .*use batch_size=6'),
])
def test_resume_that_cannot_keep_the_global_batch_is_refused(new_b, new_size, match):
    state = rank_iterators(torch.arange(10), 3, 2)[0].state_dict()
    comm = None if new_size == 1 else FakeComm(0, new_size)
    it = SerialIterator(torch.arange(10), new_b, seed=0, comm=comm)
    with pytest.raises(ValueError, match=match) as info:
        it.load_state_dict(state)
    assert '\n' not in str(info.value)


def test_a_single_process_state_loads_into_sharded_iterators():
    dataset = torch.arange(9)
    single = SerialIterator(dataset, 4, seed=3)
    for _ in range(3):
        next(single)
    state = roundtrip(single.state_dict())   # the format of today: no batch or world size
    ranks = rank_iterators(dataset, 2, 2, seed=8)
    for it in ranks:
        it.load_state_dict(state)
    for _ in range(6):
        assert sum((indices(next(it)) for it in ranks), []) == indices(next(single))


# ---------------------------------------------------------------- (d) two real gloo ranks

def _two_rank_batches(comm, n, b, steps):
    torch.manual_seed(100 + comm.rank)   # without the shared seed the orders would differ
    it = SerialIterator(torch.arange(n), b, comm=comm)
    batches, books = [], []
    for _ in range(steps):
        batches.append(indices(next(it)))
        books.append(bookkeeping(it))
    return it._seed, batches, books, dict(comm.counts)


def test_two_gloo_ranks_share_one_order_with_one_collective(tmp_path):
    n, b, steps = 13, 2, 50
    results = run_ranks(_two_rank_batches, 2, tmp_path, n, b, steps)
    (seed0, batches0, books0, counts0), (seed1, batches1, books1, counts1) = results
    assert seed0 == seed1
    single = SerialIterator(torch.arange(n), 2 * b, seed=seed0)
    for x, y in zip(batches0, batches1):
        assert x + y == indices(next(single))
    assert books0 == books1
    assert books0[-1][0] == single.epoch >= 3
    assert counts0 == counts1 == {'allgather_obj': 1}   # at construction; none per iteration


# ---------------------------------------------------------------- (e) DataLoader + set_epoch

def distributed_loader(rank=0, as_batch_sampler=False, n=10, batch=2):
    dataset = TensorDataset(torch.arange(n))
    sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=7)
    if as_batch_sampler:
        return DataLoader(dataset, batch_sampler=BatchSampler(sampler, batch, False))
    return DataLoader(dataset, batch_size=batch, sampler=sampler)


def sampler_order(epoch, rank=0, n=10):
    sampler = DistributedSampler(TensorDataset(torch.arange(n)), num_replicas=2, rank=rank,
                                 shuffle=True, seed=7)
    sampler.set_epoch(epoch)
    return list(sampler)


def epochs_of(it, count):
    out = []
    for _ in range(count):
        order = []
        while True:
            order += next(it).arrays[0].tolist()
            if it.is_new_epoch:
                break
        out.append(order)
    return out


@pytest.mark.parametrize('as_batch_sampler', [False, True])
@pytest.mark.parametrize('rank', [0, 1])
def test_dataloader_iterator_sets_the_sampler_epoch(as_batch_sampler, rank):
    got = epochs_of(DataLoaderIterator(distributed_loader(rank, as_batch_sampler)), 4)
    assert got == [sampler_order(e, rank) for e in range(4)]
    assert len({tuple(order) for order in got}) == 4


@pytest.mark.parametrize('as_batch_sampler', [False, True])
def test_dataloader_iterator_sets_the_restored_epoch_after_a_resume(as_batch_sampler):
    def flat(it, k):
        return [next(it).arrays[0].tolist() for _ in range(k)]

    steps = 14                                     # 3 batches per epoch: about 5 epochs
    expected = flat(DataLoaderIterator(distributed_loader(0, as_batch_sampler)), steps)
    assert sum(expected[:3], []) == sampler_order(0)
    for k in range(steps):
        a = DataLoaderIterator(distributed_loader(0, as_batch_sampler))
        head = flat(a, k)
        b = DataLoaderIterator(distributed_loader(0, as_batch_sampler))   # a fresh sampler
        b.load_state_dict(roundtrip(a.state_dict()))
        assert head + flat(b, steps - k) == expected


# ---------------------------------------------------------------- (f) scatter_dataset

@pytest.mark.parametrize('n, size, force, sizes', [
    (7, 2, True, [4, 4]), (7, 2, False, [4, 3]),
    (10, 3, True, [4, 4, 4]), (10, 3, False, [4, 3, 3]),
    (6, 3, True, [2, 2, 2]), (6, 3, False, [2, 2, 2]),
    (5, 1, True, [5]),
])
@pytest.mark.parametrize('shuffle', [False, True])
def test_scatter_dataset_shard_sizes(n, size, force, sizes, shuffle):
    dataset = list(range(n))
    comms = [FakeComm(r, size) for r in range(size)]
    shards = [scatter_dataset(dataset, comm, shuffle=shuffle, seed=0, force_equal_length=force)
              for comm in comms]
    assert [len(s) for s in shards] == sizes
    examples = [s[i] for s in shards for i in range(len(s))]
    assert set(examples) == set(range(n))            # everything is somewhere
    if not force:
        assert sorted(examples) == list(range(n))    # and exactly once without force
    order = np.random.RandomState(0).permutation(n).tolist() if shuffle else list(range(n))
    assert [shards[0][i] for i in range(len(shards[0]))] == order[:sizes[0]]
    assert all(comm.counts == {} for comm in comms)     # a given seed: nothing to agree on
