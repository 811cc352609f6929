"""Data-parallel training on 2 gloo ranks: equivalence with one process, roles, the DDP hook."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import extensions as E
from tests.dist_helpers import run_ranks, torchrun_2
from trainerlib import Classifier, Trainer
from trainerlib.datasets import TupleDataset
from trainerlib.distributed import SingleProcessCommunicator
from trainerlib.errors import TrainerlibError
from trainerlib.iterators import SerialIterator
from trainerlib.updaters import StandardUpdater

STEPS = 200
BATCH = 8          # per rank


def dataset():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(100, 10, generator=g)             # 100 is not a multiple of 16: batches
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()   # cross epoch ends
    return TupleDataset(x, y)


def build(optimizer_name):
    torch.manual_seed(0)
    model = Classifier(nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3)))
    optimizer = (torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
                 if optimizer_name == 'sgd' else torch.optim.Adam(model.parameters(), lr=0.01))
    return model, optimizer


def train_on_ranks(comm, optimizer_name, out):
    torch.set_num_threads(1)
    model, optimizer = build(optimizer_name)
    iterator = SerialIterator(dataset(), BATCH, seed=1, comm=comm)
    updater = StandardUpdater(iterator, optimizer, model=model)
    trainer = Trainer(updater, (STEPS, 'iteration'), out=out, comm=comm)
    trainer.extend(E.LogReport(trigger=(50, 'iteration')))
    trainer.extend(E.PrintReport(['iteration', 'main/loss']))
    trainer.run()
    names = sorted(trainer.extensions) if comm.rank else None
    return [p.detach().clone() for p in model.parameters()], names


def sharded_reference(optimizer_name, world_size=2):
    """One process: each rank's half-batch gradient computed alone, then averaged."""
    model, optimizer = build(optimizer_name)
    iterator = SerialIterator(dataset(), BATCH * world_size, seed=1)
    for _ in range(STEPS):
        x, y = (torch.stack(c) for c in zip(*next(iterator)))
        grads = []
        for r in range(world_size):
            optimizer.zero_grad(set_to_none=True)
            model(x[r * BATCH:(r + 1) * BATCH], y[r * BATCH:(r + 1) * BATCH]).backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        for p, *gs in zip(model.parameters(), *grads):
            p.grad = sum(gs) / world_size
        optimizer.step()
    return [p.detach() for p in model.parameters()]


def one_process(optimizer_name, world_size=2):
    model, optimizer = build(optimizer_name)
    iterator = SerialIterator(dataset(), BATCH * world_size, seed=1)
    updater = StandardUpdater(iterator, optimizer, model=model)
    for _ in range(STEPS):
        updater.update()
    return [p.detach() for p in model.parameters()]


@pytest.mark.parametrize('optimizer_name', ['sgd', 'adam'])
def test_two_ranks_equal_the_sharded_reference_bit_for_bit(tmp_path, optimizer_name):
    (rank0, _), (rank1, names) = run_ranks(train_on_ranks, 2, tmp_path, optimizer_name,
                                           str(tmp_path / 'out'))
    assert all(torch.equal(a, b) for a, b in zip(rank0, rank1))     # replicas stay equal
    reference = sharded_reference(optimizer_name)
    assert all(torch.equal(a, b) for a, b in zip(rank0, reference))
    plain = one_process(optimizer_name)
    worst = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(rank0, plain))
    assert worst < 1e-5
    assert 'PrintReport' in names and 'LogReport' in names   # registered, run on rank 0 only
    assert (tmp_path / 'out' / 'log').is_file()


def test_a_torchrun_rank_without_a_communicator_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv('TORCHELASTIC_RUN_ID', 'x')
    monkeypatch.setenv('WORLD_SIZE', '2')
    monkeypatch.setenv('RANK', '1')
    model, optimizer = build('sgd')
    updater = StandardUpdater(SerialIterator(dataset(), 4), optimizer, model=model)
    with pytest.raises(TrainerlibError, match='rank 1 of 2 started by torchrun.*comm='):
        Trainer(updater, (1, 'iteration'), out=str(tmp_path))
    monkeypatch.setenv('WORLD_SIZE', '1')
    assert Trainer(updater, (1, 'iteration'), out=str(tmp_path)).comm.size == 1


def test_single_process_communicator_changes_nothing(tmp_path):
    def run(comm):
        model, optimizer = build('adam')
        updater = StandardUpdater(SerialIterator(dataset(), 16, seed=1), optimizer, model=model)
        Trainer(updater, (30, 'iteration'), out=str(tmp_path), comm=comm).run()
        return [p.detach() for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(run(None), run(SingleProcessCommunicator())))


