"""``--search N``: Optuna search over classify settings, with a real SQLite study."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip('sklearn')
optuna = pytest.importorskip('optuna')

from recipes import classify  # noqa: E402
from recipe_checks import one_line_error, read_json, without_time  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SEARCH = {
    'objective': 'models.mlp.test_accuracy', 'startup_trials': 2,
    'prune': {'key': 'validation/main/accuracy', 'trainer': 'mlp', 'startup_trials': 1,
              'warmup_epochs': 0},
    'params': {'train.lr': {'low': 1.0e-4, 'high': 3.0e-2, 'log': True},
               'train.batch_size': {'choices': [32, 64]}},
}
# a tiny base: the MLP on digits, 2 epochs, a snapshot at the end only (so a pruned trial's
# snapshot at epoch 1 is the one the stop wrote)
TINY = {'dataset': 'digits', 'model': 'mlp', 'train': {'epochs': 2, 'snapshot_every_epochs': 2},
        'search': SEARCH}


def write_config(folder, config=None):
    path = Path(folder) / 'search.yaml'
    path.write_text(yaml.safe_dump(TINY if config is None else config))
    return str(path)


def finished(summary):
    """(params, value, state) of the finished trials, in order."""
    return [(t['params'], t['value'], t['state']) for t in summary['trials']
            if t['state'] in ('COMPLETE', 'PRUNED')]


@pytest.fixture(scope='module')
def searched(tmp_path_factory):
    folder = tmp_path_factory.mktemp('search')
    config = write_config(folder)
    out = folder / 'out'
    assert classify.main(['--search', '3', '--config', config, '--out', str(out)]) == 0
    return config, out


def test_search_writes_trials_summary_and_best_config(searched, capsys):
    config, out = searched
    summary = read_json(out / 'search_summary.json')
    assert (out / 'optuna.db').is_file() and summary['study'] == 'classify'
    assert [t['number'] for t in summary['trials']] == [0, 1, 2]
    assert summary['complete'] + summary['pruned'] == 3 and summary['fail'] == 0
    assert summary['pruned'] >= 1 and summary['complete'] >= 1
    for t in summary['trials']:
        run = out / t['dir']
        cfg = yaml.safe_load((run / 'config.yaml').read_text())
        assert cfg['train']['lr'] == t['params']['train.lr']
        assert cfg['train']['batch_size'] == t['params']['train.batch_size']
        trial_summary = read_json(run / 'summary.json')
        assert trial_summary['pruned'] is t['pruned']
        log = read_json(run / 'mlp' / 'log')
        assert {str(e['epoch']): e['validation/main/accuracy'] for e in log} == \
            t['intermediate_values']
        snapshots = sorted(p.name for p in (run / 'mlp').glob('snapshot_iter_*'))
        assert snapshots == [f"snapshot_iter_{log[-1]['iteration']}"]   # where it stopped
        if t['pruned']:
            assert len(log) == 1 and trial_summary['pruned_at']['epoch'] == 1
        else:
            assert len(log) == 2 and t['value'] == trial_summary['models']['mlp']['test_accuracy']
    values = [t['value'] for t in summary['trials'] if t['state'] == 'COMPLETE']
    best = summary['best']
    assert best['value'] == max(values) and best['config'] == os.path.join('best', 'config.yaml')
    assert (out / 'best' / 'config.yaml').read_text() == \
        (out / best['dir'] / 'config.yaml').read_text()


def test_the_best_config_reproduces_the_best_value_exactly(searched, tmp_path, capsys):
    config, out = searched
    best = read_json(out / 'search_summary.json')['best']
    again = tmp_path / 'again'
    assert classify.main(['--config', str(out / 'best' / 'config.yaml'),
                          '--out', str(again)]) == 0
    assert read_json(again / 'summary.json')['models']['mlp']['test_accuracy'] == best['value']
    assert without_time(read_json(again / 'mlp' / 'log')) == \
        without_time(read_json(out / best['dir'] / 'mlp' / 'log'))


def test_an_interrupted_search_continues_as_the_uninterrupted_one(searched, tmp_path, capsys,
                                                                  monkeypatch):
    """Ctrl-C in trial 1: exit 130; the same command marks it failed and runs its parameters
    again; asking for more trials later keeps the finished ones. The finished trials are
    those of the search never interrupted (the sampler's seed follows the finished count)."""
    config, straight = searched
    out = tmp_path / 'out'
    command = ['--search', '2', '--config', config, '--out', str(out)]
    run = classify.Trainer.run

    def interrupt_trial_1(trainer):
        if os.sep + 'trial_001' + os.sep in trainer.out + os.sep:
            raise KeyboardInterrupt
        run(trainer)
    monkeypatch.setattr(classify.Trainer, 'run', interrupt_trial_1)
    assert classify.main(command) == 130
    monkeypatch.undo()
    assert 'continue with: the same command' in capsys.readouterr().err
    assert not (out / 'search_summary.json').exists()
    assert classify.main(command) == 0
    assert 'trial 1 was interrupted' in capsys.readouterr().out
    summary = read_json(out / 'search_summary.json')
    assert [(t['number'], t['state'], t['rerun_of']) for t in summary['trials']][1:] == \
        [(1, 'FAIL', None), (2, summary['trials'][2]['state'], 1)]
    before = {p: p.stat().st_mtime_ns for p in out.glob('trial_*/mlp/log')}
    assert classify.main(command[:1] + ['3'] + command[2:]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob('trial_*/mlp/log') if p in before} == \
        before   # not run again
    summary = read_json(out / 'search_summary.json')
    assert len(summary['trials']) == 4 and summary['fail'] == 1
    assert finished(summary) == finished(read_json(straight / 'search_summary.json'))


@pytest.mark.parametrize('change, fragment', [
    ({'params': {'train.lrr': {'low': 0.1, 'high': 1.0}}},
     "unknown config key 'train.lrr' in search.params (in"),
    ({'params': {'model': {'choices': ['cnn', 'rnn']}}}, "'rnn'"),
    ({'params': {'train.lr': {'low': 0.1, 'high': 0.01}}}, 'the range is empty'),
    ({'params': {'train.lr': {'low': 'small', 'high': 0.01}}}, 'a range needs two numbers'),
    ({'params': {'train.batch_size': {'low': 16, 'high': 64}}}, 'not a float setting'),
    ({'params': {'train.epochs': {'int': [1.5, 3]}}}, 'a range needs two numbers'),
    ({'params': {'train.lr': {'low': 0.0, 'high': 0.1, 'log': True}}}, 'log range must be > 0'),
    ({'params': {'train.lr': {'low': 0.0, 'high': 0.1}}}, "'train.lr' must be > 0"),
    ({'params': {'train.lr': {'between': [0, 1]}}}, 'must be {low: L, high: H'),
    ({'params': {}}, 'needs a search.params section'),
    ({'objective': ''}, 'needs search.objective'),
    ({'direction': 'up'}, "'search.direction'"),
    ({'prune': {'warmup_epoch': 1}}, "unknown config key 'search.prune.warmup_epoch'"),
])
def test_bad_search_spaces_exit_2_with_one_line(tmp_path, capsys, change, fragment):
    config = write_config(tmp_path, {**TINY, 'search': {**SEARCH, **change}})
    out = tmp_path / 'out'
    assert classify.main(['--search', '2', '--config', config, '--out', str(out)]) == 2
    assert fragment in one_line_error(capsys)
    assert not out.exists()


def test_runs_and_searches_do_not_mix(searched, tmp_path, capsys):
    config, out = searched
    before = {p: p.read_bytes() for p in out.rglob('*') if p.is_file() and p.suffix != '.db'}
    assert classify.main(['--config', config, '--out', str(tmp_path / 'o')]) == 2
    assert "a 'search' section is read by --search N only" in one_line_error(capsys)
    assert classify.main(['--set', 'dataset=digits', '--resume', '--out', str(out)]) == 2
    assert 'holds a --search' in one_line_error(capsys)
    assert classify.main(['--search', '3', '--config', config, '--set', 'seed=1',
                          '--out', str(out)]) == 2
    assert "holds a search where 'seed' is 0, not 1" in one_line_error(capsys)
    plain = tmp_path / 'plain'
    assert classify.main(['--set', 'dataset=digits', '--set', 'model=mlp', '--set',
                          'train.epochs=1', '--out', str(plain)]) == 0
    capsys.readouterr()
    assert classify.main(['--search', '2', '--config', config, '--out', str(plain)]) == 2
    assert 'already holds a run' in one_line_error(capsys)
    assert classify.main(['--search', '0', '--config', config, '--out', str(out)]) == 2
    assert '>= 1' in one_line_error(capsys)
    assert {p: p.read_bytes() for p in out.rglob('*')
            if p.is_file() and p.suffix != '.db'} == before


@pytest.mark.slow
def test_a_killed_search_process_resumes(tmp_path):
    """SIGKILL during trial 1 (no cleanup at all), then the same command: 3 finished trials."""
    config = write_config(tmp_path)
    out = tmp_path / 'out'
    command = [sys.executable, '-m', 'recipes.classify', '--search', '3', '--config', config,
               '--out', str(out)]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / 'trial_001' / 'config.yaml').exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    summary = read_json(out / 'search_summary.json')
    assert summary['complete'] + summary['pruned'] == 3
    first = summary['trials'][0]
    assert first['state'] in ('COMPLETE', 'PRUNED') and first['rerun_of'] is None
    assert any(t['rerun_of'] == 1 for t in summary['trials']) == (summary['fail'] == 1)


def test_the_shipped_search_config_is_valid():
    from recipes._search import load_search
    from recipes.launcher import parse_args
    path = REPO / 'recipes' / 'configs' / 'classify_search.yaml'
    cfg, space = load_search(classify, parse_args(classify, ['--search', '8', '--config',
                                                             str(path)]))
    assert cfg['model'] == 'cnn' and space['objective'] == 'models.cnn.test_accuracy'
    assert space['prune']['key'] == 'validation/main/accuracy' and set(space['params']) == \
        {'train.lr', 'train.batch_size'}
