"""GANUpdater: ``n_dis`` discriminator steps, then one generator step (DCGAN, hinge, WGAN-GP)."""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from trainerlib import reporter
from trainerlib.convert import DeviceLike, concat_examples
from trainerlib.updaters.amp import AmpContext
from trainerlib.updaters.grad_utils import requires_grad, step_all, zero_grads
from trainerlib.updaters.updater import Updater

Noise = Callable[[int, torch.device], torch.Tensor]
LOSSES = ('bce', 'hinge', 'wgan-gp')


def discriminator_loss(kind: str, real: torch.Tensor, fake: torch.Tensor,
                       real_label: float = 1.0) -> torch.Tensor:
    """D's loss from its logits on a real and a fake batch (without WGAN-GP's penalty).

    ``real_label`` (``'bce'`` only) is the target of real examples; below 1 it is one-sided
    label smoothing (Salimans et al. 2016: e.g. 0.9; fakes keep the target 0).
    """
    if kind == 'bce':     # BCE-with-logits: real -> real_label, fake -> 0
        real_loss = F.softplus(-real).mean()
        if real_label != 1.0:
            real_loss = real_label * real_loss + (1 - real_label) * F.softplus(real).mean()
        return real_loss + F.softplus(fake).mean()
    if kind == 'hinge':
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    return fake.mean() - real.mean()


def generator_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    """G's loss from D's logits on a fake batch; 'bce' is the non-saturating ``-log D(G(z))``."""
    return F.softplus(-fake).mean() if kind == 'bce' else -fake.mean()


