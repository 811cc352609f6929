"""torch.compile: plain keys in snapshots and reports, resume across compile settings.

The plumbing tests compile with ``backend='eager'`` (TorchDynamo captures the graph and runs
it as captured: the numerics of the plain model, bit for bit, in a fraction of a second) or a
recording backend; one slow test compiles with inductor.
"""
from types import SimpleNamespace

import pytest
import torch
import torch._dynamo
from torch import nn

import extensions as E
from tests.dist_helpers import run_ranks
from trainerlib import Classifier, Trainer
from trainerlib.iterators import SerialIterator
from trainerlib.serialization import load_snapshot, load_state
from trainerlib.updaters import StandardUpdater

HALF, TOTAL = 8, 16


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()   # no compiled code or recompile count carried between tests
    yield
    torch._dynamo.reset()


def recording(graphs):
    """A torch.compile backend that runs the captured graph as is and records it."""
    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward
    return backend


def dataset(n=96):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 1, 8, 8, generator=g)
    return torch.utils.data.TensorDataset(x, (x.mean((1, 2, 3)) > 0).long())


def make_model(seed=0):
    torch.manual_seed(seed)
    return Classifier(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.2),
                                    nn.Flatten(), nn.Linear(4 * 8 * 8, 2)))


def build(out, stop, how, backend='eager', seed=0, evaluate=False):
    """A trainer whose model is plain (``how=None``), passed compiled (``'given'``) or
    compiled by ``StandardUpdater(compile=...)`` (``'option'``)."""
    model = make_model(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    target = torch.compile(model, backend=backend) if how == 'given' else model
    kwargs = {'compile': {'backend': backend}} if how == 'option' else {}
    updater = StandardUpdater(SerialIterator(dataset(), 12, seed=1), opt, target, **kwargs)
    trainer = Trainer(updater, (stop, 'iteration'), out=str(out))
    trainer.extend(E.LogReport(trigger=(4, 'iteration')))
    if evaluate:
        val = SerialIterator(dataset(40), 16, repeat=False, shuffle=False)
        trainer.extend(E.Evaluator(val, target), trigger=(4, 'iteration'))
    trainer.extend(E.snapshot(), trigger=(HALF, 'iteration'))
    return trainer, model


def final(trainer):
    params = {k: v.clone() for k, v in trainer.updater.get_model('main').state_dict().items()}
    log = [{k: v for k, v in e.items() if k != 'elapsed_time'}
           for e in trainer.get_extension('LogReport').log]
    return params, log


def assert_same(got, want):
    assert got[0].keys() == want[0].keys()
    assert all(torch.equal(got[0][k], want[0][k]) for k in got[0])
    assert got[1] == want[1]


@pytest.fixture(scope='module')
def plain_run(tmp_path_factory):
    trainer, _ = build(tmp_path_factory.mktemp('plain'), TOTAL, None, evaluate=True)
    trainer.run()
    return final(trainer)


@pytest.mark.parametrize('how', ['given', 'option'])
def test_compiled_run_reports_and_saves_under_the_plain_names(tmp_path, plain_run, how):
    graphs = []
    trainer, model = build(tmp_path, TOTAL, how, recording(graphs), evaluate=True)
    updater = trainer.updater
    assert updater.get_model('main') is model                 # the plain module is kept
    assert type(updater.ddp('main')).__name__ == 'OptimizedModule'   # ... and forwarded through
    trainer.run()
    assert graphs                                              # the forward was compiled
    assert_same(final(trainer), plain_run)                     # keys and values of the plain run
    assert 'validation/main/loss' in plain_run[1][0] and 'main/accuracy' in plain_run[1][0]
    saved = load_state(str(tmp_path / f'snapshot_iter_{HALF}'))['updater']['models']['main']
    assert list(saved) == list(make_model().state_dict())     # no '_orig_mod.'
    make_model().load_state_dict(saved)                        # strict: loads into a plain model
    if how == 'option':                                        # compiled aside, not in place
        count = len(graphs)
        model(*next(iter(torch.utils.data.DataLoader(dataset(), 4))))
        assert len(graphs) == count


@pytest.mark.parametrize('first, then', [('given', None), ('option', None), (None, 'given'),
                                         (None, 'option'), ('given', 'option')])
def test_resume_with_the_other_compile_setting_is_bit_identical(tmp_path, plain_run, first,
                                                                then):
    stopped, _ = build(tmp_path, HALF, first, evaluate=True)
    stopped.run()
    resumed, _ = build(tmp_path, TOTAL, then, seed=9, evaluate=True)   # other init: overwritten
    load_snapshot(str(tmp_path / f'snapshot_iter_{HALF}'), resumed)
    resumed.run()
    assert_same(final(resumed), plain_run)


def test_evaluator_evaluates_through_the_compiled_module(tmp_path):
    graphs = []
    model = make_model()
    val = SerialIterator(dataset(40), 16, repeat=False, shuffle=False)
    plain = E.Evaluator(val, model)()
    evaluator = E.Evaluator(val, torch.compile(model, backend=recording(graphs)))
    assert evaluator.get_target('main') is model
    assert evaluator() == plain == {'main/loss': plain['main/loss'],
                                    'main/accuracy': plain['main/accuracy']}
    assert graphs and model.training              # compiled in eval mode; the mode restored


def test_compile_with_loss_func_compiles_the_loss_function(tmp_path):
    graphs, results = [], []
    for kwargs in ({}, {'compile': {'backend': recording(graphs)}}):
        torch.manual_seed(0)
        net = nn.Linear(64, 2)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        updater = StandardUpdater(SerialIterator(dataset(), 12, seed=1), opt,
                                  loss_func=lambda x, t: nn.functional.cross_entropy(
                                      net(x.flatten(1)), t), **kwargs)
        Trainer(updater, (5, 'iteration'), out=str(tmp_path)).run()
        results.append([p.detach().clone() for p in net.parameters()])
    assert graphs and all(torch.equal(a, b) for a, b in zip(*results))


@pytest.mark.parametrize('value, error, match', [
    ('inductor', TypeError, r"False, True or a dict .* got 'inductor'"),
    (None, TypeError, 'got None'),
    ({'mdoe': 'max-autotune'}, ValueError, r"has no argument 'mdoe'; it takes .*mode"),
    ({'model': nn.Linear(1, 1)}, ValueError, "has no argument 'model'"),
    ({'backend': 'no-such-backend'}, ValueError, 'refused it: .*no-such-backend'),
    ({'mode': 'fastest'}, ValueError, 'refused it: .*fastest'),
])
def test_bad_compile_values_are_refused_with_the_fix(value, error, match):
    model = make_model()
    with pytest.raises(error, match=match):
        StandardUpdater(SerialIterator(dataset(), 12), torch.optim.SGD(model.parameters(), 0.1),
                        model, compile=value)


def test_compile_of_a_compiled_model_is_refused():
    model = make_model()
    with pytest.raises(ValueError, match='already compiled'):
        StandardUpdater(SerialIterator(dataset(), 12), torch.optim.SGD(model.parameters(), 0.1),
                        torch.compile(model, backend='eager'), compile=True)


def train_on_ranks(comm, out):
    """On 2 gloo ranks, 2 micro-batches per update, plain, given compiled and compile=:
    the weights, the layers forwarded through, the gradient all-reduces, log and keys."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    torch.set_num_threads(1)
    runs = {}
    for how in (None, 'given', 'option'):
        model = make_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        target = torch.compile(model, backend='eager') if how == 'given' else model
        kwargs = {'compile': {'backend': 'eager'}} if how == 'option' else {}
        updater = StandardUpdater(SerialIterator(dataset(), 6, seed=1, comm=comm), opt, target,
                                  accumulate=2, **kwargs)
        trainer = Trainer(updater, (6, 'iteration'), out=f'{out}/{how}', comm=comm)
        calls = []

        def counting_hook(state, bucket):
            calls.append(1)
            return allreduce_hook(state, bucket)
        updater.ddp('main').register_comm_hook(None, counting_hook)
        trainer.extend(E.LogReport(trigger=(3, 'iteration'), filename=None))
        trainer.run()
        layers, module = [], updater.ddp('main')
        while module is not model:
            layers.append(type(module).__name__)
            module = module._orig_mod if layers[-1] == 'OptimizedModule' else module.module
        runs[how] = ([p.detach().clone() for p in model.parameters()], layers, len(calls),
                     final(trainer)[1], list(updater.state_dict()['models']['main']))
    return runs


def test_data_parallel_compiled_forward_keeps_plain_keys(tmp_path):
    for runs in run_ranks(train_on_ranks, 2, tmp_path, str(tmp_path)):
        assert [r[1] for r in runs.values()] == [
            ['DistributedDataParallel'], ['DistributedDataParallel', 'OptimizedModule'],
            ['OptimizedModule', 'DistributedDataParallel']]   # compile=: torch.compile(DDP(m))
        want = runs[None]
        for params, _, calls, log, keys in runs.values():
            assert all(torch.equal(a, b) for a, b in zip(params, want[0]))
            assert calls == 6                  # one all-reduce per update: no_sync got through
            assert log == want[3] and keys == want[4] == list(make_model().state_dict())


@pytest.mark.slow
def test_inductor_run_resumes_bit_identically_and_loads_into_eager(tmp_path):
    """Inductor draws dropout masks from its own generator (seeded from torch's, so a resumed
    compiled run repeats them) and rounds differently: with ``fallback_random`` (eager's
    masks) the weights match eager's within ~1e-7 after 16 steps, not bit for bit."""
    def run(out, how, stop=TOTAL, resume_from=None):
        trainer, _ = build(tmp_path / out, stop, how, backend='inductor',
                           seed=9 if resume_from else 0)
        if resume_from:
            load_snapshot(str(tmp_path / resume_from / f'snapshot_iter_{HALF}'), trainer)
        trainer.run()
        return final(trainer)

    compiled = run('a', 'option')
    run('b', 'given', HALF)
    assert_same(run('b', 'option', resume_from='b'), compiled)    # compiled -> compiled
    params, log = run('c', None, resume_from='b')                  # compiled -> eager
    assert list(params) == list(compiled[0]) and len(log) == len(compiled[1])
    assert log[:HALF // 4] == compiled[1][:HALF // 4]             # the saved log, as saved
    import torch._inductor.config
    torch._dynamo.reset()
    with torch._inductor.config.patch(fallback_random=True):
        same_masks = run('d', 'option')
    torch._dynamo.reset()
    eager = run('e', None)
    assert all(torch.allclose(same_masks[0][k], eager[0][k], atol=1e-5) for k in eager[0])


@pytest.mark.slow
def test_bench_compiled_contestants_run_and_end_near_the_hand_loop(capsys):
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / 'tools' / 'bench_overhead.py'
    spec = importlib.util.spec_from_file_location('tool_bench_overhead', path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:
        assert bench.main(['--workloads', 'cnn', '--only', 'hand-compiled', 'default-compiled',
                           '--rounds', '1', '--cnn-iterations', '4', '--no-peers',
                           '--path-sgd-steps', '0', '--loader-batches', '0']) == 0
    finally:
        torch.set_num_threads(threads)
    rows = [line.split() for line in capsys.readouterr().out.splitlines()
            if line.startswith(('  hand-compiled ', '  default-compiled '))]
    assert len(rows) == 2 and all(row[4] in ('==', '~=') for row in rows)


def test_snapshot_object_of_a_compiled_module_has_the_plain_keys(tmp_path):
    """E.snapshot_object(torch.compile(net)) writes net's keys and loads into a plain net."""
    net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    trainer = SimpleNamespace(out=str(tmp_path), updater=SimpleNamespace(iteration=1))
    snapshot = E.snapshot_object(torch.compile(net, backend='eager'), 'net.pt',
                                 background=False)
    snapshot.write(trainer)
    assert set(load_state(str(tmp_path / 'net.pt'))) == {'0.weight', '0.bias'}
    plain = torch.nn.Sequential(torch.nn.Linear(3, 2))
    load_snapshot(str(tmp_path / 'net.pt'), plain)
    assert torch.equal(plain[0].weight, net[0].weight)
