"""The seed's DCGAN networks for 28x28 images (Generator) and their mirror (Discriminator).

Generator (the seed, nyk510's EMNIST DCGAN): ``z -> Linear(fc)-BN-ReLU -> Linear(4w*5*5)-BN-ReLU
-> (4w, 5, 5) -> ConvT(4w->2w, k3 s1 p0)-BN-ReLU (7x7) -> ConvT(2w->w, k4 s2 p1)-BN-ReLU (14x14)
-> ConvT(w->C, k4 s2 p1) (28x28) -> sigmoid``; the seed uses ``w = 64`` and ``fc = 1024``.
The seed only says its discriminator is "similar"; here it mirrors G's convolutions with the
DCGAN paper's rules (LeakyReLU 0.2, no BatchNorm on the input layer, no fully connected hidden
layer): ``Conv(C->w, k4 s2 p1)-LReLU -> Conv(w->2w, k4 s2 p1)-BN-LReLU -> Conv(2w->4w, k3 s1
p0)-BN-LReLU -> Conv(4w->1, k5)`` (28 -> 14 -> 7 -> 5 -> 1), one logit per image
(``GANUpdater``'s losses apply the sigmoid). Measured on MNIST (8,000 images, 500 steps): a
mirror with G's fully connected layers (Linear(fc)-BN1d-LReLU-Linear(1)) barely learned (the
per-batch BatchNorm1d erases what a whole real or fake batch has in common), and without the
BN1d it overpowered G (D loss 4e-4, samples of 9 classes at mean max-probability 0.55).
"""
from __future__ import annotations

import torch
from torch import nn


def make_layer(in_channels: int, out_channels: int, kernel: int, stride: int, padding: int,
               deconv: bool = False, batchnorm: bool = True,
               activation: nn.Module = None) -> nn.Sequential:
    """The seed's ``make_layer``: (transposed) conv, optional BatchNorm, activation (ReLU)."""
    conv_cls = nn.ConvTranspose2d if deconv else nn.Conv2d
    layers = [conv_cls(in_channels, out_channels, kernel, stride, padding)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(activation if activation is not None else nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Generator(nn.Module):
    """Noise ``(B, z_dim)`` -> images ``(B, channels, 28, 28)`` in [0, 1] (sigmoid output).

    Args:
        z_dim: noise size, default 100 (the seed).
        width: channels of the last hidden conv layer ``w`` (layers 4w, 2w, w); seed: 64.
        fc: width of the first fully connected layer; seed: 1024.
        channels: image channels, default 1.
    """

    def __init__(self, z_dim: int = 100, width: int = 64, fc: int = 1024,
                 channels: int = 1) -> None:
        super().__init__()
        self.z_dim, self.width = z_dim, width
        flat = 4 * width * 5 * 5
        self.fc = nn.Sequential(
            nn.Linear(z_dim, fc), nn.BatchNorm1d(fc), nn.ReLU(inplace=True),
            nn.Linear(fc, flat), nn.BatchNorm1d(flat), nn.ReLU(inplace=True))
        self.upsample = nn.Sequential(
            make_layer(4 * width, 2 * width, 3, 1, 0, deconv=True),    # 5 -> 7
            make_layer(2 * width, width, 4, 2, 1, deconv=True),        # 7 -> 14
            nn.ConvTranspose2d(width, channels, 4, 2, 1))              # 14 -> 28

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(-1, 4 * self.width, 5, 5)
        return torch.sigmoid(self.upsample(h))


class Discriminator(nn.Module):
    """Images ``(B, channels, 28, 28)`` -> logits ``(B,)``; the Generator's mirror image."""

    def __init__(self, width: int = 64, channels: int = 1) -> None:
        super().__init__()
        def lrelu() -> nn.Module:
            return nn.LeakyReLU(0.2, inplace=True)
        self.features = nn.Sequential(
            make_layer(channels, width, 4, 2, 1, batchnorm=False, activation=lrelu()),  # 14
            make_layer(width, 2 * width, 4, 2, 1, activation=lrelu()),                 # 7
            make_layer(2 * width, 4 * width, 3, 1, 0, activation=lrelu()))             # 5
        self.head = nn.Sequential(nn.Conv2d(4 * width, 1, 5), nn.Flatten(0))        # 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialisation (``module.apply(dcgan_init)``): conv/linear weights N(0, 0.02),
    BatchNorm weights N(1, 0.02), biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def init_output_bias(generator: Generator, mean_pixel: float) -> None:
    """Start G's output at the data's mean intensity: last bias = logit(mean_pixel).

    With sigmoid outputs and N(0, 0.02) weights G starts at uniform grey (0.5); MNIST-like
    data is ~0.13 on average, so G would first spend hundreds of Adam steps (lr 2e-4) only
    on darkening the background.
    """
    p = min(max(float(mean_pixel), 1e-3), 1 - 1e-3)
    nn.init.constant_(generator.upsample[-1].bias, float(torch.logit(torch.tensor(p))))
