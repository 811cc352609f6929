"""tools/bench_overhead.py with tiny settings: the table, the weight check, the peers being
optional, the clock's window, --profile and the --check-sync logic (on CPU with a stand-in
for CUDA's sync detector). Times are not checked: they are noise on a shared machine."""
import importlib.util
import os
import re
from pathlib import Path

import pytest
import torch

TOOLS = Path(__file__).resolve().parents[1] / 'tools'
spec = importlib.util.spec_from_file_location('tool_bench_overhead', TOOLS / 'bench_overhead.py')
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)     # puts tools/ on sys.path for its _bench_* modules

import _bench_clock  # noqa: E402
import _bench_common  # noqa: E402
import _bench_own  # noqa: E402
import _bench_peers  # noqa: E402
import _bench_pieces  # noqa: E402
import _bench_sync  # noqa: E402
import bench_path_sgd  # noqa: E402

TINY = ['--rounds', '1', '--iterations', '20', '--cnn-iterations', '4', '--snapshot-every', '10',
        '--path-sgd-steps', '1', '--loader-batches', '5']
OWN = list(_bench_own.own_contestants())
ROW = re.compile(r'^  (\S+) +([\d.]+) +([\d.]+) \(([\d.]+)-([\d.]+)\)  (.{14}) ')


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def rows(out):
    """{workload: {contestant: (us, ratio, weights)}} parsed from the printed tables."""
    tables, current = {}, None
    for line in out.splitlines():
        if line.startswith(('mlp: ', 'cnn: ')):
            current = tables.setdefault(line[:3], {})
        match = ROW.match(line)
        if match and current is not None:
            current[match[1]] = (float(match[2]), float(match[3]), match[6].strip())
    return tables


def hand_rows(out):
    """The description at the end of each table's 'hand' row."""
    return [line.split('  ')[-1].strip() for line in out.splitlines() if line.startswith('  hand ')]


def no_peers(monkeypatch):
    monkeypatch.setattr(_bench_peers, 'missing_peers', lambda: list(_bench_peers.PEERS.values()))


def test_tiny_run_prints_every_section_and_checks_weights(capsys, monkeypatch):
    no_peers(monkeypatch)             # CI has no peers; they are tested below when installed
    allowed = os.sched_getaffinity(0)
    assert bench.main(TINY) == 0
    out = capsys.readouterr().out
    assert f'torch {torch.__version__}' in out and 'torch threads 1' in out
    assert 'timed threads pinned to CPU' in out and 'one malloc arena' in out
    assert os.sched_getaffinity(0) == allowed       # the test process is unpinned again
    assert 'rounds: 1 in shuffled order' in out
    assert 'missing: pytorch_pfn_extras, ignite, lightning' in out
    tables = rows(out)
    assert list(tables) == ['mlp', 'cnn']
    assert hand_rows(out) == [_bench_own.DESCRIPTIONS['hand']] * 2
    assert 'mlp: MLP 64-64-10, batch 32; 20 iterations per run, timed from step 2 to 20 with 0 ' \
           'log lines and 1 snapshots/evaluations (every 10) inside' in out
    assert 'with 0 log lines and 0 snapshots/evaluations (every 10) inside -- too few' in out
    for table in tables.values():
        assert list(table) == OWN
        assert table['hand'][1] > 0 and table['hand'][2] == 'reference'
        assert all(weights == '== hand' for _, _, weights in list(table.values())[1:])
        assert all(us > 0 for us, _, _ in table.values())
    assert out.count('SerialIterator + concat_examples') == 2
    assert 'ratio path_sgd/sgd per step (median of pairs):' in out and 'load average at end' in out


def test_pieces_end_with_the_hand_loops_weights(capsys):
    argv = ['--pieces', '--workloads', 'mlp', '--rounds', '1', '--iterations', '20',
            '--path-sgd-steps', '0', '--loader-batches', '0']
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert hand_rows(out) == [_bench_pieces.DESCRIPTIONS['hand']]   # the pieces' own reference
    table = rows(out)['mlp']
    assert list(table) == list(_bench_pieces.piece_contestants())
    assert all(weights == '== hand' for _, _, weights in list(table.values())[1:])


def test_a_contestant_with_other_weights_fails_the_run(capsys, monkeypatch):
    no_peers(monkeypatch)

    def off_by_a_little(w, n, s):
        run = _bench_own.hand(w, n, s)
        run.params[-1][0] += 1e-6
        return run

    own = _bench_own.own_contestants
    monkeypatch.setattr(_bench_own, 'own_contestants', lambda: {**own(), 'bad': off_by_a_little})
    assert bench.main(TINY[:-4] + ['--workloads', 'mlp', '--path-sgd-steps', '0',
                                   '--loader-batches', '0', '--only', 'bare', 'bad']) == 1
    captured = capsys.readouterr()
    table = rows(captured.out)['mlp']
    assert list(table) == ['hand', 'bare', 'bad']
    assert table['bare'][2] == '== hand' and table['bad'][2].startswith('DIFFER')
    assert "did not end with the hand loop's weights" in captured.err


