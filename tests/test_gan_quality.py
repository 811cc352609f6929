"""DCGAN sanity run on real data (ALGORITHMS.md §3.4): sklearn digits, 500 GANUpdater steps.

Samples are judged by a small classifier trained here on the same digits: classifier score
IS_C = exp(E KL(p(y|x) || p(y))), Fréchet distance in its penultimate features, classes hit.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainerlib import Trainer
from trainerlib.datasets import TupleDataset, get_digits
from trainerlib.iterators import SerialIterator
from trainerlib.updaters import GANUpdater

NZ, STEPS, N_SAMPLES = 32, 500, 1000


def digits16():
    """The 1,797 digits, bilinear to 16x16, in [-1, 1]; shuffled once with a fixed seed."""
    x, y = get_digits().datasets
    x = F.interpolate(x, size=16, mode='bilinear', align_corners=False) * 2 - 1
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    return x[order], y[order]


def dcgan_init(m):
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def dcgan():
    gen = nn.Sequential(
        nn.ConvTranspose2d(NZ, 128, 4, 1, 0, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
        nn.ConvTranspose2d(128, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.ConvTranspose2d(64, 1, 4, 2, 1, bias=False), nn.Tanh())
    dis = nn.Sequential(
        nn.Conv2d(1, 32, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
        nn.Conv2d(32, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64), nn.LeakyReLU(0.2),
        nn.Conv2d(64, 1, 4, 1, 0, bias=False), nn.Flatten(0))      # logits, shape (B,)
    return gen.apply(dcgan_init), dis.apply(dcgan_init)


def train_classifier(x, y):
    """Small CNN; returns (logits_fn, features_fn) in eval mode."""
    feats = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(64 * 16, 64), nn.ReLU())
    head = nn.Linear(64, 10)
    opt = torch.optim.Adam([*feats.parameters(), *head.parameters()], lr=1e-3)
    for _ in range(15):
        for idx in torch.randperm(len(y)).split(64):
            opt.zero_grad()
            F.cross_entropy(head(feats(x[idx])), y[idx]).backward()
            opt.step()
    feats.eval()
    return head, feats


def frechet(a, b):
    """‖μa − μb‖² + Tr(Σa + Σb − 2 (Σa Σb)^½) in float64."""
    a, b = a.double(), b.double()
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    sqrt_prod = torch.linalg.eigvals(ca @ cb).sqrt().real.sum()
    return ((a.mean(0) - b.mean(0)).square().sum() + ca.trace() + cb.trace()
            - 2 * sqrt_prod).item()


@torch.no_grad()
def quality(head, feats, images, ref_feats):
    f = feats(images)
    p = F.softmax(head(f), dim=1)
    kl = (p * (p.clamp_min(1e-12).log() - p.mean(0).clamp_min(1e-12).log())).sum(1)
    return {'is': kl.mean().exp().item(), 'fd': frechet(f, ref_feats),
            'classes': len(p.argmax(1).unique())}


@torch.no_grad()
def samples(gen, seed=123):
    gen.eval()
    z = torch.randn(N_SAMPLES, NZ, 1, 1, generator=torch.Generator().manual_seed(seed))
    out = gen(z)
    gen.train()
    return out


@pytest.fixture
def one_thread():
    """Tiny convolutions: one thread is as fast alone and far faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_dcgan_on_digits_learns_all_classes(one_thread):
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    x, y = digits16()
    x_train, y_train, x_held = x[:1500], y[:1500], x[1500:]
    head, feats = train_classifier(x_train, y_train)
    with torch.no_grad():
        held_acc = (head(feats(x_held)).argmax(1) == y[1500:]).float().mean().item()
        ref = feats(x_train)
    assert held_acc > 0.8

    gen, dis = dcgan()
    adam = dict(lr=2e-4, betas=(0.5, 0.999))
    updater = GANUpdater(SerialIterator(TupleDataset(x_train, y_train), 64),
                         gen, dis, torch.optim.Adam(gen.parameters(), **adam),
                         torch.optim.Adam(dis.parameters(), **adam), loss='bce', z_dim=(NZ, 1, 1))
    untrained = quality(head, feats, samples(gen), ref)
    noise = quality(head, feats, torch.rand(N_SAMPLES, 1, 16, 16) * 2 - 1, ref)
    real = quality(head, feats, x_held, ref)

    losses = []
    trainer = Trainer(updater, (STEPS, 'iteration'), out='unused')
    trainer._prepare_out = lambda: None
    trainer.extend(lambda tr: losses.append(torch.stack([tr.observation['gen/loss'],
                                                         tr.observation['dis/loss']])))
    trainer.run()
    trained = quality(head, feats, samples(gen), ref)
    with torch.no_grad():
        dis.eval()
        d_real, d_fake = (torch.sigmoid(dis(v)).mean().item() for v in (x_held, samples(gen)))
    for name, v in [('real', real), ('noise', noise), ('untrained', untrained),
                    ('trained', trained)]:
        print(f'{name:9} IS_C {v["is"]:.2f}  FD {v["fd"]:.1f}  classes {v["classes"]}')
    print(f'classifier held-out acc {held_acc:.3f}; D(x) {d_real:.2f}, D(G(z)) {d_fake:.2f}')

    assert torch.isfinite(torch.stack(losses)).all()
    assert trained['fd'] <= 0.1 * untrained['fd']
    assert trained['is'] >= noise['is'] + 0.3 * (real['is'] - noise['is'])
    assert trained['is'] >= untrained['is'] + 0.3 * (real['is'] - untrained['is'])
    assert trained['classes'] >= 9
    assert d_real > d_fake
