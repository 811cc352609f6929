"""``--mlflow``: a recipe's trainers log to MLflow; read back with MLflow's own client."""
import os

import pytest

os.environ.setdefault('MLFLOW_DISABLE_TELEMETRY', 'true')   # no network calls from the tests
MlflowClient = pytest.importorskip('mlflow').MlflowClient

from recipes import classify, init_study  # noqa: E402
from recipe_checks import one_line_error  # noqa: E402

TINY = ['--set', 'dataset=digits', '--set', 'model=both', '--set', 'train.epochs=1']


def runs_of(out):
    client = MlflowClient((out / 'mlruns').resolve().as_uri())
    experiment = client.get_experiment_by_name('classify')
    runs = client.search_runs([experiment.experiment_id])
    return client, {r.info.run_name: r for r in runs}


def steps(client, run, key='validation/main/accuracy'):
    return [m.step for m in sorted(client.get_metric_history(run.info.run_id, key),
                                   key=lambda m: m.step)]


def test_classify_logs_one_run_per_model_and_resumes_it(tmp_path):
    out = tmp_path / 'run'
    assert classify.main(TINY + ['--out', str(out), '--mlflow']) == 0
    client, runs = runs_of(out)
    assert set(runs) == {'mlp', 'cnn'}
    for name, run in runs.items():
        assert run.data.params['train.epochs'] == '1' and run.data.params['recipe'] == 'classify'
        assert run.info.status == 'FINISHED'
        files = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert 'summary.json' in files and 'loss.png' in files, files
    first = {name: steps(client, run) for name, run in runs.items()}
    assert all(len(s) == 1 for s in first.values())
    # a resumed run with more epochs continues the same MLflow runs, each step once
    assert classify.main(TINY[:-2] + ['--set', 'train.epochs=2', '--out', str(out),
                                      '--mlflow', '--resume']) == 0
    client, again = runs_of(out)
    assert {n: r.info.run_id for n, r in again.items()} == \
        {n: r.info.run_id for n, r in runs.items()}
    for name, run in again.items():
        history = steps(client, run)
        assert history[:1] == first[name] and len(history) == 2 == len(set(history))


@pytest.mark.parametrize('argv, fragment', [
    ([], "recipe 'init_study' does not hand its trainers"),
])
def test_a_recipe_without_trainer_hooks_refuses_mlflow(tmp_path, capsys, argv, fragment):
    assert init_study.main(argv + ['--mlflow', '--out', str(tmp_path / 'x')]) == 2
    assert fragment in one_line_error(capsys)
    assert not (tmp_path / 'x').exists()


def test_mlflow_and_search_are_not_combined(tmp_path, capsys):
    assert classify.main(['--search', '2', '--mlflow', '--out', str(tmp_path / 'x')]) == 2
    assert '--mlflow cannot be combined with --search' in capsys.readouterr().err
