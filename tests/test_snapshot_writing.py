"""Snapshot writing: serialized in the loop, written by a background thread; write failures,
retention."""
import errno
import os

import pytest
import torch

import extensions as E
from extensions import _writer
from trainerlib import Classifier, Trainer, serialization
from trainerlib.datasets import TupleDataset
from trainerlib.iterators import SerialIterator
from trainerlib.serialization import dump_state, load_state
from trainerlib.updaters import StandardUpdater


def build(out, iterations=12, **snapshot_kwargs):
    torch.manual_seed(0)
    x = torch.randn(40, 4)
    model = Classifier(torch.nn.Linear(4, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    updater = StandardUpdater(SerialIterator(TupleDataset(x, (x[:, 0] > 0).long()), 8, seed=0),
                              optimizer, model)
    trainer = Trainer(updater, (iterations, 'iteration'), out=str(out))
    trainer.extend(E.snapshot(**snapshot_kwargs), trigger=(3, 'iteration'))
    return trainer


def fail_writes_of(monkeypatch, name, error=errno.ENOSPC):
    """Make writing the snapshot file ``name`` fail half-way, like a full disk."""
    write_file = serialization.write_file

    def write_or_fail(data, path):
        if os.path.basename(path) != name:
            return write_file(data, path)
        with serialization.atomic_open(path) as f:
            f.write(b'partial')
            raise OSError(error, os.strerror(error))
    monkeypatch.setattr(_writer, 'write_file', write_or_fail)


def load_bytes(data, path):
    path.write_bytes(data)
    return load_state(str(path))


def test_dumped_state_shares_nothing_and_keeps_structure(tmp_path):
    module = torch.nn.BatchNorm1d(3)
    state = {'model': module.state_dict(), 'list': [torch.ones(2), 3, 'x'], 'tuple': (1.5, None)}
    data = dump_state(state)
    state['list'][0].add_(1)            # training goes on changing the state ...
    module.running_mean.add_(5)
    copy = load_bytes(data, tmp_path / 'snapshot')   # ... the bytes hold the old one
    assert torch.equal(copy['list'][0], torch.ones(2))
    assert torch.equal(copy['model']['running_mean'], torch.zeros(3))
    assert copy['model']._metadata == state['model']._metadata  # module versions kept
    assert copy['list'][1:] == [3, 'x'] and copy['tuple'] == (1.5, None)
    module.load_state_dict(copy['model'])


@pytest.mark.parametrize('background', [False, True])
def test_background_and_direct_writes_hold_the_same_state(tmp_path, background):
    build(tmp_path / 'a', background=background).run()
    build(tmp_path / 'b', background=False).run()
    for name in ('snapshot_iter_6', 'snapshot_iter_12'):
        a, b = load_state(str(tmp_path / 'a' / name)), load_state(str(tmp_path / 'b' / name))
        params_a = a['updater']['models']['main']
        for key, value in b['updater']['models']['main'].items():
            assert torch.equal(params_a[key], value), (name, key)


@pytest.mark.parametrize('background', [False, True])
def test_a_full_disk_keeps_the_previous_snapshots_and_says_so(tmp_path, monkeypatch, background):
    trainer = build(tmp_path, background=background, n_retains=2)
    fail_writes_of(monkeypatch, 'snapshot_iter_9')
    with pytest.raises(OSError) as info:
        trainer.run()
    message = str(info.value)
    assert 'snapshot_iter_9' in message and 'previous snapshots are intact' in message
    assert os.strerror(errno.ENOSPC) in message and info.value.errno == errno.ENOSPC
    assert sorted(p for p in os.listdir(tmp_path)) == ['snapshot_iter_3', 'snapshot_iter_6']
    assert load_state(str(tmp_path / 'snapshot_iter_6'))['updater']['iteration'] == 6


def test_a_failed_write_never_triggers_retention(tmp_path, monkeypatch):
    build(tmp_path / 'run', iterations=6, n_retains=1).run()
    assert os.listdir(tmp_path / 'run') == ['snapshot_iter_6']
    fail_writes_of(monkeypatch, 'snapshot_iter_9', errno.EROFS)
    trainer = build(tmp_path / 'run', n_retains=1, autoload=True)
    with pytest.raises(OSError, match='Read-only file system'):
        trainer.run()
    # the only good snapshot survives (n_retains=1 deletes only after a successful write)
    assert os.listdir(tmp_path / 'run') == ['snapshot_iter_6']


def test_background_write_error_is_raised_at_the_next_write(tmp_path, monkeypatch):
    trainer = build(tmp_path, iterations=30, background=True)
    fail_writes_of(monkeypatch, 'snapshot_iter_3')
    with pytest.raises(OSError, match='snapshot_iter_3'):
        trainer.run()
    assert trainer.updater.iteration == 6  # reported at the next snapshot, not lost
    assert 'snapshot_iter_6' not in os.listdir(tmp_path)


def test_recipe_reports_a_write_failure_in_one_line(tmp_path, monkeypatch, capsys):
    pytest.importorskip('sklearn')
    from recipes import classify
    argv = ['--set', 'dataset=digits', '--set', 'model=mlp', '--set', 'train.epochs=2',
            '--out', str(tmp_path)]
    fail_writes_of(monkeypatch, 'snapshot_iter_45')
    assert classify.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: could not write snapshot')
    assert (tmp_path / 'mlp' / 'snapshot_iter_23').is_file()
