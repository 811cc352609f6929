"""The common recipe command line: one-line errors, exit 2, nothing in out/ destroyed."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip('sklearn')

from recipes import __main__ as recipes_main  # noqa: E402
from recipes import classify, init_study, path_sgd  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TINY = ['--set', 'dataset=digits', '--set', 'model=mlp', '--set', 'train.epochs=1']


@pytest.fixture(scope='module')
def classify_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('classify')
    assert classify.main(TINY + ['--out', str(out)]) == 0
    return out


def files_of(folder):
    return {p: p.read_bytes() for p in Path(folder).rglob('*') if p.is_file()}


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: '), err
    return err[0]


def test_recipes_are_listed_and_run_by_name(capsys, tmp_path):
    assert recipes_main.main([]) == 0
    listed = capsys.readouterr().out
    for name in ('classify', 'dcgan', 'explain', 'init_study', 'multi_head', 'optim_study',
                 'path_sgd', 'sbn', 'vae', 'variance_study'):
        assert name in listed
    assert 'launcher' not in listed.split('recipes:')[1]
    assert recipes_main.main(['classify'] + TINY + ['--out', str(tmp_path)]) == 0
    assert yaml.safe_load((tmp_path / 'config.yaml').read_text())['recipe'] == 'classify'
    assert (tmp_path / 'summary.json').is_file()


def test_unknown_recipe(capsys):
    assert recipes_main.main(['clasify']) == 2
    assert "unknown recipe 'clasify'" in one_error_line(capsys)


def test_command_line_exit_status_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, '-m', 'recipes.classify', '--set', 'train.epoch=3',
                           '--out', str(tmp_path / 'o')], capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.startswith('error: unknown config key') and 'Traceback' not in proc.stderr


@pytest.mark.parametrize('recipe, argv, fragment', [
    # another recipe's run, or its config
    (path_sgd, ['--resume'], "holds a run of recipe 'classify', not 'path_sgd'"),
    (init_study, ['--resume'], "holds a run of recipe 'classify', not 'init_study'"),
    (path_sgd, [], 'already holds a run'),
    (init_study, ['--config', '{run}/config.yaml'], "config key 'recipe'"),
    # the same recipe, changed data
    (classify, ['--resume', '--set', 'dataset=mnist-test'], "'dataset'"),
    (classify, ['--resume', '--set', 'dataset=digits', '--set', 'model=mlp', '--set',
                'data.test_fraction=0.3'], "'data.test_fraction' is 0.3 but the run"),
    # the same recipe and data, a setting its snapshots hold
    (classify, ['--resume'] + TINY + ['--set', 'train.lr=0.5'], "'train.lr' is 0.5 but the run"),
    (classify, ['--resume'] + TINY + ['--seed', '3'], "'seed' is 3 but the run"),
    (classify, TINY, 'already holds a run'),
])
def test_runs_in_out_are_protected(classify_run, capsys, recipe, argv, fragment):
    before = files_of(classify_run)
    argv = [a.replace('{run}', str(classify_run)) for a in argv]
    assert recipe.main(argv + ['--out', str(classify_run)]) == 2
    assert fragment in one_error_line(capsys)
    assert files_of(classify_run) == before


@pytest.mark.parametrize('make, fragment', [
    (lambda d: (d / 'file').write_text('x') and d / 'file' / 'sub', 'cannot write'),
    (lambda d: d / 'a' / 'b' / 'c', None),  # nested: created
])
def test_output_directory(tmp_path, capsys, make, fragment):
    out = make(tmp_path)
    status = classify.main(TINY + ['--out', str(out)])
    if fragment is None:
        assert status == 0 and (out / 'summary.json').is_file()
    else:
        assert status == 2 and fragment in one_error_line(capsys)


@pytest.mark.parametrize('config, fragment', [
    ('train: [1, 2]\n', "config section 'train' (in"),
    ('train:\n  epochs: 1\n lr: 3\n', 'not valid YAML'),
    ('- 1\n- 2\n', 'the config'),
    ('recipe: dcgan\n', "config key 'recipe'"),
    ('train:\n  lr: fast\n', "'train.lr' (in"),
    ('!!python/object/apply:os.system ["true"]\n', 'not valid YAML'),
])
def test_bad_config_files(tmp_path, capsys, config, fragment):
    path = tmp_path / 'run.yaml'
    path.write_text(config)
    out = tmp_path / 'out'
    assert classify.main(['--config', str(path), '--out', str(out)]) == 2
    assert fragment in one_error_line(capsys)
    assert not out.exists()


def test_saved_config_repeats_the_run(classify_run, tmp_path, capsys):
    again = tmp_path / 'again'
    assert classify.main(['--config', str(classify_run / 'config.yaml'), '--out',
                          str(again)]) == 0
    assert (again / 'config.yaml').read_text() == (classify_run / 'config.yaml').read_text()
    first = yaml.safe_load((classify_run / 'mlp' / 'final.json').read_text())
    second = yaml.safe_load((again / 'mlp' / 'final.json').read_text())
    assert first['test_accuracy'] == second['test_accuracy']


@pytest.mark.parametrize('n', [0, 1])
def test_torch_threads_restores_the_thread_count(n):
    import torch
    from recipes.launcher import torch_threads
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with torch_threads(n):
            assert torch.get_num_threads() == (n or before)
            raise RuntimeError('training failed')
    assert torch.get_num_threads() == before