def test_loss_func_cannot_be_made_data_parallel_silently():
    class TwoRanks(SingleProcessCommunicator):
        size = 2
    model, optimizer = build('sgd')
    updater = StandardUpdater(SerialIterator(dataset(), 4), optimizer, model={'net': model},
                              loss_func=lambda x, y: model(x, y))
    with pytest.raises(ValueError, match="pass the module that returns the loss as model="):
        updater.setup_data_parallel(TwoRanks())


REPO = Path(__file__).resolve().parent.parent
RECIPES = {
    'classify': ['--set', 'dataset=digits', '--set', 'model=mlp', '--set', 'train.epochs=2'],
    'multi_head': ['--set', 'dataset=digits', '--set', 'data.positions=2',
                   '--set', 'data.train_size=256', '--set', 'data.test_size=64',
                   '--set', 'train.batch_size=32', '--set', 'train.epochs=1'],
}


def torchrun(args, timeout=240):
    """``torchrun --standalone --nproc-per-node=2 -m <args>``; bounded by ``timeout`` seconds."""
    return torchrun_2(['-m', *args], timeout)


@pytest.mark.slow
@pytest.mark.parametrize('recipe', sorted(RECIPES))
def test_recipe_runs_unchanged_under_torchrun(tmp_path, recipe):
    out = tmp_path / 'out'
    proc = torchrun([f'recipes.{recipe}', *RECIPES[recipe], '--out', str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('data parallel: 2 ranks x batch') == 1   # one terminal output
    assert proc.stdout.count('summary -> ') == 1
    summary = json.loads((out / 'summary.json').read_text())
    assert summary
    log_dir = out / 'mlp' if recipe == 'classify' else out
    log = json.loads((log_dir / 'log').read_text())
    assert log and all('main/loss' in e for e in log)


def test_a_recipe_that_is_not_data_parallel_is_refused_under_torchrun(tmp_path):
    proc = torchrun(['recipes.init_study', '--out', str(tmp_path / 'o')])
    message = "error: recipe 'init_study' does not run data-parallel; launch it as one process"
    # one line from each rank; the two ranks write to one pipe, so the lines may interleave
    assert proc.returncode != 0 and proc.stderr.count(message) == 2, proc.stderr[-2000:]
    workers = proc.stderr.split('failed (exitcode')[0]   # what precedes torchrun's own report
    assert 'Traceback' not in workers
    assert not (tmp_path / 'o').exists()


def _worker_run(tmp_path, name, launches, timeout=240):
    """Start every torchrun command of ``launches`` at once; wait (bounded) for all."""
    out = tmp_path / name
    worker = str(REPO / 'tests' / 'dist_train_worker.py')
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    procs = [subprocess.Popen([sys.executable, '-m', 'torch.distributed.run', *args, worker,
                               str(out)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for args in launches]
    for proc in procs:
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise AssertionError(f'{name}: torchrun did not exit within {timeout} s') from None
        assert proc.returncode == 0, output[-3000:]
    return (torch.load(out / 'final.pt', weights_only=True),
            json.loads((out / 'log').read_text()))


@pytest.mark.slow
def test_two_simulated_nodes_end_bit_identical_to_one_node(tmp_path):
    from tests.dist_helpers import free_port
    one_node = _worker_run(tmp_path, 'one', [['--standalone', '--nproc-per-node=2']])
    port = free_port()
    node = ['--nnodes=2', '--nproc-per-node=1', '--rdzv-backend=c10d',
            f'--rdzv-endpoint=127.0.0.1:{port}', '--rdzv-id=trainerlib-test']
    two_nodes = _worker_run(tmp_path, 'two', [node + ['--local-addr=127.0.0.1']] * 2)
    assert all(torch.equal(a, b) for a, b in zip(one_node[0], two_nodes[0]))
    strip = [{k: v for k, v in e.items() if k != 'elapsed_time'} for e in one_node[1]]
    assert strip == [{k: v for k, v in e.items() if k != 'elapsed_time'} for e in two_nodes[1]]


def gan_on_ranks(comm, loss):
    from trainerlib.updaters import GANUpdater
    torch.manual_seed(0)
    gen = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 6))
    dis = nn.Sequential(nn.Linear(6, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    g_opt = torch.optim.Adam(gen.parameters(), lr=1e-3)
    d_opt = torch.optim.Adam(dis.parameters(), lr=1e-3)
    real = TupleDataset(torch.randn(64, 6, generator=torch.Generator().manual_seed(2)))
    updater = GANUpdater(SerialIterator(real, 8, seed=3, comm=comm), gen, dis, g_opt, d_opt,
                         loss=loss, n_dis=2, z_dim=4)
    trainer = Trainer(updater, (20, 'iteration'), out=os.path.join(str(os.environ.get('TMPDIR', '/tmp')), f'gan-{os.getpid()}'), comm=comm)
    trainer.run()
    return [p.detach().clone() for m in (gen, dis) for p in m.parameters()]


@pytest.mark.parametrize('loss', ['bce', 'wgan-gp'])
def test_gan_updater_trains_both_models_data_parallel(tmp_path, loss):
    rank0, rank1 = run_ranks(gan_on_ranks, 2, tmp_path, loss)
    assert all(torch.equal(a, b) for a, b in zip(rank0, rank1))   # both models synchronised
    torch.manual_seed(0)
    initial = [p.detach() for m in (nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 6)),
                                    nn.Sequential(nn.Linear(6, 16), nn.LeakyReLU(0.2),
                                                  nn.Linear(16, 1))) for p in m.parameters()]
    # both trained (each model's first weight moved; WGAN's critic bias gets no gradient)
    assert not torch.equal(rank0[0], initial[0]) and not torch.equal(rank0[4], initial[4])


def count_collectives(comm, out):
    """Per iteration, the collectives trainerlib itself called (DDP's are not counted)."""
    from trainerlib.extension import FunctionExtension
    from trainerlib.preemption import Preemption
    model, optimizer = build('sgd')
    updater = StandardUpdater(SerialIterator(dataset(), BATCH, seed=1, comm=comm), optimizer,
                              model=model)
    trainer = Trainer(updater, (100, 'iteration'), out=out, comm=comm)
    trainer.preemption = Preemption(check_every=25)
    trainer.extend(E.LogReport(trigger=(10, 'iteration')))
    trainer.extend(E.PrintReport(['iteration', 'main/loss']))
    trainer.extend(E.ProgressBar())
    trainer.extend(E.snapshot(), trigger=(50, 'iteration'))
    totals = []
    trainer.extend(FunctionExtension(lambda t: totals.append(sum(comm.counts.values())),
                                     trigger=(1, 'iteration'), priority=-1000))
    trainer.run()
    return [b - a for a, b in zip(totals, totals[1:])]   # iterations 2 .. 100


def test_collectives_only_where_an_emit_a_check_or_a_snapshot_is_due(tmp_path):
    for deltas in run_ranks(count_collectives, 2, tmp_path, str(tmp_path / 'out')):
        expected = [2 * (i % 10 == 0) + (i % 25 == 0) + (i % 50 == 0) for i in range(2, 101)]
        assert deltas == expected   # log entry: header + payload; stop check: 1; snapshot: 1


def ported_chainermn_style(comm, accumulate):
    """A ChainerMN-style script: multi-node optimizer and evaluator, gradient accumulation."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    from trainerlib.distributed import create_multi_node_optimizer
    model, optimizer = build('adam')
    optimizer = create_multi_node_optimizer(optimizer, comm)
    updater = StandardUpdater(SerialIterator(dataset(), 4, seed=1, comm=comm), optimizer,
                              model=model, accumulate=accumulate)
    trainer = Trainer(updater, (10, 'iteration'), out=os.path.join(
        os.environ.get('TMPDIR', '/tmp'), f'port-{os.getpid()}'), comm=comm)
    calls = []

    def counting_hook(state, bucket):
        calls.append(1)
        return allreduce_hook(state, bucket)

    updater.ddp('main').register_comm_hook(None, counting_hook)
    evaluator = E.create_multi_node_evaluator(
        E.Evaluator(SerialIterator(dataset(), 7, repeat=False, shuffle=False, comm=comm), model),
        comm)
    trainer.extend(evaluator, trigger=(10, 'iteration'))
    trainer.extend(E.LogReport(trigger=(10, 'iteration'), filename=None))
    trainer.run()
    entry = trainer.get_extension('LogReport').log[-1]
    return ([p.detach().clone() for p in model.parameters()], len(calls),
            entry['validation/main/loss'])


@pytest.mark.parametrize('accumulate', [1, 3])
def test_chainermn_spellings_and_one_gradient_allreduce_per_update(tmp_path, accumulate):
    (p0, calls0, val0), (p1, calls1, val1) = run_ranks(ported_chainermn_style, 2, tmp_path,
                                                       accumulate)
    assert all(torch.equal(a, b) for a, b in zip(p0, p1))
    assert calls0 == calls1 == 10     # no_sync: one bucket all-reduce per update, not per batch
    assert val0 == val1               # the same exact validation mean on both ranks
