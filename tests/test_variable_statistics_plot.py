"""VariableStatisticsPlot: exact statistics, bounded reproducible sampling, PNG, state."""
import types

import numpy as np
import pytest
import torch
from PIL import Image

import extensions as E
from extensions.variable_statistics_plot import sample_values
from trainerlib import Classifier, Trainer
from trainerlib.iterators import SerialIterator
from trainerlib.serialization import load_state, save_state
from trainerlib.updaters import StandardUpdater

SIGMAS = (0, 0.13, 2.28, 15.87, 50, 84.13, 97.72, 99.87, 100)


def fake_trainer(out, iteration):
    return types.SimpleNamespace(out=str(out), updater=types.SimpleNamespace(iteration=iteration))


def known_params():
    g = torch.Generator().manual_seed(0)
    a = torch.nn.Parameter(torch.randn(30, 10, generator=g))
    b = torch.nn.Parameter(torch.rand(50, generator=g) * 4)
    a.grad, b.grad = torch.randn(30, 10, generator=g), torch.randn(50, generator=g)
    return a, b


def test_statistics_equal_numpy_when_the_sample_covers_every_element(tmp_path):
    a, b = known_params()
    plot = E.VariableStatisticsPlot([a, b], max_sample_size=350)
    plot(fake_trainer(tmp_path, 7))
    history = plot.history
    assert history['iteration'].tolist() == [7]
    for key, (x, y) in {'data': (a, b), 'grad': (a.grad, b.grad)}.items():
        values = np.concatenate([x.detach().numpy().ravel(), y.detach().numpy().ravel()])
        values = values.astype(np.float64)
        np.testing.assert_allclose(history[key]['percentile'][0], np.percentile(values, SIGMAS),
                                   rtol=1e-12)
        np.testing.assert_allclose(history[key]['mean'], [values.mean()], rtol=1e-12)
        np.testing.assert_allclose(history[key]['std'], [values.std()], rtol=1e-12)
    with Image.open(tmp_path / 'statistics.png') as image:
        assert image.format == 'PNG' and image.size == (640, 480)  # matplotlib's default figure


def test_sampling_is_bounded_reproducible_and_draws_real_elements():
    tensors = [torch.arange(0., 6000.).reshape(60, 100), torch.arange(6000., 6500.)]
    draw = [sample_values(tensors, 300, torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert draw[0].shape == (300,) and draw[0].dtype == torch.float64
    assert torch.equal(draw[0], draw[1]) and not torch.equal(draw[0], draw[2])
    assert ((draw[0] >= 0) & (draw[0] < 6500) & (draw[0] == draw[0].round())).all()
    assert (draw[0] >= 6000).any()  # the second tensor is sampled too
    assert sample_values(tensors, 6500, torch.Generator()).sort().values.tolist() == \
        list(range(6500))


def test_state_round_trip_continues_the_same_samples(tmp_path):
    model = torch.nn.Linear(40, 40)   # 1640 elements, 100 sampled
    first = E.VariableStatisticsPlot(model, max_sample_size=100, report_grad=False, seed=3)
    first(fake_trainer(tmp_path, 1))
    save_state(first.state_dict(), str(tmp_path / 'state'))   # loads with weights_only
    resumed = E.VariableStatisticsPlot(model, max_sample_size=100, report_grad=False)
    resumed.load_state_dict(load_state(str(tmp_path / 'state')))
    for plot in (first, resumed):
        plot(fake_trainer(tmp_path, 2))
    a, b = first.history, resumed.history
    assert a['iteration'].tolist() == b['iteration'].tolist() == [1, 2]
    np.testing.assert_array_equal(a['data']['percentile'], b['data']['percentile'])
    assert not np.array_equal(a['data']['percentile'][0], a['data']['percentile'][1])


def test_trainer_run_sees_the_gradients_of_the_update(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(16, 3)
    model = Classifier(torch.nn.Linear(3, 2))
    updater = StandardUpdater(SerialIterator(torch.utils.data.TensorDataset(
        x, (x[:, 0] > 0).long()), 4), torch.optim.SGD(model.parameters(), lr=0.1), model)
    trainer = Trainer(updater, (2, 'epoch'), out=str(tmp_path))
    plot = E.VariableStatisticsPlot(model, plot_std=False, percentile_sigmas=(10, 50, 90),
                                    trigger=(2, 'epoch'))
    trainer.extend(plot)
    trainer.run()
    history = plot.history
    assert history['iteration'].tolist() == [8]
    assert history['grad']['percentile'].shape == (1, 3) and set(history['grad']) == \
        {'mean', 'percentile'}
    assert np.isfinite(history['grad']['mean']).all()
    with Image.open(tmp_path / 'statistics.png') as image:
        image.load()


def test_missing_gradients_are_nan(tmp_path):
    plot = E.VariableStatisticsPlot(torch.nn.Linear(2, 2), percentile_sigmas=50)
    plot(fake_trainer(tmp_path, 1))
    assert np.isnan(plot.history['grad']['percentile']).all()
    assert np.isfinite(plot.history['data']['percentile']).all()


@pytest.mark.parametrize('kwargs, message', [
    (dict(targets=[]), 'no tensor'),
    (dict(targets=torch.nn.ReLU()), 'no tensor'),
    (dict(report_data=False, report_grad=False), 'nothing to plot'),
    (dict(plot_mean=False, plot_std=False, percentile_sigmas=()), 'nothing to plot'),
    (dict(max_sample_size=0), 'max_sample_size'),
])
def test_invalid_arguments(kwargs, message):
    kwargs.setdefault('targets', torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match=message):
        E.VariableStatisticsPlot(**kwargs)