def gradient_penalty(discriminator: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     alpha: Optional[torch.Tensor] = None) -> torch.Tensor:
    """WGAN-GP's ``mean((||grad_x D(x)||_2 - 1)^2)`` at ``x = alpha real + (1 - alpha) fake``.

    ``alpha`` (one weight per example) defaults to ``U(0, 1)`` drawn from torch's RNG.
    """
    if alpha is None:
        alpha = torch.rand(real.shape[0], device=real.device, dtype=real.dtype)
    alpha = alpha.reshape(-1, *(1,) * (real.dim() - 1))
    x = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    grad, = torch.autograd.grad(discriminator(x).sum(), x, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()


class GANUpdater(Updater):
    """Adversarial training: ``n_dis`` discriminator updates, then one generator update.

    Each discriminator step draws a real batch from the main iterator, so ``epoch_detail``
    advances by ``n_dis`` batches per iteration. The generator step runs after D's update,
    through the updated D with D's parameters frozen, on a fresh noise batch (no graph is
    reused across an optimizer step, which PyTorch rejects as an in-place modification).
    Models are registered as ``'gen'`` and ``'dis'``; reports: ``gen/loss``, ``dis/loss``
    (of the last D step) and, for WGAN-GP, the unweighted penalty ``dis/gp``.

    Args:
        iterator: the iterator of real examples (or a dict with ``'main'``).
        generator: maps noise ``z`` to fake examples.
        discriminator: maps examples to logits (one per example; no sigmoid).
        gen_optimizer: the generator's optimizer.
        dis_optimizer: the discriminator's optimizer.
        loss: ``'bce'`` (DCGAN, non-saturating G loss), ``'hinge'`` or ``'wgan-gp'``.
        n_dis: discriminator steps per iteration.
        z_dim: noise shape per example (int or tuple) for the default ``N(0, 1)`` noise.
        noise: ``noise(batch_size, device) -> z``; overrides ``z_dim``.
        gp_weight: weight of WGAN-GP's gradient penalty.
        real_label: ``'bce'`` only: D's target for real examples, in (0, 1]; default 1.0,
            0.9 is one-sided label smoothing (G's loss is unchanged).
        converter: ``converter(batch, device)``; a tuple/list result's first element is
            the real images (labels are ignored), anything else is used as is.
        device: where batches and both models go; None leaves them where they are.
        amp: as in :class:`StandardUpdater` (autocast; float16 adds a GradScaler).
    """

    def __init__(self, iterator: Any, generator: torch.nn.Module,
                 discriminator: torch.nn.Module, gen_optimizer: torch.optim.Optimizer,
                 dis_optimizer: torch.optim.Optimizer, *, loss: str = 'bce', n_dis: int = 1,
                 z_dim: Union[None, int, Sequence[int]] = None, noise: Optional[Noise] = None,
                 gp_weight: float = 10.0, real_label: float = 1.0,
                 converter: Callable[..., Any] = concat_examples,
                 device: DeviceLike = None, amp: Union[bool, str] = False) -> None:
        super().__init__(iterator, {'gen': gen_optimizer, 'dis': dis_optimizer},
                         {'gen': generator, 'dis': discriminator})
        if loss not in LOSSES:
            raise ValueError(f'loss must be one of {LOSSES}, got {loss!r}')
        if not isinstance(n_dis, int) or n_dis < 1:
            raise ValueError(f'n_dis must be an integer >= 1, got {n_dis!r}')
        if not 0 < real_label <= 1 or (loss != 'bce' and real_label != 1.0):
            raise ValueError(f"real_label must be in (0, 1] and needs loss='bce', got "
                             f'{real_label!r} with loss={loss!r}')
        if noise is None and z_dim is None:
            raise ValueError('give z_dim= (for N(0, 1) noise) or noise=(batch_size, device) -> z')
        self.gen, self.dis = generator, discriminator
        self.gen_opt, self.dis_opt = gen_optimizer, dis_optimizer
        self.loss, self.n_dis, self.gp_weight = loss, n_dis, gp_weight
        self.real_label = float(real_label)
        self.z_shape: Tuple[int, ...] = (z_dim,) if isinstance(z_dim, int) else tuple(z_dim or ())
        self.noise = noise or self.normal_noise
        self.converter, self.device = converter, device
        if device is not None:
            generator.to(device)
            discriminator.to(device)
        self.amp = AmpContext(amp, device)

    def normal_noise(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """The default noise: ``N(0, 1)`` of shape ``(batch_size, *z_dim)``."""
        return torch.randn(batch_size, *self.z_shape, device=device)

    def update_core(self) -> None:
        for _ in range(self.n_dis):
            real = self.next_real_batch()
            self.update_discriminator(real)
        self.update_generator(real.shape[0], real.device)

    def next_real_batch(self) -> torch.Tensor:
        """Convert the next batch of the main iterator; keep the images of an (x, label) pair."""
        batch = self.converter(next(self._iterators['main']), self.device)
        return batch[0] if isinstance(batch, (tuple, list)) else batch

    def update_discriminator(self, real: torch.Tensor) -> None:
        """One D step on ``real`` and a detached fake batch of the same size."""
        zero_grads([self.dis_opt])
        dis = self.ddp('dis')   # DDP averages D's gradients under several ranks
        with self.amp.autocast():
            with torch.no_grad():   # the fake batch is detached: G gets nothing from D's loss
                fake = self.gen(self.noise(real.shape[0], real.device))
            loss = discriminator_loss(self.loss, dis(real), dis(fake), self.real_label)
            if self.loss == 'wgan-gp':
                gp = gradient_penalty(self.dis, real, fake)
                loss = loss + self.gp_weight * gp
                reporter.report({'gp': gp}, self.dis)
        self.amp.scale(loss).backward()
        step_all([self.dis_opt], self.amp)
        reporter.report({'loss': loss}, self.dis)

    def update_generator(self, batch_size: int, device: DeviceLike = None) -> None:
        """One G step through the (updated, frozen) discriminator on fresh noise.

        ``device`` is where the noise is drawn (default: that of G's first parameter).
        """
        if device is None:
            device = next(self.gen.parameters()).device
        zero_grads([self.gen_opt])
        with requires_grad(self.dis, False), self.amp.autocast():   # D: the plain module
            fake = self.ddp('gen')(self.noise(batch_size, torch.device(device)))
            loss = generator_loss(self.loss, self.dis(fake))
        self.amp.scale(loss).backward()
        step_all([self.gen_opt], self.amp)
        reporter.report({'loss': loss}, self.gen)
