"""The ``trainerlib`` command (trainerlib.commands.main), in-process through ``main(argv)``.

One tiny classify run made by ``trainerlib run classify`` feeds the other subcommands;
one subprocess runs the installed console script (skipped where it is not installed).
"""
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip('sklearn')      # the digits data set comes with scikit-learn
pytest.importorskip('matplotlib')   # the PNGs
from PIL import Image  # noqa: E402

from trainerlib.commands.main import main  # noqa: E402
from recipe_checks import one_line_error, read_json  # noqa: E402

TINY = ['--set', 'dataset=digits', '--set', 'train.epochs=2']   # 45 iterations per model
MODELS = ('mlp', 'cnn')


def is_png(path):
    with Image.open(path) as image:
        image.load()
        return image.format == 'PNG' and min(image.size) > 100


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp('command') / 'classify'
    assert main(['run', 'classify', *TINY, '--out', str(out)]) == 0
    return out


@pytest.mark.parametrize('argv, words', [
    ([], ['run', 'recipes', 'plot', 'inspect']),
    (['run'], ['RECIPE', 'OPTIONS']),
    (['recipes'], ['List the recipes']),
    (['plot'], ['--keys', '--x', '--out', '--labels']),
    (['inspect'], ['SNAPSHOT', '--tensors']),
    (['run', 'classify'], ['--set', '--resume', 'train.epochs']),   # the recipe's own help
])
def test_help_everywhere(capsys, argv, words):
    with pytest.raises(SystemExit) as info:
        main(argv + ['--help'])
    out = capsys.readouterr().out
    assert info.value.code == 0
    for word in words:
        assert word in out


def test_recipes_lists_the_recipes(capsys):
    from recipes.__main__ import names
    assert main(['recipes']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == names()
    assert any(line.split()[:3] == ['classify', 'Image', 'classification:'] for line in lines)


def test_run_classify_writes_the_summary_and_pngs(run_dir):
    summary = read_json(run_dir / 'summary.json')
    assert set(summary['models']) == set(MODELS)
    for name in MODELS:
        assert [e['epoch'] for e in read_json(run_dir / name / 'log')] == [1, 2]
        assert is_png(run_dir / name / 'loss.png') and is_png(run_dir / name / 'accuracy.png')
    assert is_png(run_dir / 'comparison.png')


def test_plot_compares_the_two_models(tmp_path, run_dir, capsys):
    out = tmp_path / 'cmp.png'
    logs = [str(run_dir / name / 'log') for name in MODELS]
    assert main(['plot', *logs, '--keys', 'validation/main/accuracy', 'main/loss',
                 '--x', 'epoch', '--labels', *MODELS, '--out', str(out)]) == 0
    assert f'4 lines -> {out}' in capsys.readouterr().out
    assert is_png(out)


def test_inspect_prints_the_snapshot(run_dir, capsys):
    assert main(['inspect', str(run_dir / 'mlp' / 'snapshot_iter_45')]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert 'kind: trainer snapshot' in lines and 'iteration: 45' in lines
    extensions = next(line for line in lines if line.startswith('extensions: '))
    assert 'PlotReport_loss' in extensions and 'LogReport' in extensions


@pytest.mark.parametrize('argv, message', [
    (['run'], 'trainerlib run needs a RECIPE: one of '),
    (['run', 'clasify', '--out', 'x'], "unknown recipe 'clasify'; choose one of "),
    (['run', 'classify', '--set', 'train.epoch=3'], "unknown config key 'train.epoch'"),
    (['plot', 'missing/log', '--keys', 'main/loss'], "log file 'missing/log' does not exist"),
    (['inspect', 'missing/snapshot'], "snapshot 'missing/snapshot' does not exist"),
])
def test_user_errors_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []   # nothing was written


def test_python_m_trainerlib_is_the_command(monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', ['trainerlib', 'recipes'])
    with pytest.raises(SystemExit) as info:
        runpy.run_module('trainerlib', run_name='__main__')
    assert info.value.code == 0 and 'classify' in capsys.readouterr().out


def test_the_command_imports_neither_recipes_nor_extensions():
    code = ('import sys, trainerlib.commands.main; '
            'print(sorted({"recipes", "extensions"} & set(sys.modules)))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == '[]'


SCRIPT = shutil.which('trainerlib', path=str(Path(sys.executable).parent))


@pytest.mark.skipif(SCRIPT is None, reason='the trainerlib console script is not installed')
def test_installed_console_script(tmp_path, run_dir):
    done = subprocess.run([SCRIPT, 'inspect', str(run_dir / 'cnn' / 'best_model.pt')],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert 'kind: module state_dict' in done.stdout.splitlines()
    done = subprocess.run([SCRIPT, 'run', 'nope'], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.startswith("error: unknown recipe 'nope'")
    assert done.stderr.count('\n') == 1
