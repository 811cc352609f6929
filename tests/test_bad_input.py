"""Bad settings per recipe: one line, exit 2, nothing in out/ touched; the fix then runs."""
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip('sklearn')

from recipes import classify, dcgan, explain, init_study, multi_head, path_sgd  # noqa: E402
from recipes.launcher import write_json  # noqa: E402
from tests.recipe_checks import one_line_error  # noqa: E402

# the smallest run of each recipe (on scikit-learn's digits where it can choose)
TINY = {
    classify: ['--set', 'dataset=digits', '--set', 'model=mlp', '--set', 'train.epochs=1'],
    dcgan: ['--set', 'dataset=digits', '--set', 'model.width=4', '--set', 'model.fc=16',
            '--set', 'model.z_dim=8', '--set', 'quality.classifier_epochs=1',
            '--set', 'quality.n_samples=50', '--set', 'train.batch_size=128',
            '--set', 'train.epochs=1', '--set', 'train.plot_every=4'],
    explain: ['--set', 'dataset=digits', '--set', 'explain.mask_size=4',
              '--set', 'explain.images=4', '--set', 'explain.iterations=3',
              '--set', 'explain.log_every=3',
              '--set', 'explain.snapshot_every=3', '--set', 'classifier.train.epochs=1'],
    init_study: ['--set', 'model.width=8', '--set', 'model.shallow_depth=1',
                 '--set', 'model.deep_depth=2', '--set', 'train.steps=5',
                 '--set', 'train.log_every=5', '--set', 'train.eval_every=5',
                 '--set', 'train.snapshot_every=5',
                 '--set', 'stats.samples=32'],
    multi_head: ['--set', 'dataset=digits', '--set', 'data.positions=2',
                 '--set', 'data.train_size=256', '--set', 'data.test_size=64',
                 '--set', 'train.batch_size=64', '--set', 'train.epochs=1'],
    path_sgd: ['--set', 'dataset=digits', '--set', 'model.hidden=8', '--set', 'train.epochs=1',
               '--set', 'grid.inits=[balanced]', '--set', 'grid.optimizers=[sgd]'],
}
LR = {classify: 'train.lr', dcgan: 'train.lr_gen', explain: 'explain.lr', init_study: 'train.lr',
      multi_head: 'train.lr', path_sgd: 'lr.sgd'}

# bad values every recipe must refuse: (argv, what the one line must say)
COMMON = [
    (['--set', '{lr}=.inf'], "key '{lr}' (from --set {lr}=.inf) must be a finite number"),
    (['--set', '{lr}=.nan'], "'{lr}' (from --set {lr}=.nan) must be a finite number, got nan"),
    (['--set', '{lr}=1e999'], "'{lr}' (from --set {lr}=1e999) must be a finite number"),
    (['--seed', str(2 ** 64)], "config key 'seed' must be an integer from 0 to 2**64 - 1"),
    (['--seed', '-1'], "config key 'seed' must be an integer from 0"),
    (['--set', f'data.split_seed={2 ** 70}'], "config key 'data.split_seed' must be an integer"),
    (['--device', 'meta'], "config key 'device' expects a device that can train"),
    (['--device', 'abacus'], "config key 'device' expects a device that can train"),
    (['--set', 'data.root=5'], "'data.root' (from --set data.root=5) expects str or null"),
    (['--set', 'data.root=[a, b]'], "(from --set data.root=[a, b]) expects str or null, got list"),
    (['--config', '{dup}'], "'train' is given twice (lines 1 and 3); keep one of them"),
    (['--config', '{dir}'], 'is a directory; pass a YAML file'),
    (['--set', 'train={{epochs: 1, epochs: 2}}'], "'epochs' is given twice"),
]
if not torch.cuda.is_available():
    COMMON.append((['--device', 'cuda'], 'CUDA is not available here; use --device cpu'))
SPECIFIC = {
    classify: [(['--set', 'train.batch_size=1'], "'train.batch_size' must be >= 2 here: the MLP's "
                                                 'BatchNorm1d layers')],
    dcgan: [(['--set', 'train.batch_size=1'], "'train.batch_size' must be >= 2 here: the "
                                              "generator's BatchNorm1d"),
            (['--set', 'quality.classifier=5'],
             "'quality.classifier' (from --set quality.classifier=5) expects str or null")],
    explain: [(['--set', 'classifier.model=mlp', '--set', 'classifier.train.batch_size=1'],
               "'classifier.train.batch_size' must be >= 2 here"),
              (['--set', 'classifier.run=5'],
               "'classifier.run' (from --set classifier.run=5) expects str or null")],
    init_study: [], multi_head: [], path_sgd: [],
}
ROWS = [(recipe, argv, fragment) for recipe in TINY for argv, fragment in COMMON + SPECIFIC[recipe]]


