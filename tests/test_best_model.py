"""Keeping the best model: snapshot_object fired by Max/MinValueTrigger, across resume."""
import operator

import pytest
import torch
from torch.utils.data import TensorDataset

import extensions as E
from trainerlib import Classifier, Trainer, triggers
from trainerlib.iterators import SerialIterator
from trainerlib.serialization import load_snapshot, load_state
from trainerlib.updaters import StandardUpdater

EPOCHS = 8
KEYS = {'best_acc.pt': ('validation/main/accuracy', triggers.MaxValueTrigger, operator.gt),
        'best_loss.pt': ('validation/main/loss', triggers.MinValueTrigger, operator.lt)}


def dataset(n, seed, noise):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    t = (x[:, 0] + x[:, 1] > 0).long()
    flip = torch.rand(n, generator=g) < noise
    return TensorDataset(x, torch.where(flip, 1 - t, t))


def build(out, stop, seed=0, record=None):
    """Noisy labels and a large step: the validation scores go up and down.

    ``record['epochs']`` gets ``(epoch, parameters, validation values)`` at each epoch
    end and ``record['writes']`` gets ``(file name, epoch)`` at each best-model write.
    """
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    model = Classifier(net)
    updater = StandardUpdater(SerialIterator(dataset(32, 1, 0.4), 8, seed=0),
                              torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.5), model)
    trainer = Trainer(updater, stop, out=str(out))
    valid = SerialIterator(dataset(64, 2, 0.0), 16, repeat=False, shuffle=False)
    trainer.extend(E.Evaluator(valid, model))
    for filename, (key, trigger, _) in KEYS.items():
        best = E.snapshot_object(net, filename)
        if record is not None:
            recorded(best, record['writes'])
        trainer.extend(best, name=filename, trigger=trigger(key))
    trainer.extend(E.snapshot(filename='snapshot_epoch_{.updater.epoch}'), trigger=(1, 'epoch'))
    if record is not None:
        trainer.extend(lambda tr: record['epochs'].append((
            tr.updater.epoch, {k: v.clone() for k, v in net.state_dict().items()},
            {k: float(tr.observation[k]) for k, _, _ in KEYS.values()})), trigger=(1, 'epoch'))
    return trainer


def recorded(snapshot, writes):
    """Make ``snapshot`` append ``(file name, epoch)`` to ``writes`` when it writes."""
    write = snapshot.write

    def write_and_record(trainer, **kwargs):
        writes.append((snapshot.filename, trainer.updater.epoch))
        return write(trainer, **kwargs)
    snapshot.write = write_and_record


def best_epochs(epochs, key, better):
    """Epochs at which a new best was reached (strictly better, as the triggers)."""
    found, best = [], None
    for epoch, _, values in epochs:
        if best is None or better(values[key], best):
            best = values[key]
            found.append(epoch)
    return found


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp('full')
    record = {'epochs': [], 'writes': []}
    build(out, (EPOCHS, 'epoch'), record=record).run()
    files = {name: load_state(str(out / name)) for name in KEYS}
    return record, files


def test_best_files_hold_the_parameters_of_the_best_epoch(uninterrupted):
    record, files = uninterrupted
    epochs, writes = record['epochs'], record['writes']
    for name, (key, _, better) in KEYS.items():
        found = best_epochs(epochs, key, better)
        assert [e for f, e in writes if f == name] == found       # written exactly then
        params = epochs[found[-1] - 1][1]
        assert all(torch.equal(files[name][k], params[k]) for k in params), name
    loss, _, lower = KEYS['best_loss.pt']
    assert best_epochs(epochs, loss, lower)[-1] < EPOCHS, 'the best must not be the last epoch'


@pytest.mark.parametrize('k', [2, 3, 5])
def test_resume_keeps_the_best_value_of_before_the_interruption(tmp_path, uninterrupted, k):
    full_record, full_files = uninterrupted
    build(tmp_path, (k, 'epoch')).run()
    record = {'epochs': [], 'writes': []}
    resumed = build(tmp_path, (EPOCHS, 'epoch'), seed=9, record=record)
    load_snapshot(str(tmp_path / f'snapshot_epoch_{k}'), resumed)
    resumed.run()
    full_writes = full_record['writes']
    assert {e > k for _, e in full_writes} == {True, False}     # bests before and after k
    assert record['writes'] == [(f, e) for f, e in full_writes if e > k]
    for name, want in full_files.items():
        got = load_state(str(tmp_path / name))
        assert all(torch.equal(got[p], want[p]) for p in want), name
