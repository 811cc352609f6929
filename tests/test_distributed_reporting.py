"""Reporting across ranks: exact global means in one packed all-reduce per emit, the same
entries and decisions on every rank, collectives only at emits and checks, and nothing
changed (nor any collective called) in a single process.

The multi-process tests run 2 gloo ranks on 127.0.0.1 (``tests/dist_helpers.py``); the
workers are module-level functions so that the spawned processes can import them.
Values are small dyadic rationals, so float64 sums are exact in any order and a global
mean can be compared with ``==`` to the mean of the union computed here.
"""
import json
import os

import pytest
import torch
from torch.optim import lr_scheduler
from torch.utils.data import DataLoader, TensorDataset

import extensions as E
from dist_helpers import run_ranks
from trainerlib import PRIORITY_WRITER, Trainer, make_extension
from trainerlib import reporter as reporter_module
from trainerlib.distributed.communicator import SingleProcessCommunicator
from trainerlib.distributed.context import comm_of
from trainerlib.iterators import SerialIterator
from trainerlib.summary import DictSummary, Summary
from trainerlib.triggers import EarlyStoppingTrigger, MaxValueTrigger, TimeTrigger
from trainerlib.updaters import StandardUpdater

W = 2


# ------------------------------------------------------------------ helpers

class FakeUpdater:
    def __init__(self, per_epoch=4):
        self.iteration = 0
        self.per_epoch = per_epoch

    @property
    def epoch(self):
        return self.iteration // self.per_epoch

    @property
    def epoch_detail(self):
        return self.iteration / self.per_epoch

    @property
    def previous_epoch_detail(self):
        return max(self.iteration - 1, 0) / self.per_epoch


class FakeTrainer:
    """What the reporting extensions read: updater, observation, elapsed_time, out, comm."""

    def __init__(self, comm=None, out='.', clock=None):
        if comm is not None:
            self.comm = comm
        self.updater = FakeUpdater()
        self.observation = {}
        self.out = out
        self._clock = clock or (lambda iteration: 0.25 * iteration)

    @property
    def elapsed_time(self):
        return self._clock(self.updater.iteration)

    def step(self, observation):
        self.updater.iteration += 1
        self.observation = observation


def total_collectives(comm):
    return sum(comm.counts.values())


def value(rank, iteration):
    """A rank-dependent value, exact in binary: (13 r + 3 i mod 7) / 8."""
    return (13 * rank + (3 * iteration) % 7) / 8


def weight(rank, iteration):
    return 1 + (rank + iteration) % 3


def union_mean(pairs):
    """Weighted mean of ``[(value, weight), ...]`` in float64 (exact for these values)."""
    return sum(v * w for v, w in pairs) / sum(w for _, w in pairs)


# ---------------------------------------------- (a) LogReport on a real Trainer

@make_extension(trigger=(1, 'iteration'), priority=PRIORITY_WRITER)
def report_rank_values(trainer):
    rank, it = comm_of(trainer).rank, trainer.updater.iteration
    trainer.observation['main/v'] = torch.tensor(value(rank, it))            # float32, exact
    trainer.observation['main/w'] = (torch.tensor(value(rank, it + 1)), weight(rank, it))
    trainer.observation['main/n'] = value(rank, it + 2)                        # a Python float


