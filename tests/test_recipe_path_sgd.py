"""The path_sgd recipe end to end, in-process through ``recipes.path_sgd.main(argv)``."""
import csv
import math
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip('sklearn')      # the digits data set comes with scikit-learn
pytest.importorskip('matplotlib')   # the comparison plot

from recipes import path_sgd  # noqa: E402
from recipes._path_sgd_nets import build_mlp, unbalance  # noqa: E402
from recipes.launcher import schema_of  # noqa: E402
from trainerlib.config import load_config  # noqa: E402
from trainerlib.optimizers import path_gammas  # noqa: E402
from recipe_checks import one_line_error, read_json, without_time  # noqa: E402

CONFIG = Path(path_sgd.__file__).parent / 'configs' / 'path_sgd.yaml'
# digits (1,438 train / 359 test), a small net, 2 epochs: seconds for the whole grid
TINY = ['--set', 'dataset=digits', '--set', 'model.hidden=16', '--set', 'train.epochs=2',
        '--set', 'lr.path_sgd=0.1', '--set', 'lr.adagrad=0.03']
CELLS = [f'{i}_{o}' for i in ('balanced', 'unbalanced') for o in ('sgd', 'adagrad', 'path_sgd')]


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """The nets are tiny: extra threads only add contention on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)




def test_shipped_config_is_the_defaults():
    schema = schema_of(path_sgd)
    assert load_config(str(CONFIG), schema, []) == load_config(None, schema, [])
    assert yaml.safe_load(CONFIG.read_text())['recipe'] == 'path_sgd'


@pytest.mark.parametrize('fraction', [0.5, 2.0])
def test_unbalance_keeps_the_function_and_rescales_gammas(fraction):
    torch.manual_seed(0)
    x = torch.randn(32, 20, dtype=torch.float64)
    balanced = build_mlp(20, 12, 2, 5, seed=3).double()
    assert all(torch.equal(a, b) for a, b in zip(balanced.parameters(),
                                                  build_mlp(20, 12, 2, 5, seed=3).parameters()))
    unbalanced = build_mlp(20, 12, 2, 5, seed=3).double()
    factors = unbalance(unbalanced, fraction, 10., 1., seed=1)
    torch.testing.assert_close(unbalanced(x), balanced(x), rtol=1e-12, atol=1e-12)
    assert len(factors) == 2
    for c in factors:
        touched = c != 1
        assert 0 < int(touched.sum()) <= round(fraction * 12)
        assert c[touched].min() > 0 and c.max() > 5   # factors around 10, not tiny noise
    first = [m for m in unbalanced if isinstance(m, torch.nn.Linear)][0]
    ref = [m for m in balanced if isinstance(m, torch.nn.Linear)][0]
    torch.testing.assert_close(first.weight, ref.weight * factors[0].unsqueeze(1))
    # path norm is invariant; γ of an edge into unit k scales by 1/c_k² (ALGORITHMS.md §1.6)
    g_b, g_u = path_gammas(balanced, (20,)), path_gammas(unbalanced, (20,))
    torch.testing.assert_close(g_u[first.weight], g_b[ref.weight] / factors[0].unsqueeze(1) ** 2)


def test_tiny_grid_on_digits(tmp_path, capsys):
    out = tmp_path / 'run'
    assert path_sgd.main(TINY + ['--out', str(out)]) == 0
    stdout = capsys.readouterr().out
    summary = read_json(out / 'summary.json')
    assert yaml.safe_load((out / 'config.yaml').read_text())['recipe'] == 'path_sgd'
    assert summary['train_size'] == 1438 and summary['test_size'] == 359
    assert [f"{r['init']}_{r['optimizer']}" for r in summary['table']] == CELLS
    for name in CELLS:
        cell = out / name
        final, log = read_json(cell / 'final.json'), read_json(cell / 'log')
        assert final['status'] == 'finished' and final['diverged_at_iteration'] is None
        # an epoch ends at the batch that crosses the end of the data (as in Chainer)
        assert [(e['epoch'], e['iteration']) for e in log] == [(1, 15), (2, 29)]
        assert final['iterations'] == 29 and final['epochs'] == 2
        assert sorted(p.name for p in cell.glob('snapshot_iter_*')) == \
            ['snapshot_iter_15', 'snapshot_iter_29']
        assert final['train_loss'] == log[-1]['train/main/loss']
        assert final['test_accuracy'] == log[-1]['validation/main/accuracy']
        assert summary['cells'][name]['train_loss'] == final['train_loss']
        assert final['train_loss'] < final['initial']['train_loss'] or name == 'unbalanced_sgd'
    # epoch 0: both inits are the same function
    b, u = (read_json(out / f'{i}_sgd' / 'final.json')['initial'] for i in ('balanced',
                                                                             'unbalanced'))
    assert b['test_accuracy'] == u['test_accuracy']
    assert b['train_loss'] == pytest.approx(u['train_loss'], rel=1e-5)
    # Path-SGD does not see the rescaling: the same curve up to float32 rounding
    head = summary['headline']['path_sgd']
    assert head['max_rel_train_loss_gap'] < 1e-4
    assert abs(head['test_accuracy_gap']) <= 1 / 359 + 1e-9
    # the tables agree with the summary
    rows = list(csv.DictReader((out / 'results.csv').open()))
    assert [(r['init'], r['optimizer'], r['status']) for r in rows] == \
        [(r['init'], r['optimizer'], r['status']) for r in summary['table']]
    for row, ref in zip(rows, summary['table']):
        assert float(row['train_loss']) == ref['train_loss']
        assert float(row['lr']) == ref['lr']
    markdown = (out / 'results.md').read_text()
    assert markdown.count('\n| ') == 6 and '| unbalanced | path_sgd | 0.1 | finished |' in markdown
    assert (out / 'comparison.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert 'unbalanced  path_sgd' in stdout and 'Path-SGD: unbalanced vs balanced' in stdout


def test_float64_path_sgd_is_exactly_invariant(tmp_path, capsys):
    out = tmp_path / 'run'
    argv = TINY + ['--set', 'dtype=float64', '--set', 'grid.optimizers=[path_sgd]',
                   '--out', str(out)]
    assert path_sgd.main(argv) == 0
    summary = read_json(out / 'summary.json')
    assert set(summary['cells']) == {'balanced_path_sgd', 'unbalanced_path_sgd'}
    assert summary['headline']['path_sgd']['max_rel_train_loss_gap'] < 1e-12
    assert summary['headline']['path_sgd']['test_accuracy_gap'] == 0


def test_a_diverged_cell_is_reported_and_the_grid_goes_on(tmp_path, capsys):
    out = tmp_path / 'run'
    argv = TINY + ['--set', 'lr.sgd=1e6', '--set', 'grid.inits=[unbalanced]',
                   '--set', 'grid.optimizers=[sgd, path_sgd]', '--out', str(out)]
    assert path_sgd.main(argv) == 0
    stdout = capsys.readouterr().out
    summary = read_json(out / 'summary.json')
    sgd, psgd = summary['cells']['unbalanced_sgd'], summary['cells']['unbalanced_path_sgd']
    assert sgd['status'] == 'diverged' and 1 <= sgd['diverged_at_iteration'] <= 29
    assert sgd['train_loss'] is None and sgd['test_accuracy'] is None
    assert 'NaN' in sgd['error'] or 'Inf' in sgd['error']
    assert f"diverged at iteration {sgd['diverged_at_iteration']}" in stdout
    assert psgd['status'] == 'finished' and psgd['iterations'] == 29
    assert not list((out / 'unbalanced_sgd').glob(f"snapshot_iter_{sgd['diverged_at_iteration']}"))
    rows = {r['optimizer']: r for r in csv.DictReader((out / 'results.csv').open())}
    assert rows['sgd']['status'] == 'diverged' and rows['sgd']['train_loss'] == ''
    assert rows['sgd']['diverged_at_iteration'] == str(sgd['diverged_at_iteration'])
    assert (out / 'comparison.png').is_file()


def test_resume_continues_the_grid_exactly(tmp_path, capsys):
    base = TINY + ['--set', 'lr.sgd=1e6', '--set', 'grid.optimizers=[sgd, path_sgd]']
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    assert path_sgd.main(base + ['--out', str(straight)]) == 0
    assert path_sgd.main(base + ['--set', 'train.epochs=1', '--out', str(resumed)]) == 0
    assert [e['iteration'] for e in read_json(resumed / 'balanced_path_sgd' / 'log')] == [15]
    assert path_sgd.main(base + ['--out', str(resumed), '--resume']) == 0
    capsys.readouterr()
    for name in ('balanced_sgd', 'balanced_path_sgd', 'unbalanced_sgd', 'unbalanced_path_sgd'):
        assert without_time(read_json(resumed / name / 'final.json')) == \
            without_time(read_json(straight / name / 'final.json'))
        if (straight / name / 'log').exists():   # a cell diverged in epoch 1 logged nothing
            assert without_time(read_json(resumed / name / 'log')) == \
                without_time(read_json(straight / name / 'log'))
    summary = read_json(resumed / 'summary.json')
    assert without_time(summary) == without_time(read_json(straight / 'summary.json'))
    assert {c['status'] for c in summary['cells'].values()} == {'finished', 'diverged'}
    assert (resumed / 'results.csv').read_text() == (straight / 'results.csv').read_text()



@pytest.mark.parametrize('argv, fragments', [
    (['--set', 'lr.adam=0.1'], ["unknown config key 'lr.adam'", 'adagrad, path_sgd, sgd']),
    (['--set', 'model.hidden=wide'], ["'model.hidden'", 'expects int']),
    (['--set', 'dataset=cifar'], ["'dataset'", "'mnist-test', 'kmnist-test', 'digits'"]),
    (['--set', 'lr.path_sgd=0'], ["'lr.path_sgd'", '> 0']),
    (['--set', 'lr.sgd=-1'], ["'lr.sgd'", '> 0']),
    (['--set', 'train.epochs=0'], ["'train.epochs'", '>= 1']),
    (['--set', 'unbalance.sigma=-0.5'], ["'unbalance.sigma'", '>= 0']),
    (['--set', 'grid.optimizers=[sgd, adam]'], ["'grid.optimizers'", 'sgd, adagrad, path_sgd']),
    (['--set', 'grid.inits=[]'], ["'grid.inits'", 'non-empty']),
    (['--set', 'grid.inits=balanced'], ["'grid.inits'", 'expects list']),
    (['--set', 'dtype=float16'], ["'dtype'", "'float32', 'float64'"]),
    (['--set', 'threads=-1'], ["'threads'", '>= 0']),
    (['--set', 'data.test_fraction=1'], ["'data.test_fraction'", 'between 0 and 1']),
    (['--set', 'data.root=/nonexistent', '--set', 'dataset=mnist-test'], ['not found']),
    (['--config', '/nonexistent/run.yaml'], ['/nonexistent/run.yaml', 'not found']),
])
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, argv, fragments):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'notes.txt').write_text('kept')
    assert path_sgd.main(argv + ['--out', str(out)]) == 2
    line = one_line_error(capsys)
    for fragment in fragments:
        assert fragment in line, line
    assert [p.name for p in out.iterdir()] == ['notes.txt']   # nothing written or changed
    assert (out / 'notes.txt').read_text() == 'kept'


def test_existing_run_is_not_overwritten(tmp_path, capsys):
    argv = TINY + ['--set', 'grid.inits=[balanced]', '--set', 'grid.optimizers=[path_sgd]',
                   '--set', 'train.epochs=1', '--out', str(tmp_path)]
    assert path_sgd.main(argv) == 0
    capsys.readouterr()
    files = {p: p.read_bytes() for p in tmp_path.rglob('*') if p.is_file()}
    assert path_sgd.main(argv) == 2
    assert 'already holds a run' in one_line_error(capsys)
    # a resumed grid must be the same experiment: other step sizes are refused
    assert path_sgd.main(argv + ['--resume', '--set', 'lr.path_sgd=0.05']) == 2
    assert "'lr.path_sgd' is 0.05 but the run" in one_line_error(capsys)
    assert {p: p.read_bytes() for p in tmp_path.rglob('*') if p.is_file()} == files


@pytest.mark.slow
def test_default_run_path_sgd_trains_the_unbalanced_net(tmp_path, capsys):
    """The paper's finding on MNIST (the default run): unbalancing breaks SGD and AdaGrad
    at their best balanced step size, Path-SGD trains both nets alike."""
    assert path_sgd.main(['--out', str(tmp_path)]) == 0
    summary = read_json(tmp_path / 'summary.json')
    cells, head = summary['cells'], summary['headline']
    assert summary['train_size'] == 8000 and summary['test_size'] == 2000
    for opt in ('sgd', 'adagrad', 'path_sgd'):   # balanced: the data and the net are fine
        assert cells[f'balanced_{opt}']['status'] == 'finished'
        assert cells[f'balanced_{opt}']['test_accuracy'] > 0.94
        assert cells[f'balanced_{opt}']['train_loss'] < 0.05
    # Path-SGD: unbalanced == balanced (rounding only), and it trains well
    psgd = cells['unbalanced_path_sgd']
    assert psgd['status'] == 'finished' and psgd['test_accuracy'] > 0.94
    # float32 rounding drifts the two trajectories apart by a few % (measured 6.4 % at most,
    # float64: ~1e-15), the end point is the same
    assert head['path_sgd']['max_rel_train_loss_gap'] < 0.25
    assert 0.8 < head['path_sgd']['train_loss_ratio'] < 1.25
    assert abs(head['path_sgd']['test_accuracy_gap']) < 0.01
    # SGD on the unbalanced net diverges or stalls
    sgd = cells['unbalanced_sgd']
    assert sgd['status'] == 'diverged' or sgd['train_loss'] > 10 * cells['balanced_sgd']['train_loss']
    # AdaGrad on the unbalanced net is clearly worse than on the balanced one, and than Path-SGD
    ada = cells['unbalanced_adagrad']
    assert ada['status'] == 'diverged' or (
        ada['train_loss'] > 3 * cells['balanced_adagrad']['train_loss']
        and ada['train_loss'] > 3 * psgd['train_loss'])
    assert math.isfinite(psgd['train_loss'])


@pytest.mark.slow
@pytest.mark.parametrize('lr', [3e-3, 3e-4])
def test_smaller_sgd_steps_stall_on_the_unbalanced_net(tmp_path, capsys, lr):
    """Not just a too-large step: at 100x and 1000x smaller steps SGD still stalls on MNIST
    (balanced SGD at 0.3 ends at train loss 0.002)."""
    argv = ['--set', f'lr.sgd={lr}', '--set', 'grid.inits=[unbalanced]',
            '--set', 'grid.optimizers=[sgd]', '--out', str(tmp_path)]
    assert path_sgd.main(argv) == 0
    sgd = read_json(tmp_path / 'summary.json')['cells']['unbalanced_sgd']
    assert sgd['status'] == 'diverged' or sgd['train_loss'] > 0.1, sgd
