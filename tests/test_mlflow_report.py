"""MLflowReport: params, metrics at step = iteration and artifacts, read back with MLflow's
own client from a file store; one run, each step once, across resume."""
import io
import os
import sys

import pytest
import torch
from torch.utils.data import TensorDataset

os.environ.setdefault('MLFLOW_DISABLE_TELEMETRY', 'true')   # no network calls from the tests
MlflowClient = pytest.importorskip('mlflow').MlflowClient

import extensions as E
from extensions.mlflow_report import flat_params, mlflow_name
from trainerlib import Classifier, Trainer
from trainerlib.errors import SnapshotMismatchError
from trainerlib.iterators import SerialIterator
from trainerlib.triggers import ManualScheduleTrigger
from trainerlib.updaters import StandardUpdater

TOTAL = 10
CONFIG = {'recipe': 'tiny', 'seed': 0, 'train': {'lr': 0.1, 'batch_size': 5, 'amp': False},
          'model': {'hidden': [8, 4], 'dropout': None, 'name': 'linear'}, 'extra': {}}
KEYS = {'main/loss', 'main/accuracy', 'epoch', 'elapsed_time'}


def build(out, stop=(TOTAL, 'iteration'), seed=0, owned=False, **kwargs):
    torch.manual_seed(seed)
    x = torch.randn(24, 3, generator=torch.Generator().manual_seed(1))
    model = Classifier(torch.nn.Linear(3, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    updater = StandardUpdater(SerialIterator(TensorDataset(x, (x[:, 0] > 0).long()), 5, seed=0),
                              optimizer, model)
    trainer = Trainer(updater, stop, out=str(out))
    log_report = E.LogReport(trigger=(3, 'iteration'))
    # registered before the LogReport: it must still log each entry in the same iteration
    report = E.MLflowReport(params=CONFIG, log_report=log_report if owned else 'LogReport',
                            **kwargs)
    trainer.extend(report)
    if not owned:
        trainer.extend(log_report)
    return trainer, log_report, report


def client_of(out):
    return MlflowClient((out / 'mlruns').resolve().as_uri())


def history(client, run_id):
    """``{key: [(step, value), ...]}`` of every metric of the run, by step."""
    run = client.get_run(run_id)
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
            for key in run.data.metrics}


def only_run(client, experiment):
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1
    return runs[0]


@pytest.mark.parametrize('owned', [False, True])
def test_params_metrics_and_artifacts_read_back(tmp_path, owned):
    trainer, log_report, report = build(tmp_path, owned=owned, artifacts=['notes.txt'])
    (tmp_path / 'notes.txt').write_text('hello')
    (tmp_path / 'loss.png').write_bytes(b'\x89PNG fake plot')
    trainer.run()
    client = client_of(tmp_path)
    run = only_run(client, tmp_path.name)       # default experiment: the out directory's name
    assert run.info.run_id == report.run_id and run.info.status == 'FINISHED'
    assert run.data.params == {
        'recipe': 'tiny', 'seed': '0', 'train.lr': '0.1', 'train.batch_size': '5',
        'train.amp': 'false', 'model.hidden': '[8, 4]', 'model.dropout': 'null',
        'model.name': 'linear', 'extra': '{}'}
    log = log_report.log
    assert [e['iteration'] for e in log] == [3, 6, 9]
    got = history(client, report.run_id)
    assert set(got) == KEYS
    for key, points in got.items():
        assert points == [(e['iteration'], pytest.approx(e[key], rel=1e-12)) for e in log], key
    assert sorted(f.path for f in client.list_artifacts(report.run_id)) == ['loss.png',
                                                                             'notes.txt']
    (tmp_path / 'summary.json').write_text('{"accuracy": 1.0}')      # written after training
    report.log_artifacts(['summary.json', str(tmp_path / 'notes.txt')])
    paths = {f.path for f in client.list_artifacts(report.run_id)}
    assert paths == {'loss.png', 'notes.txt', 'summary.json'}


def test_given_uri_experiment_and_run_name(tmp_path):
    uri = (tmp_path / 'store').as_uri()
    trainer, _, report = build(tmp_path / 'out', tracking_uri=uri, experiment='search',
                               run_name='trial-1', artifacts=['missing.json'])
    with pytest.warns(UserWarning, match="artifact 'missing.json' does not exist"):
        trainer.run()
    assert not (tmp_path / 'out' / 'mlruns').exists()
    run = only_run(MlflowClient(uri), 'search')
    assert run.info.run_name == 'trial-1' and report.tracking_uri == uri
    assert {m.step for m in MlflowClient(uri).get_metric_history(run.info.run_id,
                                                                 'main/loss')} == {3, 6, 9}


def test_a_failed_run_is_marked_failed(tmp_path):
    trainer, _, report = build(tmp_path)

    def fail(trainer):
        raise RuntimeError('boom')
    trainer.extend(fail, trigger=ManualScheduleTrigger(7, 'iteration'))
    with pytest.raises(RuntimeError, match='boom'):
        trainer.run()
    client = client_of(tmp_path)
    assert client.get_run(report.run_id).info.status == 'FAILED'
    assert [m.step for m in client.get_metric_history(report.run_id, 'epoch')] == [3, 6]


NAMES = [('validation/main/accuracy', 'validation/main/accuracy'),
         ('main/loss-1.5 x_y', 'main/loss-1.5 x_y'), ('main/loss (sum)', 'main/loss _sum_'),
         ('lr@main:0', 'lr_main_0'), ('/a//b/', '_/a/_/b/_'), ('a/../b', 'a/_/b'),
         ('./c', '_/c'), ('x' * 300, 'x' * 250)]


@pytest.mark.parametrize('key, name', NAMES)
def test_mlflow_name_keeps_allowed_characters(key, name):
    assert mlflow_name(key) == name


def test_mlflow_accepts_every_name_made(tmp_path):
    from mlflow.entities import Metric
    client = MlflowClient((tmp_path / 'mlruns').as_uri())
    run_id = client.create_run(client.create_experiment('names')).info.run_id
    client.log_batch(run_id, [Metric(mlflow_name(key), 1.0, 0, 1) for key, _ in NAMES])
    assert set(client.get_run(run_id).data.metrics) == {name for _, name in NAMES}


def test_flat_params_nested_keys_and_values():
    assert flat_params({'a': {'b': {'c': 1.5}, 'd': 'text'}, 'e:f': [1, 'x']}) == {
        'a.b.c': '1.5', 'a.d': 'text', 'e_f': '[1, "x"]'}


def test_missing_mlflow_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'mlflow', None)
    with pytest.raises(ImportError, match=r'^MLflowReport needs mlflow: '
                                          r'pip install trainerlib\[mlflow\]$'):
        E.MLflowReport()


def roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp('full')
    trainer, _, report = build(out)
    trainer.run()
    return history(client_of(out), report.run_id)


def check_same_steps_and_values(got, want):
    assert set(got) == set(want) == KEYS
    for key, points in want.items():
        assert [s for s, _ in got[key]] == [s for s, _ in points] == [3, 6, 9], key
        if key != 'elapsed_time':
            assert got[key] == points, key


@pytest.mark.parametrize('k', [3, 5])
def test_resume_continues_the_same_run_each_step_once(tmp_path, uninterrupted, k):
    first, _, report = build(tmp_path, stop=(k, 'iteration'))
    first.run()
    state = roundtrip(first.state_dict())
    assert state['extensions']['MLflowReport'] == {'run_id': report.run_id, 'step': 3}
    resumed, _, again = build(tmp_path, seed=3)
    resumed.load_state_dict(state)
    resumed.run()
    client = client_of(tmp_path)
    run = only_run(client, tmp_path.name)
    assert again.run_id == report.run_id == run.info.run_id
    assert run.info.status == 'FINISHED' and run.data.params == flat_params(CONFIG)
    check_same_steps_and_values(history(client, run.info.run_id), uninterrupted)


def test_steps_logged_after_the_snapshot_of_a_killed_run_are_not_duplicated(tmp_path,
                                                                            uninterrupted):
    """A run killed at iteration 9 (it logged 3, 6, 9) resumes from its snapshot of
    iteration 5."""
    snapshot = io.BytesIO()
    first, _, report = build(tmp_path)
    first.extend(lambda tr: torch.save(tr.state_dict(), snapshot),
                 trigger=ManualScheduleTrigger(5, 'iteration'))
    first.run()
    snapshot.seek(0)
    resumed, _, again = build(tmp_path, seed=3)
    resumed.load_state_dict(torch.load(snapshot, weights_only=True))
    resumed.run()
    client = client_of(tmp_path)
    assert only_run(client, tmp_path.name).info.run_id == again.run_id == report.run_id
    check_same_steps_and_values(history(client, report.run_id), uninterrupted)


def test_a_run_id_the_store_does_not_hold_is_one_clear_error(tmp_path):
    first, _, _ = build(tmp_path / 'a', stop=(3, 'iteration'))
    first.run()
    resumed, _, _ = build(tmp_path / 'b')            # another store: <b>/mlruns
    resumed.load_state_dict(roundtrip(first.state_dict()))
    with pytest.raises(SnapshotMismatchError, match='does not hold; resume with the '
                                                    'tracking_uri'):
        resumed.run()
    assert os.path.isdir(tmp_path / 'b' / 'mlruns')


def test_added_on_resume_starts_a_run_with_the_whole_restored_log(tmp_path, uninterrupted):
    first, _, report = build(tmp_path, stop=(5, 'iteration'))
    first.run()
    state = roundtrip(first.state_dict())
    del state['extensions']['MLflowReport']         # as if it was not there before
    resumed, _, added = build(tmp_path, seed=3)
    resumed.load_state_dict(state)
    resumed.run()
    assert added.run_id != report.run_id
    client = client_of(tmp_path)
    assert client.get_run(added.run_id).data.params == flat_params(CONFIG)
    check_same_steps_and_values(history(client, added.run_id), uninterrupted)
