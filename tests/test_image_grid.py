"""ImageGrid: grid geometry, pixel values, the writer's steps, atomic PNG files."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

import extensions as E
from trainerlib import Trainer
from trainerlib.iterators import SerialIterator
from trainerlib.updaters import StandardUpdater


class RecordingWriter:
    def __init__(self):
        self.calls = []

    def add_image(self, tag, img, global_step=None):
        self.calls.append((tag, img.clone(), global_step))


def fake_trainer(out, iteration=5, epoch=2):
    updater = type('U', (), {'iteration': iteration, 'epoch': epoch})()
    return type('T', (), {'out': str(out), 'updater': updater})()


def pixels(path):
    with Image.open(path) as image:
        assert image.format == 'PNG'
        return np.asarray(image.convert('RGB'))


@pytest.mark.parametrize('n, nrow, size', [
    (5, 3, (3 * (6 + 2) + 2, 2 * (4 + 2) + 2)),   # (width, height): 3 columns, 2 rows
    (8, 8, (8 * 8 + 2, 4 + 4)),
    (1, 8, (6, 4)),                                # make_grid: one image, no padding
    (9, 4, (4 * 8 + 2, 3 * 6 + 2)),
])
def test_grid_size(tmp_path, n, nrow, size):
    grid = E.ImageGrid(lambda trainer: torch.rand(n, 1, 4, 6), nrow=nrow)
    grid(fake_trainer(tmp_path))
    with Image.open(tmp_path / 'samples_2.png') as image:
        assert image.size == size
    assert os.listdir(tmp_path) == ['samples_2.png']   # no temporary file left


@pytest.mark.parametrize('images, value_range, expected', [
    (torch.full((3, 1, 4, 4), 0.5), None, (128, 128, 128)),
    (torch.full((3, 1, 4, 4), 1.7), None, (255, 255, 255)),             # clipped to [0, 1]
    (torch.zeros(3, 1, 4, 4), (-1, 1), (128, 128, 128)),
    (torch.full((3, 1, 4, 4), -3.0), (-1, 1), (0, 0, 0)),                # clipped to low
    (torch.full((3, 1, 4, 4), 200, dtype=torch.uint8), (-1, 1), (200, 200, 200)),
    (torch.tensor([1., 0., .2]).view(1, 3, 1, 1).expand(3, 3, 4, 4), None, (255, 0, 51)),
])
def test_constant_images_give_exact_pixels(tmp_path, images, value_range, expected):
    grid = E.ImageGrid(lambda trainer: images, 'grid.png', nrow=2, value_range=value_range)
    grid(fake_trainer(tmp_path))
    rgb = pixels(tmp_path / 'grid.png')
    assert rgb.shape == (2 * 6 + 2, 2 * 6 + 2, 3)
    cells = [rgb[2 + r * 6:6 + r * 6, 2 + c * 6:6 + c * 6] for r, c in [(0, 0), (0, 1), (1, 0)]]
    for cell in cells:
        assert (cell == expected).all()
    assert (rgb[:2] == 0).all() and (rgb[:, :2] == 0).all()   # padding is black
    assert (rgb[8:, 8:] == 0).all()                             # the empty 4th cell


def test_trainer_run_writes_each_trigger_and_the_writer_gets_the_iteration(tmp_path):
    torch.manual_seed(0)
    generator = torch.nn.Sequential(torch.nn.Linear(8, 3 * 5 * 5), torch.nn.Sigmoid())
    noise = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    grad_enabled = []

    def sample(trainer):
        grad_enabled.append(torch.is_grad_enabled())
        return generator(noise).view(-1, 3, 5, 5)

    x = torch.randn(12, 8)
    loss = lambda x: generator(x).pow(2).mean()   # noqa: E731
    updater = StandardUpdater(SerialIterator(torch.utils.data.TensorDataset(x), 4),
                              torch.optim.SGD(generator.parameters(), lr=0.1), generator,
                              loss_func=loss)
    writer = RecordingWriter()
    trainer = Trainer(updater, (2, 'epoch'), out=str(tmp_path))
    trainer.extend(E.ImageGrid(sample, nrow=3, writer=writer))
    trainer.run()
    assert grad_enabled == [False, False]
    assert sorted(os.listdir(tmp_path)) == ['samples_1.png', 'samples_2.png']
    assert [(tag, step) for tag, _, step in writer.calls] == [('ImageGrid', 3), ('ImageGrid', 6)]
    last = writer.calls[-1][1]
    assert last.shape == (3, 2 * 7 + 2, 3 * 7 + 2) and 0 <= last.min() and last.max() <= 1
    saved = pixels(tmp_path / 'samples_2.png')
    np.testing.assert_array_equal(saved, last.mul(255).add(0.5).clamp(0, 255).byte()
                                  .permute(1, 2, 0).numpy())


def test_tensorboardx_writer_without_a_file(tmp_path):
    tensorboardX = pytest.importorskip('tensorboardX')
    with tensorboardX.SummaryWriter(str(tmp_path / 'tb')) as writer:
        grid = E.ImageGrid(lambda t: torch.rand(4, 3, 8, 8), filename=None, writer=writer,
                           tag='samples')
        grid(fake_trainer(tmp_path))
    events = os.listdir(tmp_path / 'tb')
    assert len(events) == 1 and os.path.getsize(tmp_path / 'tb' / events[0]) > 100
    assert sorted(os.listdir(tmp_path)) == ['tb']


@pytest.mark.parametrize('output, message', [
    (torch.rand(3, 8, 8), r'\(N, C, H, W\).*got \(3, 8, 8\)'),
    (torch.rand(2, 2, 8, 8), r'C in 1, 3 or 4'),
    (torch.rand(0, 3, 8, 8), r'non-empty'),
    ([torch.rand(3, 8, 8)], r'got list'),
])
def test_bad_sampler_output_is_a_clear_error(tmp_path, output, message):
    with pytest.raises(ValueError, match=message):
        E.ImageGrid(lambda trainer: output)(fake_trainer(tmp_path))


def test_nowhere_to_write_is_an_error():
    with pytest.raises(ValueError, match='filename or a writer'):
        E.ImageGrid(lambda trainer: None, filename=None)