def _argv(recipe, argv, tmp_path):
    dup = tmp_path / 'dup.yaml'
    dup.write_text('train:\n  epochs: 1\ntrain:\n  epochs: 2\n')
    (tmp_path / 'a_dir').mkdir(exist_ok=True)
    return [a.format(lr=LR[recipe], dup=dup, dir=tmp_path / 'a_dir') for a in argv]


def state_of(folder):
    """Every file under ``folder`` with its size and mtime (what a refused command must keep)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in Path(folder).rglob('*') if p.is_file()}


@pytest.mark.parametrize('recipe, argv, fragment', ROWS,
                         ids=[f'{r.NAME}-{" ".join(a)}' for r, a, _ in ROWS])
def test_bad_value_is_one_line_and_writes_nothing(tmp_path, capsys, recipe, argv, fragment):
    out = tmp_path / 'out'
    assert recipe.main(TINY[recipe] + _argv(recipe, argv, tmp_path) + ['--out', str(out)]) == 2
    assert fragment.format(lr=LR[recipe]) in one_line_error(capsys)
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize('recipe', list(TINY), ids=lambda r: r.NAME)
def test_corrected_command_runs_after_every_refusal(tmp_path, capsys, recipe):
    out = tmp_path / 'out'
    for argv, _ in COMMON + SPECIFIC[recipe]:
        assert recipe.main(TINY[recipe] + _argv(recipe, argv, tmp_path) + ['--out', str(out)]) == 2
    capsys.readouterr()
    assert recipe.main(TINY[recipe] + ['--out', str(out)]) == 0
    summary = (out / 'summary.json').read_text()
    json.loads(summary, parse_constant=_refuse)   # strict JSON: no NaN / Infinity


def _refuse(constant):
    raise ValueError(f'{constant} is not JSON')


@pytest.fixture(scope='module')
def classify_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('run') / 'out'
    assert classify.main(TINY[classify] + ['--out', str(out)]) == 0
    return out


def copy_run(classify_run, tmp_path):
    out = tmp_path / 'out'
    shutil.copytree(classify_run, out)
    return out


@pytest.mark.parametrize('argv, fragment', [
    (['--set', 'train.lr=0.5'], "'train.lr' is 0.5 but the run in"),
    (['--set', 'train.batch_size=32'], "'train.batch_size' is 32 but the run in"),
    (['--set', 'train.label_smoothing=0.1'], "'train.label_smoothing' is 0.1 but the run in"),
    (['--seed', '7'], "'seed' is 7 but the run in"),
    (['--set', 'model=cnn'], "'model' is 'cnn' but the run in"),
])
def test_resume_refuses_a_setting_its_snapshots_hold(classify_run, tmp_path, capsys, argv,
                                                     fragment):
    out = copy_run(classify_run, tmp_path)
    before = state_of(out)
    assert classify.main(TINY[classify] + argv + ['--out', str(out), '--resume']) == 2
    line = one_line_error(capsys)
    assert fragment in line and 'may change on resume: device, train.epochs' in line
    assert state_of(out) == before


def test_resume_uses_what_config_yaml_says(classify_run, tmp_path, capsys):
    out = copy_run(classify_run, tmp_path)
    argv = TINY[classify] + ['--set', 'train.epochs=2', '--out', str(out), '--resume']
    assert classify.main(argv) == 0
    saved = yaml.safe_load((out / 'config.yaml').read_text())
    assert saved['train']['epochs'] == 2
    from trainerlib.serialization import load_state
    newest = max((out / 'mlp').glob('snapshot_iter_*'), key=lambda p: int(p.name.split('_')[-1]))
    groups = load_state(str(newest))['updater']['optimizers']['main']['param_groups']
    assert [g['lr'] for g in groups] == [saved['train']['lr']]
    log = json.loads((out / 'mlp' / 'log').read_text())
    assert log[-1]['epoch'] == 2


def test_resume_without_snapshots_starts_over_with_the_settings_given(classify_run, tmp_path,
                                                                      capsys):
    out = copy_run(classify_run, tmp_path)
    for path in out.rglob('snapshot_*'):
        path.unlink()
    assert classify.main(TINY[classify] + ['--set', 'train.lr=0.01', '--out', str(out),
                                           '--resume']) == 0
    assert yaml.safe_load((out / 'config.yaml').read_text())['train']['lr'] == 0.01


@pytest.mark.parametrize('content, fragment', [
    ('train: [\n', 'is damaged'),
    ('- a list\n', 'is not a mapping of settings'),
    (b'\xff\xfe bytes', 'is damaged'),
])
def test_resume_with_a_damaged_saved_config(classify_run, tmp_path, capsys, content, fragment):
    out = copy_run(classify_run, tmp_path)
    path = out / 'config.yaml'
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = state_of(out)
    assert classify.main(TINY[classify] + ['--out', str(out), '--resume']) == 2
    line = one_line_error(capsys)
    assert fragment in line and 'delete it to resume with the settings given now' in line
    assert state_of(out) == before
    path.unlink()   # the fix the message names
    assert classify.main(TINY[classify] + ['--out', str(out), '--resume']) == 0


def test_a_lone_config_yaml_does_not_block_a_new_run(tmp_path, capsys):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'config.yaml').write_text('recipe: classify\n')   # a run that failed to start
    assert classify.main(TINY[classify] + ['--out', str(out)]) == 0
    assert (out / 'summary.json').is_file()


@pytest.mark.parametrize('suggest_from', ['missing', 'mlp_run'])
def test_suggested_classifier_command_works(classify_run, tmp_path, capsys, suggest_from):
    """dcgan's error for a missing judge names a classify command that then runs as given."""
    run_dir = tmp_path / 'judge' if suggest_from == 'missing' else copy_run(classify_run, tmp_path)
    argv = TINY[dcgan] + ['--set', f'quality.classifier={run_dir}', '--out', str(tmp_path / 'g')]
    assert dcgan.main(argv) == 2
    line = one_line_error(capsys)
    command = line.split('train one with: ')[1]
    assert command.startswith('python -m recipes.classify ')
    args = [a for a in command.split()[3:]]
    args[args.index('--out') + 1] = args[args.index('--out') + 1].strip("'")
    assert classify.main(args + ['--set', 'train.epochs=1']) == 0, capsys.readouterr().err
    trained = Path(args[args.index('--out') + 1])
    assert (trained / 'cnn' / 'best_model.pt').is_file()
    if suggest_from == 'mlp_run':
        assert trained != run_dir and os.path.isfile(run_dir / 'summary.json')


