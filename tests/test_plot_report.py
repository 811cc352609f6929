"""PlotReport: its points are LogReport's numbers, the PNG is always whole, resume continues."""
import os

import matplotlib.figure
import pytest
import torch
from PIL import Image

import extensions as E
from trainerlib import Classifier, Trainer, make_extension
from trainerlib.iterators import SerialIterator
from trainerlib.serialization import load_snapshot
from trainerlib.updaters import StandardUpdater

KEYS = ['main/loss', 'main/accuracy']


def build(out, stop, x_key='iteration', keys=KEYS, **plot_kwargs):
    torch.manual_seed(0)
    x = torch.randn(24, 4, generator=torch.Generator().manual_seed(1))
    dataset = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
    model = Classifier(torch.nn.Linear(4, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    updater = StandardUpdater(SerialIterator(dataset, 5), optimizer, model)  # 4.8 it/epoch
    trainer = Trainer(updater, stop, out=str(out))
    trainer.extend(E.LogReport(trigger=(3, 'iteration')))
    trainer.extend(E.PlotReport(keys, x_key, trigger=(3, 'iteration'), **plot_kwargs))
    trainer.extend(E.snapshot(), trigger=(4, 'iteration'))
    return trainer


def check_png(path):
    with Image.open(path) as image:
        assert image.format == 'PNG'
        width, height = image.size
        image.load()  # decodes every byte: a partial file would fail here
    assert width > height > 200
    assert not [n for n in os.listdir(os.path.dirname(path)) if n.endswith('.tmp')]


@pytest.mark.parametrize('x_key', ['iteration', 'epoch', 'main/accuracy'])
def test_points_are_the_log_report_means(tmp_path, x_key):
    calls = []
    trainer = build(tmp_path, (12, 'iteration'), x_key,
                    postprocess=lambda fig, ax, summary: calls.append(ax.get_xlabel()))
    trainer.run()
    log = trainer.get_extension('LogReport').log
    data = trainer.get_extension('PlotReport').data
    assert [e['iteration'] for e in log] == [3, 6, 9, 12]
    for key in KEYS:
        assert data[key] == [(e[x_key], e[key]) for e in log]
    assert calls == [x_key] * 4
    check_png(tmp_path / 'plot.png')


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    trainer = build(tmp_path_factory.mktemp('full'), (14, 'iteration'))
    trainer.run()
    return trainer.get_extension('PlotReport').data


@pytest.mark.parametrize('k', [4, 8])  # snapshots taken between two points: partial summary
def test_resume_continues_the_curves(tmp_path, uninterrupted, k):
    build(tmp_path, (k, 'iteration')).run()
    resumed = build(tmp_path, (14, 'iteration'))
    load_snapshot(str(tmp_path / f'snapshot_iter_{k}'), resumed)
    assert len(resumed.get_extension('PlotReport').data['main/loss']) == k // 3
    resumed.run()
    assert resumed.get_extension('PlotReport').data == uninterrupted
    check_png(tmp_path / 'plot.png')


def test_a_failed_redraw_leaves_the_previous_png(tmp_path, monkeypatch):
    saved = {}

    def broken_savefig(self, f, **kwargs):
        f.write(b'\x89PNG half a file')
        raise OSError(28, 'No space left on device')

    @make_extension(trigger=(4, 'iteration'))
    def break_savefig(trainer):
        saved['png'] = (tmp_path / 'plot.png').read_bytes()  # drawn at iteration 3
        monkeypatch.setattr(matplotlib.figure.Figure, 'savefig', broken_savefig)

    trainer = build(tmp_path, (6, 'iteration'))
    trainer.extend(break_savefig)
    with pytest.raises(OSError, match='No space left'):
        trainer.run()  # the redraw at iteration 6 fails
    assert (tmp_path / 'plot.png').read_bytes() == saved['png']
    monkeypatch.undo()
    check_png(tmp_path / 'plot.png')


def test_keys_never_reported_draw_nothing(tmp_path):
    trainer = build(tmp_path, (6, 'iteration'), keys='validation/main/loss')
    trainer.run()
    assert trainer.get_extension('PlotReport').data == {'validation/main/loss': []}
    assert not (tmp_path / 'plot.png').exists()


def test_state_is_plain_data_and_round_trips():
    report = E.PlotReport(KEYS, trigger=(2, 'iteration'))
    report.data['main/loss'].extend([(2, 0.5), (4, 0.25)])
    state = report.state_dict()
    assert state['data']['main/loss'] == [[2, 0.5], [4, 0.25]]
    other = E.PlotReport(KEYS + ['validation/main/loss'])
    other.load_state_dict(state)
    assert other.data == {'main/loss': [(2, 0.5), (4, 0.25)], 'main/accuracy': [],
                          'validation/main/loss': []}
