"""OptunaPruning (Chainer's ChainerPruningExtension) with real Optuna studies."""
import json
import sys

import pytest
import torch

optuna = pytest.importorskip('optuna')

import extensions as E  # noqa: E402
from extensions.optuna_pruning import OptunaPruning  # noqa: E402
from trainerlib import Classifier, Trainer, make_extension, reporter  # noqa: E402
from trainerlib.extension import PRIORITY_WRITER  # noqa: E402
from trainerlib.iterators import SerialIterator  # noqa: E402
from trainerlib.serialization import load_snapshot  # noqa: E402
from trainerlib.updaters import StandardUpdater  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


class PruneAt(optuna.pruners.BasePruner):
    """Prunes a trial when it reports step ``at`` (a real pruner, for exact checks)."""

    def __init__(self, at):
        self.at = at

    def prune(self, study, trial):
        return trial.last_step == self.at


@make_extension(trigger=(1, 'iteration'), priority=PRIORITY_WRITER)
def report_iteration(trainer):
    """Reports score = the iteration number, so the mean of an epoch is known exactly."""
    reporter.report({'score': float(trainer.updater.iteration)})


def make_trainer(out, stop=(5, 'epoch')):
    """12 examples in batches of 4: 3 iterations per epoch."""
    torch.manual_seed(0)
    x = torch.randn(12, 3)
    model = Classifier(torch.nn.Linear(3, 2))
    updater = StandardUpdater(SerialIterator(torch.utils.data.TensorDataset(
        x, (x[:, 0] > 0).long()), 4), torch.optim.SGD(model.parameters(), lr=0.1), model)
    trainer = Trainer(updater, stop, out=str(out))
    trainer.extend(report_iteration)
    trainer.extend(E.LogReport())
    return trainer


def test_reports_epoch_means_and_stops_cleanly_at_the_pruned_check(tmp_path):
    study = optuna.create_study(pruner=PruneAt(2))   # in memory
    trial = study.ask()
    trainer = make_trainer(tmp_path)
    trainer.extend(E.snapshot(), trigger=(5, 'iteration'))   # none at the pruned iteration
    original = trainer.stop_trigger
    pruning = E.OptunaPruning(trial, 'score', (1, 'epoch'))
    trainer.extend(pruning)
    trainer.run()

    # epoch 1: iterations 1..3, mean 2; epoch 2: 4..6, mean 5; step = epoch
    assert pruning.reported == [(1, 2.0), (2, 5.0)]
    assert study.trials[0].intermediate_values == {1: 2.0, 2: 5.0}
    assert pruning.pruned and pruning.pruned_at == ('epoch', 2)
    assert pruning.message == 'trial 0 was pruned at epoch 2'
    assert trainer.updater.iteration == 6 and trainer.stop_trigger is original
    log = json.loads((tmp_path / 'log').read_text())   # a complete, valid log
    assert [(e['epoch'], e['iteration'], e['score']) for e in log] == [(1, 3, 2.0), (2, 6, 5.0)]
    # a snapshot of the iteration where it stopped, as a signal's stop would take
    assert sorted(p.name for p in tmp_path.glob('snapshot_*')) == \
        ['snapshot_iter_5', 'snapshot_iter_6']
    fresh = make_trainer(tmp_path / 'fresh')
    fresh.extend(E.OptunaPruning(optuna.create_study().ask(), 'score'))
    load_snapshot(str(tmp_path / 'snapshot_iter_6'), fresh)
    assert fresh.updater.iteration == 6
    assert fresh.get_extension('OptunaPruning').reported == [(1, 2.0), (2, 5.0)]

    with pytest.raises(optuna.TrialPruned, match='pruned at epoch 2'):
        pruning.raise_if_pruned()
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert study.trials[0].state == optuna.trial.TrialState.PRUNED


def test_an_iteration_trigger_reports_iterations_and_a_kept_trial_runs_to_the_end(tmp_path):
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    trainer = make_trainer(tmp_path, stop=(2, 'epoch'))
    pruning = E.ChainerPruningExtension(study.ask(), 'score', (2, 'iteration'))  # Chainer's name
    trainer.extend(pruning)
    trainer.run()
    assert pruning.reported == [(2, 1.5), (4, 3.5), (6, 5.5)]   # means of 1-2, 3-4, 5-6
    assert not pruning.pruned and pruning.pruned_at is None and trainer.updater.iteration == 6
    pruning.raise_if_pruned()   # nothing to raise


def test_median_pruner_prunes_the_worse_trial(tmp_path):
    study = optuna.create_study(direction='maximize',
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    runs = []
    for sign, name in ((1.0, 'good'), (-1.0, 'bad')):
        trial = study.ask()
        trainer = make_trainer(tmp_path / name, stop=(3, 'epoch'))
        trainer.extend(make_extension(trigger=(1, 'iteration'), priority=PRIORITY_WRITER)(
            lambda t, s=sign: reporter.report({'acc': s * t.updater.iteration})))
        pruning = OptunaPruning(trial, 'acc')
        trainer.extend(pruning)
        trainer.run()
        runs.append((pruning, trainer.updater.iteration))
        study.tell(trial, *([pruning.reported[-1][1]] if not pruning.pruned else []),
                   state=optuna.trial.TrialState.PRUNED if pruning.pruned else None)
    (good, good_its), (bad, bad_its) = runs
    assert not good.pruned and good_its == 9
    assert bad.pruned and bad.pruned_at == ('epoch', 1) and bad_its == 3
    assert [t.state.name for t in study.trials] == ['COMPLETE', 'PRUNED']


def test_resume_continues_the_partial_mean(tmp_path):
    """Stopped mid-epoch and resumed: the same reports as a run never stopped."""
    def run(out, stop, resume=False):
        trainer = make_trainer(out, stop=stop)
        trainer.extend(E.snapshot(autoload=resume), trigger=(4, 'iteration'))
        pruning = OptunaPruning(optuna.create_study().ask(), 'score')
        trainer.extend(pruning)
        trainer.run()
        return pruning.reported
    straight = run(tmp_path / 'straight', (3, 'epoch'))
    assert run(tmp_path / 'stopped', (4, 'iteration')) == [(1, 2.0)]
    assert run(tmp_path / 'stopped', (3, 'epoch'), resume=True) == straight == \
        [(1, 2.0), (2, 5.0), (3, 8.0)]


def test_a_key_never_reported_warns_once_and_reports_nothing(tmp_path):
    study = optuna.create_study()
    trainer = make_trainer(tmp_path, stop=(2, 'epoch'))
    pruning = OptunaPruning(study.ask(), 'validation/main/accuracy')
    trainer.extend(pruning)
    with pytest.warns(UserWarning, match="'validation/main/accuracy' was not reported") as seen:
        trainer.run()
    assert len([w for w in seen if 'not reported' in str(w.message)]) == 1
    assert pruning.reported == [] and study.trials[0].intermediate_values == {}


def test_without_optuna_a_one_line_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, 'optuna', None)   # import optuna raises ImportError
    with pytest.raises(ImportError) as err:
        OptunaPruning(object(), 'main/loss')
    assert str(err.value) == 'OptunaPruning needs optuna: pip install trainerlib[optuna]'
    from recipes import classify
    assert classify.main(['--search', '2', '--out', str(tmp_path / 'o')]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ['error: --search needs optuna: pip install trainerlib[optuna]']
    assert not (tmp_path / 'o').exists()


@pytest.mark.parametrize('key', ['', None, 3])
def test_bad_key(key):
    with pytest.raises(ValueError, match='observation_key'):
        OptunaPruning(optuna.create_study().ask(), key)
