"""MeaningfulPerturbationUpdater: optimize deletion masks that explain a frozen classifier.

Fong & Vedaldi, "Interpretable Explanations of Black Boxes by Meaningful Perturbation"
(ICCV 2017), deletion game. For each image ``x`` of class ``c`` a low-resolution mask ``m``
(1 keeps a pixel, 0 deletes it) is upsampled to the image size (``M``) and minimises::

    l1_weight * mean|1 - m| + tv_weight * TV_beta(m) + softmax(f(Phi(x shifted by tau; M)))[c]
    Phi(x; M) = M * x + (1 - M) * x0        x0: blurred x, a constant, or Gaussian noise

with ``TV_beta(m) = mean|m[i+1, j] - m[i, j]|^beta + mean|m[i, j+1] - m[i, j]|^beta`` (both
terms on the low-resolution mask), ``tau`` a random shift of the image (jitter) drawn each
iteration, one Adam step per iteration on the mask values, then a clamp to [0, 1]. A batch
holds independent masks: the objective is the sum of the per-image objectives.
"""
from __future__ import annotations

import math
import random
import warnings
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from trainerlib import reporter
from trainerlib.convert import DeviceLike, concat_examples
from trainerlib.datasets import TupleDataset
from trainerlib.iterators import SerialIterator
from trainerlib.updaters.grad_utils import zero_grad
from trainerlib.updaters.updater import Updater