class MSELoss(torch.nn.Module):
    """The module that returns the loss (what StandardUpdater forwards through DDP)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, a, b):
        return torch.nn.functional.mse_loss(self.net(a), b)


def log_report_worker(comm, root):
    torch.manual_seed(comm.rank)
    x = torch.randn(12, 3)
    model = MSELoss(torch.nn.Linear(3, 1))
    updater = StandardUpdater(SerialIterator(TensorDataset(x, x.sum(1, keepdim=True)), 3, seed=0),
                              torch.optim.SGD(model.parameters(), lr=0.1), model)
    out = os.path.join(root, f'rank{comm.rank}')
    log = E.LogReport(trigger=(3, 'iteration'), write_interval=0)
    trainer = Trainer(updater, (9, 'iteration'), out=out, comm=comm)
    trainer.extend(report_rank_values)
    trainer.extend(log)
    trainer.run()
    return {'log': log.log, 'file': os.path.exists(os.path.join(out, 'log')),
            'text': open(os.path.join(out, 'log')).read() if comm.rank == 0 else None}


def test_log_report_entries_are_exact_global_means_identical_on_every_rank(tmp_path):
    logs = run_ranks(log_report_worker, W, tmp_path, str(tmp_path))
    assert logs[0]['log'] == logs[1]['log']                      # every rank: the same list
    assert logs[0]['file'] and not logs[1]['file']               # only rank 0 writes
    assert json.loads(logs[0]['text']) == logs[0]['log']
    entries = logs[0]['log']
    assert [e['iteration'] for e in entries] == [3, 6, 9]
    for entry in entries:
        its = range(entry['iteration'] - 2, entry['iteration'] + 1)
        ranks = range(W)
        assert entry['main/v'] == union_mean([(value(r, i), 1) for r in ranks for i in its])
        assert entry['main/w'] == union_mean([(value(r, i + 1), weight(r, i))
                                              for r in ranks for i in its])
        assert entry['main/n'] == union_mean([(value(r, i + 2), 1) for r in ranks for i in its])
        # not rank 0's mean: the test tells a global mean from a local one
        assert entry['main/v'] != union_mean([(value(0, i), 1) for i in its])


# --------------------------------------------- (b) Evaluator, 7 examples split 4 / 3

VALUES = torch.tensor([3., 8., 15., 20., 24., 25., 26.])   # mean 121 / 7 = 17.2857...


class ShiftedMean(torch.nn.Module):
    """Reports the batch mean of ``x - running_mean`` of an (eval-mode) BatchNorm."""

    def __init__(self, shift):
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(1, affine=False, eps=0.0)
        self.bn.running_mean.fill_(shift)
        self.bn.num_batches_tracked.fill_(int(shift))

    def forward(self, x):
        y = self.bn(x.reshape(-1, 1))          # eval mode: (x - running_mean) / 1
        reporter_module.report({'value': y.mean()}, self)
        return y.mean()


def collated(batch, device):
    return tuple(batch)   # a DataLoader's collated [x] list: one batch, not a list of examples


def make_evaluator(values, model):
    return E.Evaluator(DataLoader(TensorDataset(values), batch_size=2), model, converter=collated,
                       name='validation')


def shard(rank, sizes):
    start = sum(sizes[:rank])
    return VALUES[start:start + sizes[rank]]


def evaluator_worker(comm, sizes):
    model = ShiftedMean(shift=float(comm.rank * 100))    # rank 1's buffers differ
    evaluator = make_evaluator(shard(comm.rank, sizes), model)
    trainer = FakeTrainer(comm)
    before = total_collectives(comm)
    with reporter_module.Reporter(), reporter_module.report_scope(trainer.observation):
        result = evaluator(trainer)
    return {'result': result, 'collectives': total_collectives(comm) - before,
            'counts': dict(comm.counts),
            'buffers': [b.tolist() for b in model.buffers()]}


def test_evaluator_gives_the_sample_weighted_mean_of_uneven_shards(tmp_path):
    out = run_ranks(evaluator_worker, W, tmp_path, [4, 3])
    assert out[0]['result'] == out[1]['result']
    mean = out[0]['result']['validation/main/value']
    assert mean == pytest.approx(121 / 7, rel=1e-12)           # 17.2857...: the true mean
    equal_weights = (VALUES[:4].mean().item() + VALUES[4:].mean().item()) / 2
    assert abs(mean - equal_weights) > 0.5     # 18.25: equal weights (ChainerMN's answer)
    single = make_evaluator(VALUES, ShiftedMean(0.0))()
    assert mean == pytest.approx(single['validation/main/value'], rel=1e-12)
    # rank 0's BatchNorm buffers were broadcast first, so both ranks evaluated one model
    assert out[1]['buffers'] == out[0]['buffers'] == [[0.0], [1.0], 0]
    # one broadcast per buffer dtype (float32, int64), then header + payload
    assert out[0]['collectives'] == out[1]['collectives'] == 4
    assert out[0]['counts']['bcast_tensor'] == 2


def test_evaluator_with_an_empty_shard_on_one_rank(tmp_path):
    out = run_ranks(evaluator_worker, W, tmp_path, [7, 0])
    assert out[0]['result'] == out[1]['result']
    assert out[0]['result']['validation/main/value'] == pytest.approx(121 / 7, rel=1e-12)
    assert out[0]['counts']['allgather_obj'] == 1               # key sets differed once


def plot_report_worker(comm, root):
    out = os.path.join(root, f'rank{comm.rank}')
    os.makedirs(out)
    trainer = FakeTrainer(comm, out=out)
    plot = E.PlotReport(['a', 'b'], trigger=(3, 'iteration'))
    for it in range(1, 7):
        observation = {'a': torch.tensor(value(comm.rank, it))}
        if comm.rank == 1:
            observation['b'] = value(1, it + 1)      # only rank 1 reports it
        trainer.step(observation)
        plot(trainer)
    return plot.data, os.path.exists(os.path.join(out, 'plot.png'))


def test_plot_report_points_are_global_means_drawn_by_rank0_only(tmp_path):
    pytest.importorskip('matplotlib')
    (data0, drawn0), (data1, drawn1) = run_ranks(plot_report_worker, W, tmp_path, str(tmp_path))
    assert data0 == data1
    assert drawn0 and not drawn1
    assert data0['a'] == [(it, union_mean([(value(r, i), 1) for r in range(W)
                                           for i in range(it - 2, it + 1)])) for it in (3, 6)]
    assert data0['b'] == [(it, union_mean([(value(1, i + 1), 1) for i in range(it - 2, it + 1)]))
                          for it in (3, 6)]


# ------------------------------------------- (c) key sets that differ across ranks

def different_keys_worker(comm):
    summary = DictSummary()
    for i in range(5):
        d = {'common': value(comm.rank, i)}
        if comm.rank == 1:
            d['only1'] = (value(1, i + 3), weight(1, i))
        else:
            d['only0'] = value(0, i + 5)
        summary.add(d)
    before = dict(comm.counts)
    reduced = summary.allreduce(comm)
    after = dict(comm.counts)
    empty = DictSummary().allreduce(comm)          # a rank may have nothing at all
    return {'mean': reduced.compute_mean(), 'stats': reduced.make_statistics(),
            'calls': {k: after.get(k, 0) - before.get(k, 0) for k in after},
            'empty_len': len(empty)}


def test_key_sets_that_differ_are_merged_with_zero_weights(tmp_path):
    out = run_ranks(different_keys_worker, W, tmp_path)
    assert out[0]['mean'] == out[1]['mean']
    assert out[0]['stats'] == out[1]['stats']
    mean = out[0]['mean']
    assert set(mean) == {'common', 'only0', 'only1'}
    assert mean['common'] == union_mean([(value(r, i), 1) for r in range(W) for i in range(5)])
    assert mean['only1'] == union_mean([(value(1, i + 3), weight(1, i)) for i in range(5)])
    assert mean['only0'] == union_mean([(value(0, i + 5), 1) for i in range(5)])
    # the statistics equal a single process's over the union of the values
    single = DictSummary()
    for r in range(W):
        for i in range(5):
            single.add({'common': value(r, i)})
    stats = single.make_statistics()
    assert out[0]['stats']['common'] == stats['common']
    assert out[0]['stats']['common.std'] == pytest.approx(stats['common.std'], rel=1e-12)
    # header, all-gather of the key lists (they differ), payload
    assert out[0]['calls'] == {'control_allreduce': 1, 'allgather_obj': 1, 'allreduce': 1}
    assert out[0]['empty_len'] == out[1]['empty_len'] == 0


# ------------------------------- (d) decisions: best value, early stop, plateau, time

def decision_value(rank, iteration):
    """Rank 0 keeps improving (decreasing), rank 1 gets worse faster: per-rank decisions
    differ, and the global mean first improves, then plateaus / worsens."""
    if rank == 0:
        return 8 - iteration / 4
    return 1 + (iteration * iteration) / 16


def run_decisions(comm, values, iterations=24):
    """Drive the deciding triggers and extensions on a fake trainer; the decisions made."""
    trainer = FakeTrainer(comm)
    best = MaxValueTrigger('v', trigger=(2, 'iteration'))
    stop = EarlyStoppingTrigger(check_trigger=(2, 'iteration'), monitor='v', patience=2,
                                mode='min', max_trigger=(1000, 'iteration'))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    plateau = E.LRScheduler(lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0),
                            trigger=(2, 'iteration'), monitor='v')
    micro = E.MicroAverage('n', 'd', 'ratio', trigger=(3, 'iteration'))
    decisions = {'best': [], 'stop': [], 'lr': [], 'ratio': []}
    with reporter_module.Reporter() as reporter:
        for it in range(1, iterations + 1):
            observation = {'v': torch.tensor(values(it)), 'n': torch.tensor(it % 3),
                           'd': torch.tensor(3)}
            trainer.step(observation)
            with reporter.scope(observation):
                micro(trainer)
            if best(trainer):
                decisions['best'].append((it, best.best_value))
            if stop(trainer):
                decisions['stop'].append(it)
            plateau(trainer)
            decisions['lr'].append(opt.param_groups[0]['lr'])
            if 'ratio' in observation:
                decisions['ratio'].append((it, float(observation['ratio'])))
    return decisions


def decisions_worker(comm):
    return run_decisions(comm, lambda it: decision_value(comm.rank, it))


def test_decisions_are_the_same_on_every_rank_and_those_of_the_union(tmp_path):
    out = run_ranks(decisions_worker, W, tmp_path)
    assert out[0] == out[1]
    # one process seeing, at each iteration, the mean of the two ranks' values (equal
    # counts per rank, so the period means are those of the union)
    union = run_decisions(None, lambda it: (decision_value(0, it) + decision_value(1, it)) / 2)
    assert out[0] == {**union, 'ratio': out[0]['ratio']}
    alone = run_decisions(None, lambda it: decision_value(0, it))
    assert alone['best'] != union['best'] and alone['lr'] != union['lr']   # it can tell
    assert union['stop'] and union['lr'][-1] < 1.0 and len(union['best']) >= 2
    # MicroAverage: the sums of both ranks (both report the same counts here)
    assert [r for _, r in out[0]['ratio']] == [
        sum(i % 3 for i in range(it - 2, it + 1)) / 9 for it in (3, 6, 9, 12, 15, 18, 21, 24)]


def time_trigger_worker(comm):
    clock = (lambda it: 1.0 * it) if comm.rank == 0 else (lambda it: 0.1 * it)
    trainer = FakeTrainer(comm, clock=clock)
    trigger = TimeTrigger(3.5, check_every=2)
    fired, calls = [], []
    for it in range(1, 21):
        trainer.step({})
        before = total_collectives(comm)
        if trigger(trainer):
            fired.append(it)
        calls.append(total_collectives(comm) - before)
    return fired, calls, trigger.state_dict()


def test_time_trigger_follows_rank0s_clock_at_agreed_checks(tmp_path):
    out = run_ranks(time_trigger_worker, W, tmp_path)
    assert out[0] == out[1]
    fired, calls, _ = out[0]
    expected, next_time = [], 3.5
    for it in range(2, 21, 2):            # rank 0's clock, asked every second iteration
        if next_time <= it:
            expected.append(it)
            next_time += 3.5
    assert fired == expected == [4, 8, 12, 14, 18]
    assert calls == [0, 1] * 10           # one tiny all-reduce per check, none in between


# -------------------------------------------- (e) collectives only at emits and checks

def counts_worker(comm, keys):
    trainer = FakeTrainer(comm, clock=lambda it: 0.25 * it * (1 + comm.rank))  # clocks differ
    log = E.LogReport(keys=keys, trigger=(5, 'iteration'), filename=None)
    per_iteration = []
    for it in range(1, 21):
        trainer.step({'a': torch.tensor(value(comm.rank, it)), 'b': value(comm.rank, it + 1)})
        before = total_collectives(comm)
        log(trainer)
        per_iteration.append(total_collectives(comm) - before)
    return per_iteration, log.log


@pytest.mark.parametrize('keys, per_emit', [(None, 2), (['a', 'b'], 1)])
def test_collectives_only_at_emits(tmp_path, keys, per_emit):
    out = run_ranks(counts_worker, W, tmp_path, keys)
    assert out[0] == out[1]
    per_iteration, log = out[0]
    assert per_iteration == [per_emit if it % 5 == 0 else 0 for it in range(1, 21)]
    assert [e['iteration'] for e in log] == [5, 10, 15, 20]
    assert [e['elapsed_time'] for e in log] == [0.25 * it for it in (5, 10, 15, 20)]  # rank 0's


# ------------------------------------------------- (f) single process: nothing changes

def drive_log_report(trainer, iterations=12):
    log = E.LogReport(trigger=(4, 'iteration'), filename=None)
    for it in range(1, iterations + 1):
        trainer.step({'main/loss': torch.rand(()), 'w': (torch.rand(()), it % 3 + 1),
                      'f': float(torch.rand(()))})
        log(trainer)
    return log.log


@pytest.mark.parametrize('comm', [SingleProcessCommunicator(), None])
def test_single_process_entries_are_bit_identical_and_call_no_collective(comm):
    torch.manual_seed(0)
    plain = drive_log_report(FakeTrainer())
    torch.manual_seed(0)
    single = SingleProcessCommunicator()
    with_comm = drive_log_report(FakeTrainer(single))
    assert json.dumps(with_comm) == json.dumps(plain)            # the same bits (repr)
    assert with_comm == plain and len(plain) == 3
    assert total_collectives(single) == 0                        # nothing was even counted
    summary = DictSummary()
    summary.add({'x': 1.0})
    assert summary.allreduce(comm) is summary
    s = Summary()
    assert s.allreduce(comm) is s


def test_single_process_decisions_and_evaluation_call_no_collective():
    single = SingleProcessCommunicator()
    values = lambda it: decision_value(0, it)    # noqa: E731
    assert run_decisions(single, values) == run_decisions(None, values)
    evaluator = make_evaluator(VALUES, ShiftedMean(0.0))
    with reporter_module.Reporter(), reporter_module.report_scope({}):
        result = evaluator(FakeTrainer(single))
    assert result == make_evaluator(VALUES, ShiftedMean(0.0))()
    trigger = TimeTrigger(1.0, check_every=7)
    trainer = FakeTrainer(single, clock=lambda it: 0.5 * it)
    fired = []
    for it in range(1, 7):
        trainer.step({})
        fired.append(trigger(trainer))
    assert fired == [False, True, False, True, False, True]      # asked every call, as before
    assert total_collectives(single) == 0


def test_comm_of_defaults_to_a_single_process_communicator():
    assert comm_of(None).size == 1 and comm_of(object()).rank == 0
    comm = SingleProcessCommunicator()
    assert comm_of(FakeTrainer(comm)) is comm
    assert E.LogReport.collective and E.PlotReport.collective
    assert E.LogReport.rank0_only and E.PlotReport.rank0_only
