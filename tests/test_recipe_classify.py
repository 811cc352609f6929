"""The classify recipe end to end, in-process through ``recipes.classify.main(argv)``."""
import os
import signal
from pathlib import Path

import pytest
import yaml

pytest.importorskip('sklearn')  # the digits data set comes with scikit-learn

import extensions as E  # noqa: E402
from recipes import classify  # noqa: E402
from recipes.launcher import schema_of  # noqa: E402
from trainerlib.config import load_config  # noqa: E402
from trainerlib.convert import concat_examples  # noqa: E402
from trainerlib.iterators import SerialIterator  # noqa: E402
from trainerlib.serialization import load_snapshot  # noqa: E402
from recipe_checks import one_line_error, read_json, without_time  # noqa: E402

DIGITS = ['--set', 'dataset=digits']
CONFIG = Path(classify.__file__).parent / 'configs' / 'classify.yaml'




def test_shipped_config_is_the_defaults():
    schema = schema_of(classify)
    assert load_config(str(CONFIG), schema, []) == load_config(None, schema, [])


def test_digits_both_models(tmp_path, capsys):
    out = tmp_path / 'run'
    assert classify.main(DIGITS + ['--set', 'train.epochs=2', '--out', str(out)]) == 0
    stdout = capsys.readouterr().out

    config = yaml.safe_load((out / 'config.yaml').read_text())
    assert config['dataset'] == 'digits' and config['model'] == 'both'
    assert config['train']['epochs'] == 2
    results = read_json(out / 'results.json')
    for name in ('mlp', 'cnn'):
        run = out / name
        log = read_json(run / 'log')
        final = read_json(run / 'final.json')
        assert [e['epoch'] for e in log] == [1, 2]
        # an epoch ends at the batch that crosses the end of the data (as in Chainer)
        assert final['train_size'] == 1438 and config['train']['batch_size'] == 64
        assert [e['iteration'] for e in log] == [23, 45]  # ceil(1438 / 64), ceil(2 * 1438 / 64)
        assert final['iterations'] == 45 and final['epochs'] == 2
        assert final['train_size'] + final['test_size'] == 1797
        assert final['test_size'] == round(1797 * 0.2)
        # the Evaluator's (weighted) mean is the exact accuracy computed at the end
        assert final['test_accuracy'] == pytest.approx(log[-1]['validation/main/accuracy'],
                                                       abs=1e-6)
        assert final['best_test_accuracy'] == max(e['validation/main/accuracy'] for e in log)
        assert sorted(p.name for p in run.glob('snapshot_iter_*')) == \
            ['snapshot_iter_23', 'snapshot_iter_45']
        assert (run / 'best_model.pt').is_file()
        assert results['models'][name]['test_accuracy'] == final['test_accuracy']
        assert f"{name}: test accuracy {final['test_accuracy']:.4f}" in stdout
    assert read_json(out / 'cnn' / 'final.json')['test_accuracy'] > 0.9
    assert read_json(out / 'mlp' / 'final.json')['test_accuracy'] > 0.7
    assert results['cnn_minus_mlp'] == pytest.approx(
        results['models']['cnn']['test_accuracy'] - results['models']['mlp']['test_accuracy'])

    # best_model.pt holds the predictor's weights; loaded into a fresh CNN it scores the best
    cnn = classify.CNN(1, 10, image_size=8)
    load_snapshot(str(out / 'cnn' / 'best_model.pt'), cnn)
    train, test, _, _ = classify.load_data(load_config(None, schema_of(classify), DIGITS[1::2]))
    evaluator = E.Evaluator(SerialIterator(test, 100, repeat=False, shuffle=False),
                            classify.Classifier(cnn))
    accuracy = evaluator()['main/accuracy']   # no trainer: no prefix
    assert accuracy == pytest.approx(read_json(out / 'cnn' / 'final.json')['best_test_accuracy'],
                                     abs=1e-6)


def test_resume_continues_a_finished_run(tmp_path, capsys):
    base = DIGITS + ['--set', 'model=mlp']
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    assert classify.main(base + ['--set', 'train.epochs=2', '--out', str(straight)]) == 0
    assert classify.main(base + ['--set', 'train.epochs=1', '--out', str(resumed)]) == 0
    assert [e['iteration'] for e in read_json(resumed / 'mlp' / 'log')] == [23]
    assert classify.main(base + ['--set', 'train.epochs=2', '--out', str(resumed),
                                 '--resume']) == 0
    capsys.readouterr()

    log = read_json(resumed / 'mlp' / 'log')
    assert [(e['epoch'], e['iteration']) for e in log] == [(1, 23), (2, 45)]
    assert log[1]['elapsed_time'] > log[0]['elapsed_time']
    # exact resume: the same numbers as the run that was never stopped
    assert without_time(log) == without_time(read_json(straight / 'mlp' / 'log'))
    final = read_json(resumed / 'mlp' / 'final.json')
    assert final['iterations'] == 45 and final['epochs'] == 2
    assert final['test_accuracy'] == read_json(straight / 'mlp' / 'final.json')['test_accuracy']
    assert sorted(p.name for p in (resumed / 'mlp').glob('snapshot_iter_*')) == \
        ['snapshot_iter_23', 'snapshot_iter_45']
    assert yaml.safe_load((resumed / 'config.yaml').read_text())['train']['epochs'] == 2



