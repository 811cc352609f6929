"""The optim_study recipe: iterator, path numbers, runs through ``main(argv)``, resume, errors."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip('matplotlib')

from recipes import optim_study  # noqa: E402
from recipes._optim_study_core import (METHODS, FullBatchIterator, RosenbrockPoint,  # noqa: E402
                                       rosenbrock)
from recipes._optim_study_report import backtrack, path_numbers  # noqa: E402
from recipes.launcher import schema_of  # noqa: E402
from trainerlib.config import load_config  # noqa: E402
from trainerlib.serialization import load_state  # noqa: E402
from recipe_checks import one_line_error, read_json, without_time  # noqa: E402

CONFIG = Path(optim_study.__file__).parent / 'configs' / 'optim_study.yaml'
TINY = ['--set', 'budget.first_order.steps=40', '--set', 'budget.first_order.log_every=5',
        '--set', 'budget.first_order.snapshot_every=10',
        '--set', 'budget.newton.steps=10', '--set', 'budget.newton.snapshot_every=5',
        '--set', 'budget.lbfgs.steps=10', '--set', 'budget.lbfgs.snapshot_every=5',
        '--set', 'oscillation_window=20']


def files_of(folder):
    return {p: p.read_bytes() for p in Path(folder).rglob('*') if p.is_file()}


def final_point(folder):
    """The point saved in the newest snapshot of one method's run."""
    newest = max(Path(folder).glob('snapshot_iter_*'), key=lambda p: int(p.name.split('_')[-1]))
    return load_state(str(newest))['updater']['models']['main']['point']


def test_shipped_config_is_the_defaults():
    schema = schema_of(optim_study)
    assert load_config(str(CONFIG), schema, []) == load_config(None, schema, [])
    defaults = load_config(None, schema, [])
    assert defaults['start'] == [-1.0, 1.5] and defaults['methods'] == list(METHODS)
    assert {defaults['lr'][m] for m in ('sgd', 'momentum_sgd', 'rmsprop', 'adam')} == {0.002}


def test_full_batch_iterator_bookkeeping_and_round_trip():
    it = FullBatchIterator(epoch_size=3)
    assert it.previous_epoch_detail is None and it.epoch_detail == 0 and not it.is_new_epoch
    seen = []
    for _ in range(4):
        step = next(it)
        seen.append((step, it.epoch, it.epoch_detail, it.previous_epoch_detail, it.is_new_epoch))
    assert seen == [(1, 0, 1 / 3, 0.0, False), (2, 0, 2 / 3, 1 / 3, False),
                    (3, 1, 1.0, 2 / 3, True), (4, 1, 4 / 3, 1.0, False)]
    copy = FullBatchIterator(epoch_size=3)
    copy.load_state_dict(it.state_dict())
    for _ in range(5):
        assert next(copy) == next(it)
        assert (copy.epoch_detail, copy.previous_epoch_detail, copy.is_new_epoch) == \
            (it.epoch_detail, it.previous_epoch_detail, it.is_new_epoch)
    one = FullBatchIterator()          # default: one epoch per step (the whole objective)
    next(one)
    assert (one.epoch, one.is_new_epoch, one.epoch_detail) == (1, True, 1.0)
    with pytest.raises(ValueError, match='epoch_size'):
        FullBatchIterator(0)


def test_rosenbrock_point():
    model = RosenbrockPoint([0.0, 0.0], 1.0, 100.0)
    assert model().item() == 1.0 and model.minimum.tolist() == [1.0, 1.0]
    assert rosenbrock(torch.tensor([2.0, 4.0]), 2.0, 5.0).item() == 0.0   # min at (a, a^2)


def test_backtrack_and_path_numbers():
    assert backtrack(np.array([3.0, 2.0, 1.0, 0.0])) == 0.0            # monotone
    assert backtrack(np.array([1.0, -1.0, 0.5, 0.0])) == pytest.approx(3.0)  # 2 + 1.5 + .5 - 1
    # r = y - x^2: start on the floor's upper side, cross twice, then settle at the minimum
    path = np.array([[0.0, 0.5], [0.0, -0.5], [0.0, 0.25], [0.999, 0.998], [1.0, 1.0005],
                     [1.0, 1.0 + 2e-3], [1.0, 1.0]])
    numbers = path_numbers(path, (1.0, 1.0), 1e-3, window=2)
    assert numbers['steps_to_tolerance'] == 4 and numbers['within_tolerance_from'] == 6
    assert numbers['final_distance'] == 0.0 and numbers['final_point'] == [1.0, 1.0]
    osc = numbers['oscillation']
    assert osc['window'] == 2 and osc['floor_crossings'] == 2
    assert osc['backtrack'] == pytest.approx(1.0 + 0.75 - 0.25)
    assert osc['backtrack_all_steps'] > osc['backtrack']
    never = path_numbers(path[:3], (1.0, 1.0), 1e-3, window=10)
    assert never['steps_to_tolerance'] is None and never['within_tolerance_from'] is None
    diverged = path_numbers(np.array([[0.0, 0.0], [5.0, 5.0], [np.inf, np.nan]]), (1, 1),
                            1e-3, window=10)
    assert math.isnan(diverged['final_distance']) and diverged['final_point'] is None
    assert diverged['min_distance'] == pytest.approx(math.sqrt(2))


