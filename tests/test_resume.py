"""Exact resume: interrupted at k + resumed from the snapshot == never interrupted (CPU)."""
import json
import random

import numpy as np
import pytest
import torch

import extensions as E
from trainerlib import Classifier, SnapshotError, Trainer, make_extension, triggers
from trainerlib.iterators import SerialIterator
from trainerlib.serialization import load_snapshot
from trainerlib.updaters import StandardUpdater

TOTAL = 24
SNAPSHOT_EVERY = 5


@make_extension(trigger=(1, 'iteration'), priority=300)
def report_global_rngs(trainer):
    """Uses numpy's and Python's global RNGs so that their states matter."""
    trainer.reporter.report({'np_rng': float(np.random.rand()), 'py_rng': random.random()})


def build(out, stop, seed=0):
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    g = torch.Generator().manual_seed(123)          # the data is fixed; the init depends on seed
    x = torch.randn(50, 6, generator=g)
    ds = torch.utils.data.TensorDataset(x, (x[:, :2].sum(1) > 0).long())
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                              torch.nn.Linear(16, 2))
    model = Classifier(net)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    updater = StandardUpdater(SerialIterator(ds, 8), opt, model)
    trainer = Trainer(updater, stop, out=str(out))
    trainer.extend(report_global_rngs)
    trainer.extend(E.LogReport(trigger=(3, 'iteration')))
    trainer.extend(E.snapshot(), trigger=(SNAPSHOT_EVERY, 'iteration'))
    trainer.extend(E.snapshot_object(net, 'best.pt'),
                   trigger=triggers.MaxValueTrigger('main/accuracy', (4, 'iteration')))
    return trainer


def final_state(trainer):
    params = {k: v.clone() for k, v in trainer.updater.get_model('main').state_dict().items()}
    log = [{k: v for k, v in e.items() if k != 'elapsed_time'}
           for e in trainer.get_extension('LogReport').log]
    return params, log


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    trainer = build(tmp_path_factory.mktemp('full'), (TOTAL, 'iteration'))
    trainer.run()
    return final_state(trainer)


@pytest.mark.parametrize('k', range(SNAPSHOT_EVERY, TOTAL, SNAPSHOT_EVERY))
def test_resume_from_snapshot_is_bit_identical(tmp_path, uninterrupted, k):
    first = build(tmp_path, (k, 'iteration'))
    first.run()
    resumed = build(tmp_path, (TOTAL, 'iteration'), seed=99)   # other init: must be overwritten
    load_snapshot(str(tmp_path / f'snapshot_iter_{k}'), resumed)
    resumed.run()
    params, log = final_state(resumed)
    want_params, want_log = uninterrupted
    assert params.keys() == want_params.keys()
    for name in params:
        assert torch.equal(params[name], want_params[name]), name
    assert log == want_log
    text = (tmp_path / 'log').read_text()
    assert text == json.dumps(resumed.get_extension('LogReport').log, indent=4)  # Chainer's format
    on_disk = json.loads(text)
    assert [e['iteration'] for e in on_disk] == [e['iteration'] for e in want_log]


def test_autoload_resumes_from_the_newest_snapshot(tmp_path, uninterrupted):
    killed = build(tmp_path, (17, 'iteration'))      # last snapshot at 15; 16-17 are lost
    killed.run()
    resumed = build(tmp_path, (TOTAL, 'iteration'), seed=7)
    resumed.get_extension('snapshot').autoload = True
    resumed.get_extension('snapshot').restores_trainer = True
    resumed.run()
    params, log = final_state(resumed)
    assert all(torch.equal(params[n], uninterrupted[0][n]) for n in params)
    assert log == uninterrupted[1]


def test_best_model_snapshot_round_trip(tmp_path):
    trainer = build(tmp_path, (12, 'iteration'))
    trainer.run()
    best = trainer.get_extension('snapshot_object')
    assert (tmp_path / 'best.pt').exists() and best.filename == 'best.pt'
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                              torch.nn.Linear(16, 2))
    load_snapshot(str(tmp_path / 'best.pt'), net)  # loads with weights_only=True
    wrong = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    with pytest.raises(SnapshotError, match='size mismatch|does not match'):
        load_snapshot(str(tmp_path / 'best.pt'), wrong)


def test_mismatching_snapshot_lists_the_keys(tmp_path):
    trainer = build(tmp_path, (5, 'iteration'))
    trainer.run()
    other = build(tmp_path, (10, 'iteration'))
    other.updater.get_model('main').predictor[0] = torch.nn.Linear(6, 4)
    with pytest.raises(SnapshotError) as info:
        load_snapshot(str(tmp_path / 'snapshot_iter_5'), other)
    msg = str(info.value)
    assert 'predictor.0.weight: saved (16, 6), expected (4, 6)' in msg
    assert 'predictor.0.bias' in msg


def test_resume_with_a_longer_stop_trigger_continues(tmp_path):
    first = build(tmp_path, (1, 'epoch'))
    first.run()
    assert first.updater.iteration == 7
    resumed = build(tmp_path, (2, 'epoch'))
    resumed.extend(E.snapshot(filename='end'), trigger=(1, 'epoch'))
    load_snapshot(str(tmp_path / 'snapshot_iter_5'), resumed)
    resumed.run()
    assert (resumed.updater.iteration, resumed.updater.epoch) == (13, 2)
