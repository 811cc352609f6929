"""ImageGrid: save a grid of images made by a sampler (e.g. a GAN generator) to PNG."""
from __future__ import annotations

import os
from typing import Any, Callable, Optional, Tuple

import torch

from trainerlib.extension import PRIORITY_READER, Extension, TriggerLike
from trainerlib.serialization import atomic_open


def _require_torchvision() -> None:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        raise ImportError('ImageGrid needs torchvision: pip install trainerlib[vision]') from None


class ImageGrid(Extension):
    """Every trigger, draws ``sampler(trainer)`` as one image grid (PNG and/or TensorBoard).

    The sampler runs under ``torch.no_grad()``; putting modules in eval mode
    (and back) is the sampler's business, e.g.::

        noise = torch.randn(64, 100, generator=torch.Generator().manual_seed(0))

        def sample(trainer):
            gen.eval()
            try:
                return gen(noise.to(device))
            finally:
                gen.train()

        trainer.extend(E.ImageGrid(sample, value_range=(-1, 1)), trigger=(1, 'epoch'))

    The batch is laid out by ``torchvision.utils.make_grid`` (``nrow`` images
    per row, ``padding`` black pixels around them; a single image is kept as
    is), written atomically to ``out/<filename>`` with ``save_image`` and, if
    ``writer`` is given, added by ``writer.add_image(tag, grid, global_step=
    iteration)``. Nothing runs between triggers. Needs torchvision (``[vision]``).

    Args:
        sampler: ``fn(trainer) -> Tensor`` of shape (N, C, H, W), C in {1, 3, 4}:
            floats in [0, 1] (or in ``value_range``) or uint8 in [0, 255].
        filename: ``str.format`` template applied to the trainer, default
            ``'samples_{.updater.epoch}.png'`` (may name a subfolder of ``out``);
            None writes no file.
        trigger: when to draw, default ``(1, 'epoch')``.
        nrow: images per row of the grid, default 8.
        value_range: ``(low, high)`` of float images, mapped to black..white
            (values outside are clipped); None: [0, 1].
        writer: a tensorboardX/torch ``SummaryWriter`` (anything with
            ``add_image(tag, img, global_step)``), or None.
        tag: image tag for the writer; None: the extension's name.
        padding: pixels between images, default 2.
    """

    priority = PRIORITY_READER
    rank0_only = True

    def __init__(self, sampler: Callable[[Any], torch.Tensor],
                 filename: Optional[str] = 'samples_{.updater.epoch}.png',
                 trigger: TriggerLike = (1, 'epoch'), nrow: int = 8,
                 value_range: Optional[Tuple[float, float]] = None, writer: Any = None,
                 *, tag: Optional[str] = None, padding: int = 2) -> None:
        _require_torchvision()
        if value_range is not None and not value_range[0] < value_range[1]:
            raise ValueError(f'value_range must be (low, high) with low < high, got {value_range}')
        if filename is None and writer is None:
            raise ValueError('ImageGrid has nowhere to write: give a filename or a writer')
        self._sampler = sampler
        self.filename = filename
        self.trigger = trigger
        self._nrow = nrow
        self._value_range = value_range
        self._writer = writer
        self._tag = tag
        self._padding = padding

    def __call__(self, trainer) -> None:
        with torch.no_grad():
            images = self._sampler(trainer)
        grid = self.make_grid(images)
        if self.filename is not None:
            self._save(grid, os.path.join(trainer.out, self.filename.format(trainer)))
        if self._writer is not None:
            self._writer.add_image(self._tag or self.name or self.default_name, grid,
                                   global_step=trainer.updater.iteration)

    def make_grid(self, images: torch.Tensor) -> torch.Tensor:
        """The (C, H, W) float grid in [0, 1] of a batch, on the CPU."""
        from torchvision.utils import make_grid
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] == 0 \
                or images.shape[1] not in (1, 3, 4):
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError('the ImageGrid sampler must return a non-empty (N, C, H, W) tensor '
                             f'with C in 1, 3 or 4; got {got}')
        images = images.detach().cpu()
        value_range = self._value_range
        if images.dtype == torch.uint8:
            images, value_range = images / 255, None
        grid = make_grid(images.float(), nrow=self._nrow, padding=self._padding,
                         normalize=value_range is not None, value_range=value_range)
        return grid.clamp_(0, 1)

    def _save(self, grid: torch.Tensor, path: str) -> None:
        from torchvision.utils import save_image
        os.makedirs(os.path.dirname(path), exist_ok=True)   # the filename may hold a folder
        with atomic_open(path, 'wb', durable=False) as f:
            save_image(grid, f, format='png')