PERTURBATIONS = ('blur', 'constant', 'noise')
INITS = ('ones', 'circle', 'auto')
Size = Union[int, Tuple[int, int]]


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, C, H, W)`` images; ``sigma`` in pixels (0: a copy).

    The kernel spans ``±ceil(3 sigma)`` pixels; borders are padded by replication.
    """
    if sigma <= 0:
        return x.clone()
    radius = int(math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-t.square() / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    kx = kernel.reshape(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode='replicate'), kx, groups=channels)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode='replicate'),
                 kx.transpose(2, 3), groups=channels)
    return x


def l1_deletion(m: torch.Tensor) -> torch.Tensor:
    """``mean|1 - m|`` per mask of ``(N, 1, h, w)``: the fraction deleted, shape ``(N,)``."""
    return (1 - m).abs().flatten(1).mean(1)


def total_variation(m: torch.Tensor, beta: float = 3.0) -> torch.Tensor:
    """Anisotropic ``mean|dy|^beta + mean|dx|^beta`` per mask of ``(N, 1, h, w)``, ``(N,)``."""
    dy = (m[..., 1:, :] - m[..., :-1, :]).abs().pow(beta).flatten(1)
    dx = (m[..., :, 1:] - m[..., :, :-1]).abs().pow(beta).flatten(1)
    zero = m.new_zeros(m.shape[0])
    return (dy.mean(1) if dy.shape[1] else zero) + (dx.mean(1) if dx.shape[1] else zero)


def upsample(m: torch.Tensor, size: Tuple[int, int], mode: str = 'bilinear') -> torch.Tensor:
    """The low-resolution masks ``(N, 1, h, w)`` at image size ``(N, 1, H, W)``."""
    if tuple(m.shape[-2:]) == tuple(size):
        return m
    if mode == 'nearest':
        return F.interpolate(m, size=size, mode='nearest')
    return F.interpolate(m, size=size, mode=mode, align_corners=False)


def perturb(x: torch.Tensor, mask: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """``Phi(x; M) = M x + (1 - M) x0``: keeps ``x`` where ``M`` = 1, ``x0`` where 0."""
    return mask * x + (1 - mask) * x0


def circle_masks(size: Tuple[int, int], radii: Sequence[float]) -> torch.Tensor:
    """Masks ``(R, 1, h, w)`` that delete a centred disk of each radius (in mask pixels).

    The disk's edge is a one-pixel linear ramp (the paper blurs its circles); radius 0
    deletes nothing.
    """
    h, w = size
    ys = torch.arange(h, dtype=torch.float32) - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float32) - (w - 1) / 2
    dist = (ys[:, None].square() + xs[None, :].square()).sqrt()
    r = torch.tensor([float(v) for v in radii]).reshape(-1, 1, 1, 1)
    deleted = (r + 0.5 - dist).clamp(0, 1) * (r > 0)
    return 1 - deleted


class MaskParameters(torch.nn.Module):
    """Holds the low-resolution masks ``(N, 1, h, w)`` being optimized (values in [0, 1])."""

    def __init__(self, init: torch.Tensor) -> None:
        super().__init__()
        self.mask = torch.nn.Parameter(init.detach().contiguous().clone())


class MeaningfulPerturbationUpdater(Updater):
    """One iteration = one Adam step on the masks of a fixed batch of images.

    The classifier is frozen on construction (eval mode, ``requires_grad`` off) and never
    changes. The masks are the model ``'main'`` (a :class:`MaskParameters`; reports are
    ``main/loss``, ``main/l1``, ``main/tv``, ``main/prob``: means over the images), the
    optimizer is Adam on them, and the iterator ``'main'`` yields the whole batch every
    iteration (an epoch is one iteration). Jitter shifts and noise come from the updater's
    own seeded generators, saved with the state, so a resumed run continues bit-identically.

    Args:
        images: ``(N, C, H, W)`` images to explain.
        targets: ``(N,)`` the class explained for each image.
        classifier: maps images to logits ``(N, classes)``.
        mask_size: low-resolution mask size ``h`` or ``(h, w)`` (default: image size / 4).
        lr: Adam's learning rate (default 0.1; betas 0.9, 0.999).
        l1_weight: weight of ``mean|1 - m|`` (default 0.05).
        tv_weight: weight of ``TV_beta(m)`` (default 0.2).
        tv_beta: exponent of the TV prior (default 3).
        perturbation: ``'blur'`` (Gaussian, ``blur_sigma`` pixels), ``'constant'``
            (``constant``; None: each image's mean) or ``'noise'`` (each image's mean plus
            ``N(0, noise_std^2)``, redrawn every iteration).
        jitter: the image is shifted (circularly) by up to ± this many pixels per axis.
        init: ``'ones'`` (nothing deleted), ``'circle'`` (the paper's: per image the
            smallest centred disk whose deletion drops ``p_c`` by 99% of what deleting
            everything does), ``'auto'`` (circle only for images with ``p_c >
            overconfident``), or a tensor ``(N, 1, h, w)``.
        overconfident: ``p_c`` above which the softmax is saturated enough to stall the
            mask at ones (default 0.99); ``init='ones'`` warns when an image exceeds it.
        upsample_mode: ``'bilinear'`` (default) or ``'nearest'``.
        seed: seed of the jitter/noise generator.
        device: where images, masks and the classifier go (None: leave them).
        converter: ``converter(batch, device) -> (images, targets)``.
        flush_denormal: call ``torch.set_flush_denormal(True)`` (vanishing softmax
            gradients make denormal floats, which are very slow on CPUs).
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor,
                 classifier: torch.nn.Module, *, mask_size: Optional[Size] = None,
                 lr: float = 0.1, l1_weight: float = 0.05, tv_weight: float = 0.2,
                 tv_beta: float = 3.0, perturbation: str = 'blur', blur_sigma: float = 5.0,
                 constant: Optional[float] = None, noise_std: float = 0.2, jitter: int = 2,
                 init: Union[str, torch.Tensor] = 'auto', overconfident: float = 0.99,
                 upsample_mode: str = 'bilinear', seed: int = 0, device: DeviceLike = None,
                 converter: Callable[..., Any] = concat_examples,
                 flush_denormal: bool = True) -> None:
        if images.dim() != 4 or targets.shape != images.shape[:1]:
            raise ValueError(f'images must be (N, C, H, W) and targets (N,); got '
                             f'{tuple(images.shape)} and {tuple(targets.shape)}')
        if perturbation not in PERTURBATIONS:
            raise ValueError(f'perturbation must be one of {PERTURBATIONS}, got {perturbation!r}')
        if isinstance(init, str) and init not in INITS:
            raise ValueError(f'init must be one of {INITS} or a tensor, got {init!r}')
        if flush_denormal:
            torch.set_flush_denormal(True)
        if device is not None:
            images, targets = images.to(device), targets.to(device)
            classifier.to(device)
        self.classifier = classifier.eval().requires_grad_(False)
        self.image_size = tuple(images.shape[-2:])
        h, w = self.image_size
        size = mask_size or (max(1, h // 4), max(1, w // 4))
        self.mask_size = (size, size) if isinstance(size, int) else tuple(size)
        self.l1_weight, self.tv_weight, self.tv_beta = l1_weight, tv_weight, tv_beta
        self.perturbation, self.blur_sigma = perturbation, blur_sigma
        self.constant, self.noise_std, self.jitter = constant, noise_std, int(jitter)
        self.upsample_mode, self.converter, self.device = upsample_mode, converter, device
        self.overconfident = overconfident
        self.shift_rng = random.Random(seed)   # jitter: Python ints, no tensor to convert
        self.generator = torch.Generator(device=images.device).manual_seed(seed)   # noise

        self.images, self.targets = images, targets
        with torch.no_grad():
            self.initial_prob = self.class_prob(images, targets)
        n = images.shape[0]
        self.circle_init_images = torch.zeros(n, dtype=torch.bool, device=images.device)
        start = self._initial_masks(images, targets, init).to(images.device)
        self.masks = MaskParameters(start.expand(n, 1, *self.mask_size))
        optimizer = torch.optim.Adam(self.masks.parameters(), lr=lr)
        iterator = SerialIterator(TupleDataset(images, targets), n, repeat=True, shuffle=False)
        super().__init__(iterator, optimizer, self.masks)

    # -- the objective ------------------------------------------------------
    def class_prob(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``softmax(f(x))[c]`` per image, shape ``(N,)``."""
        probs = self.classifier(x).softmax(1)
        return probs.gather(1, targets[:, None])[:, 0]

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The 'deleted' image ``x0`` of the perturbation (noise: a fresh draw)."""
        if self.perturbation == 'blur':
            return gaussian_blur(x, self.blur_sigma)
        mean = x.mean((1, 2, 3), keepdim=True)
        if self.perturbation == 'constant':
            return mean.expand_as(x) if self.constant is None else torch.full_like(x, self.constant)
        noise = torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        return mean + self.noise_std * noise

    def upsampled(self, m: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The masks (default: the current ones) at image size ``(N, 1, H, W)``."""
        return upsample(self.masks.mask if m is None else m, self.image_size, self.upsample_mode)

    def loss_terms(self, x: torch.Tensor, targets: torch.Tensor, x0: torch.Tensor,
                   shift: Tuple[int, int] = (0, 0), m: Optional[torch.Tensor] = None
                   ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(l1, tv, prob)`` per image for masks ``m`` (default: the current ones).

        The image and its reference ``x0`` are shifted by ``shift`` (rows, columns).
        """
        m = self.masks.mask if m is None else m
        if shift != (0, 0):
            x, x0 = x.roll(shift, (2, 3)), x0.roll(shift, (2, 3))
        prob = self.class_prob(perturb(x, self.upsampled(m), x0), targets)
        return l1_deletion(m), total_variation(m, self.tv_beta), prob

    def draw_shift(self) -> Tuple[int, int]:
        """A jitter shift, uniform in ``{-jitter, ..., jitter}`` per axis (advances the RNG)."""
        if self.jitter == 0:
            return (0, 0)
        j = self.jitter
        return (self.shift_rng.randint(-j, j), self.shift_rng.randint(-j, j))

    def update_core(self) -> None:
        x, targets = self.converter(next(self._iterators['main']), self.device)
        optimizer = self._optimizers['main']
        zero_grad(optimizer)
        x0 = self.reference(x)
        l1, tv, prob = self.loss_terms(x, targets, x0, self.draw_shift())
        per_image = self.l1_weight * l1 + self.tv_weight * tv + prob
        per_image.sum().backward()
        optimizer.step()
        with torch.no_grad():
            self.masks.mask.clamp_(0, 1)
        reporter.report({'loss': per_image.mean(), 'l1': l1.mean(), 'tv': tv.mean(),
                         'prob': prob.mean()}, self.masks)

    # -- initialisation -----------------------------------------------------
    def _initial_masks(self, x: torch.Tensor, targets: torch.Tensor,
                       init: Union[str, torch.Tensor]) -> torch.Tensor:
        n = x.shape[0]
        if isinstance(init, torch.Tensor):
            if tuple(init.shape[-2:]) != self.mask_size:
                raise ValueError(f'an init tensor must end with the mask size {self.mask_size}, '
                                 f'got {tuple(init.shape)}')
            return init.clamp(0, 1).to(x.dtype)
        ones = torch.ones(n, 1, *self.mask_size, dtype=x.dtype, device=x.device)
        saturated = self.initial_prob > self.overconfident
        if init == 'ones':
            if bool(saturated.any()):
                warnings.warn(f'{int(saturated.sum())} of {n} images have p_c > '
                              f'{self.overconfident}: the softmax is saturated and their masks '
                              "may never move; use init='circle' or 'auto', or a classifier "
                              'trained with label smoothing', stacklevel=3)
            return ones
        circles = self.circle_init(x, targets)
        self.circle_init_images = saturated if init == 'auto' else torch.ones_like(saturated)
        return torch.where(self.circle_init_images[:, None, None, None], circles, ones)

    @torch.no_grad()
    def circle_init(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per image, the smallest centred deleted disk with ``p_c`` at most 1% of the way
        from ``p_c(everything deleted)`` to ``p_c(x)`` (the paper's test_circular_masks);
        the largest disk if none is that low. Returns ``(N, 1, h, w)``."""
        h, w = self.mask_size
        radii = [r / 2 for r in range(0, int(math.ceil(math.hypot(h, w))) + 2)]
        circles = circle_masks(self.mask_size, radii).to(x.device, x.dtype)
        state = self.generator.get_state()
        x0 = self.reference(x)
        self.generator.set_state(state)  # the init does not consume noise of the run
        full = self.class_prob(x0, targets)
        n = x.shape[0]
        probs = torch.stack([                                           # (R, N)
            self.class_prob(perturb(x, self.upsampled(c.expand(n, -1, -1, -1)), x0), targets)
            for c in circles])
        good = probs <= full + 0.01 * (self.initial_prob - full)
        good[-1] = True
        first = good.float().argmax(0)                                  # the first radius that works
        self.circle_radius = torch.tensor(radii, device=x.device)[first]
        return circles[first]

    # -- state --------------------------------------------------------------
    def state_dict(self) -> dict:
        state = super().state_dict()
        version, internal, gauss = self.shift_rng.getstate()
        state['shift_rng'] = {'version': version, 'internal': list(internal), 'gauss': gauss}
        state['generator'] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        rng = state['shift_rng']
        self.shift_rng.setstate((rng['version'], tuple(rng['internal']), rng['gauss']))
        self.generator.set_state(state['generator'].cpu())