def test_tiny_study_end_to_end(tmp_path, capsys):
    out = tmp_path / 'run'
    assert optim_study.main(TINY + ['--set', 'lr.newton=1.0', '--out', str(out)]) == 0
    stdout = capsys.readouterr().out
    config = yaml.safe_load((out / 'config.yaml').read_text())
    assert config['recipe'] == 'optim_study' and config['lr']['newton'] == 1.0
    summary = read_json(out / 'summary.json')
    assert list(summary['methods']) == list(METHODS)
    assert summary['function']['minimum'] == [1.0, 1.0] and summary['start'] == [-1.0, 1.5]
    assert (out / 'optim_study.png').stat().st_size > 20_000
    for method, m in summary['methods'].items():
        steps = 40 if method in ('sgd', 'momentum_sgd', 'rmsprop', 'adam') else 10
        log = read_json(out / method / 'log')
        every = 5 if steps == 40 else 1
        assert [e['iteration'] for e in log] == list(range(every, steps + 1, every))
        assert {'main/loss', 'main/x', 'main/y', 'main/distance'} <= set(log[0])
        assert m['status'] == 'finished' and m['steps'] == steps
        # the summary is that of the final weights (those of the last snapshot)
        point = final_point(out / method)
        assert m['final_point'] == point.tolist()
        assert m['final_distance'] == pytest.approx(math.dist(point.tolist(), (1.0, 1.0)))
        assert m['final_loss'] == pytest.approx(rosenbrock(point, 1.0, 100.0).item())
        assert m['oscillation']['window'] == 20 if steps == 40 else 10
        assert f"{m['function_evaluations']:>7}" in stdout
    newton = summary['methods']['newton']
    log = read_json(out / 'newton' / 'log')      # one entry per step: exact values
    assert log[-1]['main/distance'] == pytest.approx(newton['final_distance'], abs=1e-15)
    assert newton['steps_to_tolerance'] == 5            # full Newton steps from (-1, 1.5)
    assert [e['main/distance'] < 1e-3 for e in log].index(True) + 1 == 5
    assert newton['newton'] == {'non_descent_steps': 0, 'fallback_steps': 0}
    assert summary['methods']['lbfgs']['function_evaluations'] > 10   # line-search evaluations
    assert summary['verdict']['sgd_backtracks_most'] is True
    assert summary['verdict']['fewest_steps'] == 'newton'


def test_diverged_and_stopped_methods_do_not_stop_the_study(tmp_path, capsys):
    argv = TINY + ['--set', 'methods=[sgd, newton]', '--set', 'lr.sgd=0.5',
                   '--set', 'newton.require_descent=true', '--set', 'newton.fallback=raise',
                   '--out', str(tmp_path)]
    assert optim_study.main(argv) == 0
    capsys.readouterr()
    summary = read_json(tmp_path / 'summary.json')
    sgd, newton = summary['methods']['sgd'], summary['methods']['newton']
    assert sgd['status'] == 'diverged' and sgd['final_distance'] is None
    assert 'methods.sgd.final_distance' in summary['non_finite']
    assert newton['status'] == 'stopped' and newton['steps'] == 3   # H indefinite at step 4
    assert 'not a descent direction' in newton['error']


def test_resume_gives_the_same_study(tmp_path, capsys):
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    assert optim_study.main(TINY + ['--out', str(straight)]) == 0
    half = ['--set', 'budget.first_order.steps=20', '--set', 'budget.newton.steps=5',
            '--set', 'budget.lbfgs.steps=5']
    assert optim_study.main(TINY + half + ['--out', str(resumed)]) == 0
    assert [e['iteration'] for e in read_json(resumed / 'adam' / 'log')] == [5, 10, 15, 20]
    first_part = {method: read_json(resumed / method / 'log') for method in METHODS}
    assert optim_study.main(TINY + ['--out', str(resumed), '--resume']) == 0
    capsys.readouterr()
    for method in METHODS:
        # it continued from the snapshots: the first part of the log, elapsed times included,
        # is the one written before the resume (nothing random here, so a run from scratch
        # would give the same numbers: the times tell them apart)
        log = read_json(resumed / method / 'log')
        assert log[:len(first_part[method])] == first_part[method]
        assert without_time(read_json(resumed / method / 'log')) == \
            without_time(read_json(straight / method / 'log'))
        assert torch.equal(final_point(resumed / method), final_point(straight / method))
    assert without_time(read_json(resumed / 'summary.json')) == \
        without_time(read_json(straight / 'summary.json'))
    # resuming a finished study re-reports it without stepping further
    before = read_json(resumed / 'summary.json')
    assert optim_study.main(TINY + ['--out', str(resumed), '--resume']) == 0
    capsys.readouterr()
    assert without_time(read_json(resumed / 'summary.json')) == without_time(before)


