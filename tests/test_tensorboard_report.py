"""TensorBoardReport: the events hold the LogReport entries, once each, across resume."""
import io
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboardX import SummaryWriter
from torch.utils.data import TensorDataset

import extensions as E
from trainerlib import Classifier, Trainer
from trainerlib.iterators import SerialIterator
from trainerlib.triggers import ManualScheduleTrigger
from trainerlib.updaters import StandardUpdater

TOTAL = 10


def build(out, stop=(TOTAL, 'iteration'), seed=0, owned=False, histograms=False, **kwargs):
    torch.manual_seed(seed)
    x = torch.randn(24, 3, generator=torch.Generator().manual_seed(1))
    model = Classifier(torch.nn.Linear(3, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    updater = StandardUpdater(SerialIterator(TensorDataset(x, (x[:, 0] > 0).long()), 5, seed=0),
                              optimizer, model)
    trainer = Trainer(updater, stop, out=str(out))
    log_report = E.LogReport(trigger=(3, 'iteration'))
    # registered before the LogReport: it must still see each entry in the same iteration
    trainer.extend(E.TensorBoardReport(log_report if owned else 'LogReport',
                                       histograms=model if histograms else None, **kwargs))
    if not owned:
        trainer.extend(log_report)
    return trainer, log_report


def read_events(logdir):
    events = EventAccumulator(str(logdir), size_guidance={'scalars': 0, 'histograms': 0})
    events.Reload()
    return events


def scalars(events):
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()['scalars']}


def histogram_steps(events):
    return {tag: [h.step for h in events.Histograms(tag)] for tag in events.Tags()['histograms']}


@pytest.mark.parametrize('owned', [False, True])
def test_scalars_are_the_log_entries(tmp_path, owned):
    trainer, log_report = build(tmp_path, owned=owned)
    trainer.run()
    log = log_report.log
    assert [e['iteration'] for e in log] == [3, 6, 9]
    got = scalars(read_events(tmp_path / 'tb'))
    assert set(got) == {'main/loss', 'main/accuracy', 'epoch', 'elapsed_time'}
    for tag, points in got.items():
        assert [step for step, _ in points] == [e['iteration'] for e in log], tag
        assert [v for _, v in points] == pytest.approx([e[tag] for e in log], rel=1e-6), tag


def test_histograms_on_their_trigger(tmp_path):
    trainer, _ = build(tmp_path, logdir=str(tmp_path / 'h'), histograms=True,
                       histogram_trigger=(4, 'iteration'))
    trainer.run()
    events = read_events(tmp_path / 'h')
    expected = {'main/predictor/weight/data', 'main/predictor/bias/data',
                'main/predictor/weight/grad', 'main/predictor/bias/grad'}
    assert set(events.Tags()['histograms']) == expected
    weight = events.Histograms('main/predictor/weight/data')
    assert [h.step for h in weight] == [4, 8]
    final = trainer.updater.get_model('main').predictor.weight
    assert weight[-1].histogram_value.num == final.numel()
    assert weight[-1].histogram_value.sum == pytest.approx(float(final.detach().sum()), abs=1e-5)


def test_a_given_writer_is_used_and_left_open(tmp_path):
    writer = SummaryWriter(str(tmp_path / 'shared'))
    trainer, _ = build(tmp_path, writer=writer)
    trainer.run()
    writer.add_scalar('after/run', 1.0, 99)     # still open
    writer.close()
    assert not (tmp_path / 'tb').exists()
    got = scalars(read_events(tmp_path / 'shared'))
    assert [s for s, _ in got['main/loss']] == [3, 6, 9] and got['after/run'] == [(99, 1.0)]


def test_missing_tensorboardx_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'tensorboardX', None)
    with pytest.raises(ImportError, match=r'pip install trainerlib\[tensorboard\]'):
        E.TensorBoardReport()


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp('full')
    build(out, histograms=True)[0].run()
    events = read_events(out / 'tb')
    return scalars(events), histogram_steps(events)


@pytest.mark.parametrize('k', [3, 5])
def test_resume_writes_each_step_once_with_the_same_values(tmp_path, uninterrupted, k):
    first, _ = build(tmp_path, stop=(k, 'iteration'), histograms=True)
    first.run()
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed, _ = build(tmp_path, seed=3, histograms=True)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    resumed.run()
    assert len(list((tmp_path / 'tb').iterdir())) == 2      # two event files, one run
    events = read_events(tmp_path / 'tb')
    want, want_histograms = uninterrupted
    assert histogram_steps(events) == want_histograms
    assert want_histograms['main/predictor/bias/data'] == [5, 10]      # (1, 'epoch')
    got = scalars(events)
    assert set(got) == set(want)
    for tag, points in want.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag
        if tag != 'elapsed_time':
            assert got[tag] == points, tag


def test_steps_written_after_the_snapshot_of_a_killed_run_are_purged(tmp_path, uninterrupted):
    """A run killed at iteration 9 resumes from its snapshot of iteration 5."""
    snapshot = io.BytesIO()
    first, _ = build(tmp_path, histograms=True)
    first.extend(lambda tr: torch.save(tr.state_dict(), snapshot), trigger=ManualScheduleTrigger(5, 'iteration'))
    first.run()  # goes on to 10: steps 6 and 9 were written after the snapshot
    snapshot.seek(0)
    resumed, _ = build(tmp_path, seed=3, histograms=True)
    resumed.load_state_dict(torch.load(snapshot, weights_only=True))
    resumed.run()
    got, want = scalars(read_events(tmp_path / 'tb')), uninterrupted[0]
    for tag, points in want.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag
        if tag != 'elapsed_time':
            assert got[tag] == points, tag