@pytest.mark.parametrize('peer', list(_bench_peers.PEERS))
def test_installed_peers_end_with_the_hand_loops_weights(capsys, peer):
    pytest.importorskip(_bench_peers.PEERS[peer])
    names = [name for name in _bench_peers.peer_contestants() if name.split('-')[0] == peer]
    assert len(names) >= 2
    assert bench.main(TINY[:-4] + ['--workloads', 'mlp', '--path-sgd-steps', '0',
                                   '--loader-batches', '0', '--only', *names]) == 0
    table = rows(capsys.readouterr().out)['mlp']
    assert list(table) == ['hand', *names]
    assert all(table[name][2] == '== hand' for name in names)


class FakeTime:
    """A shared clock that only moves when a fake iteration says so."""

    def __init__(self, monkeypatch):
        self.t, self.log = 0.0, []
        monkeypatch.setattr(_bench_clock, '_timer', lambda: self.t)

    def contestant(self, cost, fail_at=None):
        """A run whose every iteration takes ``cost`` fake seconds."""
        def run(w, n, s):
            torch.manual_seed(0)
            model = torch.nn.Linear(1, 1)
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            clock = _bench_clock.Clock(opt, n, 1)
            for i in range(n):
                if i == fail_at:
                    raise ValueError('contestant failed')
                self.t += cost
                self.log.append(cost)
                opt.step()
            return _bench_common.finish(clock, model)
        return run


def test_lockstep_runs_take_turns_and_time_only_their_own_iterations(monkeypatch):
    fake = FakeTime(monkeypatch)
    hand, other = _bench_clock.lockstep(lambda: fake.contestant(1.0)(None, 30, None),
                                         lambda: fake.contestant(1.5)(None, 30, None))
    assert len(fake.log) == 60
    assert all(a != b for a, b in zip(fake.log[1:], fake.log[2:]))  # strictly alternating
    assert hand.per_iteration == 1.0 and other.per_iteration == 1.5


def test_lockstep_reraises_a_failure_without_hanging(monkeypatch):
    fake = FakeTime(monkeypatch)
    with pytest.raises(ValueError, match='contestant failed'):
        _bench_clock.lockstep(lambda: fake.contestant(1.0)(None, 30, None),
                               lambda: fake.contestant(1.5, fail_at=5)(None, 30, None))
    with pytest.raises(ValueError, match='contestant failed'):
        _bench_clock.lockstep(lambda: fake.contestant(1.0, fail_at=5)(None, 30, None),
                               lambda: fake.contestant(1.5)(None, 30, None))
    assert fake.log.count(1.0) == 30 + 5 and fake.log.count(1.5) == 5 + 30


def test_measure_pairs_every_contestant_with_a_hand_run(monkeypatch):
    fake = FakeTime(monkeypatch)
    contestants = {'hand': fake.contestant(1.0), 'cheap': fake.contestant(1.01),
                   'costly': fake.contestant(1.5)}
    result = bench.measure(None, contestants, 20, 3, None)
    assert len(fake.log) == 3 * 20 + 3 * 3 * 2 * 20   # warm-ups, then 3 pairs per round
    assert {name: r['ratio'] for name, r in result.items()} == pytest.approx(
        {'hand': 1.0, 'cheap': 1.01, 'costly': 1.5})
    assert all(r['differ'] is None for r in result.values())


def test_path_sgd_steps_are_paired_and_timed_in_turn():
    calls = []

    def timer():   # every reading one second later: each step takes 2 s, its opt.step() 1 s
        calls.append(None)
        return float(len(calls))
    med = bench_path_sgd.measure(steps=3, rounds=2, timer=timer)
    assert len(calls) == 2 * (1 + 3) * 2 * 3   # rounds x (warm-up + pairs) x 2 steps x 3 reads
    assert med['sgd'] == med['path_sgd'] == {'step': 2.0, 'opt': 1.0}
    assert med['ratio'] == {'step': 1.0}
    lines = bench_path_sgd.report(med, 3, 2)
    assert lines[-1] == '  ratio path_sgd/sgd per step (median of pairs): 1.000 (target <= 1.3)'


@pytest.mark.parametrize('iterations, period, first', [
    (2, 100, 1), (20, 100, 2), (300, 100, 100), (2000, 100, 200), (2000, 50, 200), (250, 100, 50),
])
def test_clock_window_skips_warm_up_and_is_a_whole_number_of_periods(iterations, period, first):
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    clock = _bench_clock.Clock(opt, iterations, period)
    assert (clock.first, clock.last) == (first, iterations)
    for _ in range(iterations - 1):
        opt.step()
    with pytest.raises(RuntimeError, match='expected'):
        clock.per_iteration()
    opt.step()
    assert clock.per_iteration() > 0