@pytest.mark.parametrize('argv, fragments', [
    (['--set', 'train.epoch=3'], ["unknown config key 'train.epoch'", 'batch_size, epochs']),
    (['--set', 'train.epochs=many'], ["'train.epochs'", 'expects int']),
    (['--set', 'model=rnn'], ["'model'", "'both', 'mlp', 'cnn'"]),
    (['--set', 'dataset=cifar'], ["'dataset'", "'kmnist-test', 'mnist-test', 'digits'"]),
    (['--set', 'train.epochs=0'], ["'train.epochs'", '>= 1']),
    (['--set', 'data.test_fraction=1.5'], ["'data.test_fraction'", 'between 0 and 1']),
    (['--set', 'data.root=/nonexistent', '--set', 'dataset=kmnist-test'], ['not found']),
    (['--config', '/nonexistent/run.yaml'], ['/nonexistent/run.yaml', 'not found']),
    (['--device', 'tpu'], ["'device'", "'cpu', 'cuda', 'cuda:N' or 'mps'"]),
])
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, argv, fragments):
    out = tmp_path / 'out'
    assert classify.main(argv + ['--out', str(out)]) == 2
    line = one_line_error(capsys)
    for fragment in fragments:
        assert fragment in line
    assert not out.exists()  # nothing was written


def test_debug_shows_the_exception(tmp_path):
    with pytest.raises(Exception, match='train.epoch'):
        classify.main(['--set', 'train.epoch=3', '--out', str(tmp_path), '--debug'])


def test_existing_run_is_not_overwritten(tmp_path, capsys):
    argv = DIGITS + ['--set', 'model=mlp', '--set', 'train.epochs=1', '--out', str(tmp_path)]
    assert classify.main(argv) == 0
    capsys.readouterr()
    files = {p: p.read_bytes() for p in tmp_path.rglob('*') if p.is_file()}
    assert classify.main(argv + ['--set', 'train.epochs=2']) == 2
    assert 'already holds a run' in one_line_error(capsys)
    # resuming on other data is refused too, before anything is touched
    assert classify.main(argv + ['--resume', '--set', 'data.split_seed=1']) == 2
    assert "'data.split_seed' is 1 but the run" in one_line_error(capsys)
    assert {p: p.read_bytes() for p in tmp_path.rglob('*') if p.is_file()} == files


def test_resume_refuses_snapshots_it_cannot_load(tmp_path, capsys):
    argv = DIGITS + ['--set', 'model=mlp', '--set', 'train.epochs=1', '--out', str(tmp_path)]
    assert classify.main(argv) == 0
    for path in (tmp_path / 'mlp').glob('snapshot_iter_*'):
        path.write_bytes(b'not a snapshot')
    capsys.readouterr()
    with pytest.warns(UserWarning):  # autoload says why it skipped each file
        assert classify.main(argv + ['--resume']) == 2
    assert 'could be loaded' in one_line_error(capsys)
    assert read_json(tmp_path / 'mlp' / 'log')[0]['iteration'] == 23  # the old log is intact


@pytest.mark.slow
def test_kmnist_cnn_beats_mlp(tmp_path, capsys):
    """The seed's claim on the default settings: the CNN clearly beats the MLP."""
    assert classify.main(['--out', str(tmp_path)]) == 0
    results = read_json(tmp_path / 'results.json')
    mlp, cnn = (results['models'][k]['test_accuracy'] for k in ('mlp', 'cnn'))
    assert results['models']['cnn']['test_size'] == 2000
    assert cnn > 0.9 and mlp > 0.75
    assert cnn - mlp > 0.05, (mlp, cnn)
    assert os.path.isfile(tmp_path / 'cnn' / 'best_model.pt')


def test_load_trained_returns_the_best_model(tmp_path, capsys):
    argv = DIGITS + ['--set', 'model=cnn', '--set', 'train.epochs=2',
                     '--set', 'train.label_smoothing=0.1', '--out', str(tmp_path)]
    assert classify.main(argv) == 0
    predictor, cfg = classify.load_trained(str(tmp_path), 'cnn')
    assert cfg['train']['label_smoothing'] == 0.1 and not predictor.training
    _, test, _, _ = classify.load_data(cfg)
    images, labels = concat_examples([test[i] for i in range(len(test))])
    accuracy = (predictor(images).argmax(1) == labels).float().mean().item()
    best = read_json(tmp_path / 'cnn' / 'final.json')['best_test_accuracy']
    assert accuracy == pytest.approx(best, abs=1e-6)
    with pytest.raises(classify.TrainerlibError, match='model=mlp'):
        classify.load_trained(str(tmp_path), 'mlp')


def test_sigterm_stops_with_143_and_resume_finishes_identically(tmp_path, capsys, monkeypatch):
    base = DIGITS + ['--set', 'model=mlp', '--set', 'train.epochs=2']
    straight, stopped = tmp_path / 'straight', tmp_path / 'stopped'
    assert classify.main(base + ['--out', str(straight)]) == 0

    def sigterm_at_30(trainer):
        if trainer.updater.iteration == 30:
            os.kill(os.getpid(), signal.SIGTERM)
    run = classify.Trainer.run

    def run_with_signal(trainer):
        trainer.extend(sigterm_at_30, trigger=(1, 'iteration'))
        run(trainer)
    monkeypatch.setattr(classify.Trainer, 'run', run_with_signal)
    assert classify.main(base + ['--out', str(stopped)]) == 128 + signal.SIGTERM
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert 'SIGTERM after iteration 30' in err and '--resume' in err
    assert (stopped / 'mlp' / 'snapshot_iter_30').is_file()
    assert classify.main(base + ['--out', str(stopped), '--resume']) == 0
    assert without_time(read_json(stopped / 'mlp' / 'log')) == \
        without_time(read_json(straight / 'mlp' / 'log'))
