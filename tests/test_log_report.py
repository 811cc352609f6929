"""LogReport's file: written at most every write_interval seconds, complete after training."""
import io
import json

import pytest
import torch
from torch.utils.data import TensorDataset

import extensions as E
from trainerlib import Classifier, Trainer
from trainerlib.iterators import SerialIterator
from trainerlib.updaters import StandardUpdater


def make_trainer(tmp_path, stop, *extensions):
    torch.manual_seed(0)
    x = torch.randn(20, 4)
    model = Classifier(torch.nn.Linear(4, 2))
    updater = StandardUpdater(SerialIterator(TensorDataset(x, (x[:, 0] > 0).long()), 5, seed=0),
                              torch.optim.SGD(model.parameters(), lr=0.1), model)
    trainer = Trainer(updater, stop, out=str(tmp_path))
    for ext in extensions:
        trainer.extend(ext)
    return trainer


def written(tmp_path, log_report):
    log_report._writer.flush()   # what the writer thread has put on disk so far
    return [e['iteration'] for e in json.loads((tmp_path / 'log').read_text())]


@pytest.mark.parametrize('write_interval, on_disk_during_run', [
    (0.0, [[1], [1, 2], [1, 2, 3]]),       # every entry is written at once
    (3600.0, [[1], [1], [1]]),             # only the first; the others wait for the end
])
def test_log_file_is_rewritten_at_most_every_write_interval(tmp_path, write_interval,
                                                            on_disk_during_run):
    log = E.LogReport(trigger=(1, 'iteration'), write_interval=write_interval)
    seen = []
    trainer = make_trainer(tmp_path, (3, 'iteration'), log)
    trainer.extend(lambda tr: seen.append(written(tmp_path, log)), priority=0)  # after LogReport
    trainer.run()
    assert seen == on_disk_during_run
    assert written(tmp_path, log) == [1, 2, 3]      # complete after training
    assert json.loads((tmp_path / 'log').read_text()) == log.log


def test_log_file_is_complete_when_training_fails(tmp_path):
    log = E.LogReport(trigger=(1, 'iteration'), write_interval=3600.0)

    def fail_at_3(trainer):
        if trainer.updater.iteration == 3:
            raise RuntimeError('boom')

    trainer = make_trainer(tmp_path, (10, 'iteration'), log)
    trainer.extend(fail_at_3, priority=0)
    with pytest.raises(RuntimeError, match='boom'):
        trainer.run()
    assert written(tmp_path, log) == [1, 2, 3]


def test_resumed_log_is_written_even_without_a_new_entry(tmp_path):
    first = E.LogReport(trigger=(2, 'iteration'))
    trainer = make_trainer(tmp_path / 'a', (4, 'iteration'), first)
    trainer.run()
    resumed_log = E.LogReport(trigger=(2, 'iteration'))
    resumed = make_trainer(tmp_path / 'b', (5, 'iteration'), resumed_log)
    resumed.load_state_dict(trainer.state_dict())
    resumed.run()                                   # iteration 5 emits no entry
    assert written(tmp_path / 'b', resumed_log) == [2, 4]


def test_owned_log_report_file_is_complete_after_training(tmp_path):
    owned = E.LogReport(trigger=(1, 'iteration'), write_interval=3600.0)
    trainer = make_trainer(tmp_path, (3, 'iteration'),
                           E.PrintReport(['iteration'], log_report=owned, out=io.StringIO()))
    trainer.run()
    assert [e['iteration'] for e in json.loads((tmp_path / 'log').read_text())] == [1, 2, 3]


@pytest.mark.parametrize('bad', [-1.0, float('nan')])
def test_bad_write_interval(bad):
    with pytest.raises(ValueError, match='write_interval'):
        E.LogReport(write_interval=bad)