@pytest.mark.parametrize('iterations, every, inside', [
    (300, 100, 2), (100, 100, 0), (300, 50, 5), (2000, 100, 18), (20, 10, 1),
])
def test_periodic_events_inside_the_timed_window(iterations, every, inside):
    period = _bench_clock.period_of(_bench_common.LOG_EVERY, every)
    assert _bench_clock.events_in_window(iterations, period, every) == inside


def test_profile_names_trainerlib_functions(capsys):
    assert bench.main(['--profile', 'default', '--iterations', '50', '--no-peers']) == 0
    out = capsys.readouterr().out
    assert "cProfile of 'default' vs hand on mlp, 50 iterations" in out
    assert '(1) own time per iteration' in out and '(2) trainerlib/extensions' in out
    assert 'trainerlib/trainer.py' in out and 'extensions/log_report.py' in out


@pytest.mark.parametrize('argv, message', [
    (['--only', 'nobody'], 'unknown contestant(s) nobody'),
    (['--profile', 'nobody'], 'unknown contestant(s) nobody'),
])
def test_unknown_contestant_is_one_error_line(capsys, argv, message):
    assert bench.main(argv + ['--no-peers']) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and message in err and err.count('\n') == 1


@pytest.mark.parametrize('argv', [['--iterations', '1'], ['--rounds', '0'],
                                  ['--snapshot-every', '0'], ['--workloads', 'rnn'],
                                  ['--cpu', '4096']])
def test_bad_settings_exit_2(argv):
    with pytest.raises(SystemExit) as info:
        bench.main(argv)
    assert info.value.code == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason='CUDA present: the real check runs')
def test_check_sync_says_it_skipped_without_cuda(capsys):
    assert bench.main(['--check-sync']) == 0
    assert capsys.readouterr().out == 'sync check: skipped, CUDA is not available\n'


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_check_sync_on_cuda(capsys):
    assert bench.main(['--check-sync']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and all(': ok: no sync' in line for line in lines[1:])


class FakeSyncDebug:
    """Stands in for torch.cuda.set_sync_debug_mode on CPU: in 'error' mode, converting a
    tensor to a Python value raises as CUDA would on a synchronizing call."""

    def __init__(self, monkeypatch):
        self.mode, self.modes = 'default', []
        for name in ('item', 'tolist', '__float__', '__int__', '__bool__'):
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self.guard(original))

    def guard(self, original):
        def checked(tensor, *args, **kwargs):
            if self.mode == 'error':
                raise RuntimeError('called a synchronizing CUDA operation')
            return original(tensor, *args, **kwargs)
        return checked

    def __call__(self, mode):
        self.mode = mode
        self.modes.append(mode)


def test_sync_check_passes_the_default_stack_and_catches_a_sync(monkeypatch):
    torch.set_num_threads(1)
    w = _bench_common.make_workload('mlp')
    fake = FakeSyncDebug(monkeypatch)
    result = _bench_sync.check_default_stack(w, 120, 'cpu', True, fake)
    assert result == 'ok: no sync in updates 6-120 and in the extensions of their non-log ' \
                     'iterations (2 log lines)'
    assert fake.modes.count('error') == 120 - _bench_sync.WARM_UP + 1 and fake.mode == 'default'

    def syncs_every_iteration(trainer):
        return trainer.observation['main/loss'].item()

    fake = FakeSyncDebug(monkeypatch)
    result = _bench_sync.check_default_stack(w, 120, 'cpu', False, fake,
                                             extra=[syncs_every_iteration])
    assert result.startswith('SYNC after 6 completed updates: called a synchronizing CUDA '
                             'operation (')
    assert 'test_bench_overhead.py' in result and 'syncs_every_iteration' in result
    assert fake.mode == 'default'


def test_sync_check_reports_other_failures_instead_of_crashing(monkeypatch):
    torch.set_num_threads(1)

    def breaks(trainer):
        if trainer.updater.iteration == 7:
            raise ValueError('broken extension')

    result = _bench_sync.check_default_stack(_bench_common.make_workload('mlp'), 20, 'cpu',
                                             True, FakeSyncDebug(monkeypatch), extra=[breaks])
    assert result.startswith('ERROR ValueError after 7 completed updates: broken extension (')
    assert 'in breaks' in result


def test_ddp_mode_compares_the_default_stack_with_a_hand_ddp_loop(capsys):
    assert bench.main(['--ddp', '--iterations', '220', '--rounds', '1']) == 0
    out = capsys.readouterr().out
    assert '(h) DDP on 2 gloo ranks' in out and 'hand DDP loop' in out
    ratio = float(re.search(r'default under DDP .* ratio (\d+\.\d+)', out).group(1))
    assert ratio > 0