@pytest.mark.parametrize('argv, fragments', [
    (['--set', 'lr.sgd=-0.1'], ["'lr.sgd'", '> 0']),
    (['--set', 'lr.adagrad=0.1'], ["unknown config key 'lr.adagrad'", 'adam, lbfgs']),
    (['--set', 'methods=[sgd, bfgs]'], ["'methods'", 'sgd, momentum_sgd']),
    (['--set', 'methods=[]'], ["'methods'", 'non-empty']),
    (['--set', 'methods=[adam, adam]'], ["'methods'", 'distinct']),
    (['--set', 'start=[1.0]'], ["'start'", 'two finite numbers']),
    (['--set', 'start=[a, 1]'], ["'start'", 'two finite numbers']),
    (['--set', 'start=1.5'], ["'start'", 'expects list']),
    (['--set', 'momentum=1'], ["'momentum'", '[0, 1)']),
    (['--set', 'newton.damping=-1'], ["'newton.damping'", '>= 0']),
    (['--set', 'newton.fallback=pinv'], ["'newton.fallback'", "'gradient', 'raise'"]),
    (['--set', 'lbfgs.line_search=armijo'], ["'lbfgs.line_search'", "'strong_wolfe'"]),
    (['--set', 'budget.newton.steps=0'], ["'budget.newton.steps'", '>= 1']),
    (['--set', 'budget.first_order.steps=many'], ["'budget.first_order.steps'", 'expects int']),
    (['--set', 'tolerance=0'], ["'tolerance'", '> 0']),
    (['--set', 'function.b=0'], ["'function.b'", '> 0']),
    (['--set', 'dtype=float16'], ["'dtype'", "'float64', 'float32'"]),
    (['--set', 'threads=-1'], ["'threads'", '>= 0']),
    (['--seed', '1'], ["--seed", "no 'seed' setting"]),
    (['--config', '/nonexistent/study.yaml'], ['/nonexistent/study.yaml', 'not found']),
])
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, argv, fragments):
    (tmp_path / 'notes.txt').write_text('mine')
    before = files_of(tmp_path)
    assert optim_study.main(argv + ['--out', str(tmp_path)]) == 2
    line = one_line_error(capsys)
    for fragment in fragments:
        assert fragment in line
    assert files_of(tmp_path) == before  # nothing written, nothing changed


def test_existing_run_is_kept(tmp_path, capsys):
    argv = TINY + ['--set', 'methods=[newton]', '--out', str(tmp_path)]
    assert optim_study.main(argv) == 0
    capsys.readouterr()
    before = files_of(tmp_path)
    assert optim_study.main(argv) == 2
    assert 'already holds a run' in one_line_error(capsys)
    # resuming with another step size or start point is refused before anything runs
    for change, key in (('lr.newton=1.0', "'lr.newton' is 1.0 but the run"),
                        ('start=[-1.5, 2]', "'start'")):
        assert optim_study.main(argv + ['--resume', '--set', change]) == 2
        assert key in one_line_error(capsys)
    assert files_of(tmp_path) == before


@pytest.mark.slow
def test_default_study(tmp_path, capsys):
    """The default run (about 40 s): the seed's observations and the exercise's comparison."""
    assert optim_study.main(['--out', str(tmp_path)]) == 0
    capsys.readouterr()
    m = read_json(tmp_path / 'summary.json')['methods']
    # SGD goes back and forth across the valley most in the first 1000 steps
    backtracks = {k: v['oscillation']['backtrack'] for k, v in m.items()}
    assert backtracks['sgd'] > 1.5 * backtracks['momentum_sgd'] > 100 * backtracks['rmsprop']
    assert backtracks['sgd'] > 1000 * backtracks['adam']
    # second-order and quasi-Newton methods need tens of steps, first-order ones hundreds
    # to thousands (RMSprop at a constant lr 2e-3 jitters just outside 1e-3)
    assert m['newton']['steps_to_tolerance'] < 60 and m['lbfgs']['steps_to_tolerance'] < 60
    assert m['newton']['final_distance'] < 1e-12 and m['lbfgs']['final_distance'] < 1e-5
    assert 300 < m['momentum_sgd']['steps_to_tolerance'] < 2000
    assert m['adam']['steps_to_tolerance'] > 5000 and m['adam']['final_distance'] < 1e-4
    assert m['rmsprop']['steps_to_tolerance'] is None and m['rmsprop']['final_distance'] < 0.01
    # lr 2e-3 is above 2 / lambda_max of the Hessian at (1, 1) (1.997e-3): SGD gets within
    # 1e-3 but does not stay
    assert m['sgd']['steps_to_tolerance'] is not None and m['sgd']['final_distance'] > 1e-3
    assert m['newton']['newton']['non_descent_steps'] == 2
