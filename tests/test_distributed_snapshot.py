"""Snapshot sets on 2 gloo ranks: exact resume, damaged sets, orphans, single-process load.

The model has dropout (per-rank random streams matter) and the LogReport trigger (7)
does not divide the snapshot iteration (partial sums matter), so any per-rank state a
set fails to restore shows up in the final parameters or the log.
"""
import json
import os
import random
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import extensions as E
from tests.dist_helpers import final_result, run_ranks, torchrun_2
from trainerlib import Classifier, Trainer, reporter
from trainerlib.datasets import TupleDataset
from trainerlib.errors import SnapshotError
from trainerlib.extension import PRIORITY_WRITER, FunctionExtension
from trainerlib.iterators import SerialIterator
from trainerlib.serialization import load_snapshot
from trainerlib.updaters import StandardUpdater

END = 30
STOP = 18          # a snapshot iteration
SNAPSHOT_EVERY = 6
LOG_EVERY = 7      # does not divide STOP: the partial summary is in the set
BATCH = 4          # per rank


def build(comm, out, stop, batch=BATCH):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(50, 10, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    model = Classifier(nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Dropout(0.3),
                                     nn.Linear(16, 3)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    iterator = SerialIterator(TupleDataset(x, y), batch, seed=1, comm=comm)
    trainer = Trainer(StandardUpdater(iterator, optimizer, model=model), (stop, 'iteration'),
                      out=out, comm=comm)
    trainer.extend(E.LogReport(trigger=(LOG_EVERY, 'iteration')))
    trainer.extend(E.snapshot(autoload=True), trigger=(SNAPSHOT_EVERY, 'iteration'))
    return trainer, model


def train(comm, out, stop):
    """Run (autoloading) to ``stop``; the parameters, the log and the warnings of this rank."""
    torch.set_num_threads(1)
    trainer, model = build(comm, out, stop)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        trainer.run()
    log = [{k: v for k, v in e.items() if k != 'elapsed_time'}
           for e in trainer.get_extension('LogReport').log]
    return ([p.detach().clone() for p in model.parameters()], log,
            [str(w.message) for w in caught])


def train_expecting_error(comm, out, stop):
    torch.set_num_threads(1)
    trainer, _ = build(comm, out, stop)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            trainer.run()
    except SnapshotError as e:
        return f'{type(e).__name__}: {e}'
    return None


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('uninterrupted')
    results = run_ranks(train, 2, tmp, str(tmp / 'out'), END)
    assert same(results[0][0], results[1][0]) and results[0][1] == results[1][1]
    assert len(results[0][1]) == END // LOG_EVERY
    return results[0][0], results[0][1]


def stopped_run(tmp_path):
    """A 2-rank run stopped at STOP (its sets at 6, 12, 18); returns its out."""
    out = tmp_path / 'out'
    run_ranks(train, 2, tmp_path, str(out), STOP)
    assert (out / f'snapshot_iter_{STOP}').is_file()
    assert (out / f'snapshot_iter_{STOP}.ranks' / f'rank1_iter{STOP}').is_file()
    assert not (out / f'snapshot_iter_{STOP}.ranks' / f'rank0_iter{STOP}').exists()
    return out


def assert_resumed_identically(results, uninterrupted):
    params, log = uninterrupted
    for rank, (p, l, _) in enumerate(results):
        assert same(p, params), f'rank {rank}: parameters differ'
        assert l == log, f'rank {rank}: log differs'


def test_resume_by_a_fresh_pair_is_bit_identical(tmp_path, uninterrupted):
    out = stopped_run(tmp_path)
    results = run_ranks(train, 2, tmp_path, str(out), END)
    assert_resumed_identically(results, uninterrupted)
    file_log = [{k: v for k, v in e.items() if k != 'elapsed_time'}
                for e in json.loads((out / 'log').read_text())]
    assert file_log == uninterrupted[1]


@pytest.mark.parametrize('damage', ['missing', 'corrupt'])
def test_a_damaged_newest_set_falls_back_on_both_ranks(tmp_path, uninterrupted, damage):
    out = stopped_run(tmp_path)
    rank_file = out / f'snapshot_iter_{STOP}.ranks' / f'rank1_iter{STOP}'
    if damage == 'missing':
        rank_file.unlink()
    else:
        data = bytearray(rank_file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        rank_file.write_bytes(bytes(data))
    results = run_ranks(train, 2, tmp_path, str(out), END)
    assert_resumed_identically(results, uninterrupted)
    for rank, (_, _, messages) in enumerate(results):
        skipped = [m for m in messages if 'autoload skipped' in m]
        assert len(skipped) == 1, (rank, messages)
        assert f'snapshot_iter_{STOP}' in skipped[0] and 'rank 1' in skipped[0]
        assert f'rank1_iter{STOP}' in skipped[0]
        assert ('cannot be read' if damage == 'missing' else 'damaged') in skipped[0]


def test_no_loadable_set_is_refused_on_every_rank(tmp_path):
    out = stopped_run(tmp_path)
    for ranks in out.glob('snapshot_iter_*.ranks'):
        for f in ranks.iterdir():
            f.write_bytes(b'garbage')
    errors = run_ranks(train_expecting_error, 2, tmp_path, str(out), END)
    assert all(e and e.startswith('SnapshotError: autoload: none of the snapshot sets')
               for e in errors), errors
    assert (out / f'snapshot_iter_{STOP}').is_file()    # nothing deleted, nothing started


def test_orphan_rank_files_are_ignored_and_cleaned(tmp_path, uninterrupted):
    out = stopped_run(tmp_path)
    orphan = out / 'snapshot_iter_24.ranks'              # a kill before rank 0 committed 24
    orphan.mkdir()
    (orphan / 'rank1_iter24').write_bytes(b'not committed')
    (orphan / '.rank1_iter24.abc123.tmp').write_bytes(b'half')
    (out / f'snapshot_iter_{STOP}.ranks' / '.rank1_iter24.x.tmp').write_bytes(b'half')
    results = run_ranks(train, 2, tmp_path, str(out), STOP + 1)   # resumes at 18, no new set
    assert not orphan.exists()
    assert sorted(os.listdir(out / f'snapshot_iter_{STOP}.ranks')) == [f'rank1_iter{STOP}']
    assert not any('autoload skipped' in m for _, _, ms in results for m in ms)


def test_a_two_rank_set_loads_in_a_single_process(tmp_path):
    out = stopped_run(tmp_path)
    # the same global batch (2 x BATCH) in one process: the iterator re-shards, with a warning
    trainer, model = build(None, str(tmp_path / 'single'), END, batch=2 * BATCH)
    with pytest.warns(UserWarning, match='not be bit-identical'):
        load_snapshot(str(out / f'snapshot_iter_{STOP}'), trainer)
    assert trainer.updater.iteration == STOP
    saved = torch.load(out / f'snapshot_iter_{STOP}', weights_only=True)
    assert saved['set']['world_size'] == 2 and saved['set']['global_batch_size'] == {'main': 8}
    for key, value in saved['state']['updater']['models']['main'].items():
        assert torch.equal(model.state_dict()[key], value), key
    assert trainer.get_extension('LogReport').log == \
        saved['state']['extensions']['LogReport']['log']


# ---- another world size: the partial sums of the log count each value once ------------

def probed_run(comm, out, stop, batch):
    """Run (autoloading) to ``stop`` reporting ``probe = 10 * iteration + rank`` each
    iteration; the LogReport's log (probe means only) and the warnings."""
    torch.set_num_threads(1)
    trainer, _ = build(comm, out, stop, batch=batch)
    rank = 0 if comm is None else comm.rank

    def probe(tr):
        reporter.report({'probe': float(10 * tr.updater.iteration + rank)})
    trainer.extend(FunctionExtension(probe, trigger=(1, 'iteration'), priority=PRIORITY_WRITER),
                   name='probe')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        trainer.run()
    log = [(e['iteration'], e['probe']) for e in trainer.get_extension('LogReport').log]
    return log, [str(w.message) for w in caught]


def probe_mean(ranks_of):
    """The exact mean of the probes of iterations 15..21 (the entry at 21), given the
    ranks that ran each iteration."""
    values = [10 * i + r for i in range(15, 22) for r in ranks_of(i)]
    return sum(values) / len(values)


@pytest.mark.parametrize('before, after', [(2, 1), (1, 2)])
def test_resume_on_another_world_size_counts_each_partial_value_once(tmp_path, before, after):
    out = str(tmp_path / 'out')
    if before == 2:
        run_ranks(probed_run, 2, tmp_path, out, STOP, BATCH)
        log, caught = probed_run(None, out, END, 2 * BATCH)
    else:
        probed_run(None, out, STOP, 2 * BATCH)
        (log, caught), (log1, _) = run_ranks(probed_run, 2, tmp_path, out, END, BATCH)
        assert log1 == log
    assert any('bit-identical' in w for w in caught), caught
    entry = dict(log)[21]   # iterations 15..18 before the resume, 19..21 after
    assert entry == pytest.approx(probe_mean(
        lambda i: range(before if i <= STOP else after)), rel=1e-12, abs=0)


# ---- kill -9 of a random rank at seeded random instants, relaunch by torchrun ----------

REPO = Path(__file__).resolve().parent.parent
WORKER = str(REPO / 'tests' / 'dist_fault_worker.py')
KILL_TRIALS = 10           # seeded kill points (each trial is 2 torchrun launches, ~10 s)
KILL_SEED = 19
WORKER_ITERATIONS, WORKER_SNAPSHOT_EVERY = 30, 6   # as in dist_fault_worker.py
PHASES = {0: ('update', 'pre-gather', 'mid-write', 'pre-rename', 'retention'),
          1: ('update', 'rank-file', 'post-gather')}
LAUNCH_TIMEOUT = 240       # seconds for one torchrun launch (a busy 2-core machine)


def kill_plan(seed, count):
    rng = random.Random(seed)
    plan = []
    for _ in range(count):
        rank = rng.choice((0, 1))
        phase = rng.choice(PHASES[rank])
        if phase == 'update':
            iteration = rng.randint(1, WORKER_ITERATIONS - 1)
        else:   # a snapshot iteration (the first set has nothing to retain)
            iteration = WORKER_SNAPSHOT_EVERY * rng.randint(2 if phase == 'retention' else 1,
                                                            WORKER_ITERATIONS // WORKER_SNAPSHOT_EVERY)
        plan.append((rank, iteration, phase))
    return plan


def expected_starts(rank, iteration, phase):
    """The iterations the relaunch may resume from: the newest set committed at the kill."""
    every = WORKER_SNAPSHOT_EVERY
    if phase == 'update':   # the set before may still be in rank 0's writer thread
        newest = (iteration - 1) // every * every
        return {newest, max(0, newest - every)}
    if phase == 'retention':
        return {iteration}
    if phase == 'post-gather':   # rank 0 may have committed it meanwhile
        return {iteration - every, iteration}
    return {iteration - every}   # not committed; the previous one was (rank 0 waits for it)


def launch(out, *args):
    return torchrun_2([WORKER, out, *args], LAUNCH_TIMEOUT)


@pytest.fixture(scope='module')
def worker_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp('worker_reference') / 'out'
    proc = launch(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return final_result(out)


@pytest.mark.slow
@pytest.mark.parametrize('trial', range(KILL_TRIALS))
def test_kill_9_of_a_rank_then_relaunch_is_bit_identical(tmp_path, worker_reference, trial):
    rank, iteration, phase = kill_plan(KILL_SEED, KILL_TRIALS)[trial]
    out = tmp_path / 'out'
    killed = launch(out, '--kill', f'{rank}:{iteration}:{phase}')
    assert killed.returncode != 0, f'the kill {rank}:{iteration}:{phase} did not happen'
    assert not (out / 'final_rank0').exists() and not (out / 'final_rank1').exists()
    resumed = launch(out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    starts = {line.split()[-1] for line in resumed.stdout.splitlines() if 'started at' in line}
    assert len(starts) == 1, resumed.stdout            # both ranks agreed on one set
    assert int(starts.pop()) in expected_starts(rank, iteration, phase), resumed.stdout
    finals, log = final_result(out)
    for r in (0, 1):
        expected = worker_reference[0][r]
        assert finals[r].keys() == expected.keys()
        assert all(torch.equal(finals[r][k], expected[k]) for k in expected), f'rank {r}'
    assert log == worker_reference[1]