def test_summary_json_is_strict(tmp_path):
    path = tmp_path / 'summary.json'
    write_json({'models': {'sgd': {'loss': float('nan'), 'acc': 0.1}}, 'best': float('-inf')},
               str(path))
    data = json.loads(path.read_text(), parse_constant=_refuse)
    assert data == {'models': {'sgd': {'loss': None, 'acc': 0.1}}, 'best': None,
                    'non_finite': {'models.sgd.loss': 'nan', 'best': '-inf'}}


def _iteration(path):
    return int(path.name.rsplit('_', 1)[1])


def snapshots_of(folder):
    """The snapshot files a run wrote (``snapshot_iter_<n>``), oldest first."""
    return sorted((p for p in folder.iterdir() if re.fullmatch(r'snapshot_iter_\d+', p.name)),
                  key=_iteration)


def test_resume_ignores_stray_copies_and_mtimes(tmp_path, capsys):
    """A backup beside the snapshots is never loaded nor pruned; the newest by iteration wins."""
    out, folder = tmp_path / 'out', tmp_path / 'out' / 'mlp'
    assert classify.main(TINY[classify] + ['--set', 'train.epochs=2', '--out', str(out)]) == 0
    first, second = snapshots_of(folder)
    stray = folder / f'snapshot_iter_{_iteration(first)}.bak'
    backup = first.read_bytes()
    stray.write_bytes(backup)
    os.utime(second, ns=(10 ** 18, 10 ** 18))
    os.utime(first, ns=(2 * 10 ** 18, 2 * 10 ** 18))   # the older snapshot looks newest
    os.utime(stray, ns=(3 * 10 ** 18, 3 * 10 ** 18))   # and the backup newer still
    capsys.readouterr()
    argv = TINY[classify] + ['--set', 'train.epochs=3', '--out', str(out), '--resume']
    assert classify.main(argv) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()
            if line.split() and line.split()[0].isdigit()]
    assert rows == ['3']           # resumed after epoch 2: its row is not printed again
    log = json.loads((folder / 'log').read_text())
    assert [e['epoch'] for e in log] == [1, 2, 3]
    assert stray.stat().st_mtime_ns == 3 * 10 ** 18 and stray.read_bytes() == backup
    assert [_iteration(p) for p in snapshots_of(folder)] == [_iteration(second),
                                                            log[-1]['iteration']]


def test_resume_refuses_a_snapshot_of_another_model(classify_run, tmp_path, capsys):
    cnn = tmp_path / 'cnn_run'
    assert classify.main(TINY[classify] + ['--set', 'model=cnn', '--out', str(cnn)]) == 0
    out = copy_run(classify_run, tmp_path)
    foreign = snapshots_of(cnn / 'cnn')[-1]
    planted = out / 'mlp' / 'snapshot_iter_999'
    shutil.copy(foreign, planted)
    before = state_of(out)
    capsys.readouterr()
    assert classify.main(TINY[classify] + ['--out', str(out), '--resume']) == 2
    line = one_line_error(capsys)
    assert 'snapshot_iter_999' in line and 'resume with the model the snapshot was made with' \
        in line
    assert state_of(out) == before
    planted.unlink()   # the fix: take the stranger's file away
    assert classify.main(TINY[classify] + ['--out', str(out), '--resume']) == 0
