"""MeaningfulPerturbationUpdater on synthetic data: each loss term's gradient against a hand
computation, clamp, upsampling, jitter determinism, exact resume, a frozen classifier, and
the over-confident-classifier pitfall (masks that never move) with its circular-init fix."""
import copy
import os
import sys

import pytest
import torch
import torch.nn.functional as F

from trainerlib import Trainer
from trainerlib.serialization import load_state, save_state
from trainerlib.updaters import MeaningfulPerturbationUpdater as Updater
from trainerlib.updaters.perturbation_updater import (circle_masks, gaussian_blur, l1_deletion,
                                                      perturb, total_variation, upsample)

torch.set_flush_denormal(True)


def linear_net(side=6, classes=3, seed=0, scale=1.0, dtype=torch.float64):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(side * side, classes))
    with torch.no_grad():
        net[1].weight.mul_(scale)
    return net.to(dtype)


def data(n=4, side=6, classes=3, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, side, side, generator=g, dtype=dtype)
    return x, torch.arange(n) % classes


def test_l1_gradient_is_minus_weight_over_size():
    x, t = data()
    u = Updater(x, t, linear_net(), mask_size=3, l1_weight=0.7, init='ones')
    m = torch.rand(4, 1, 3, 3, dtype=torch.float64).mul(0.9).requires_grad_()
    l1, _, _ = u.loss_terms(x, t, u.reference(x), m=m)
    grad, = torch.autograd.grad(0.7 * l1.sum(), m)
    assert torch.equal(l1_deletion(torch.ones(2, 1, 3, 3)), torch.zeros(2))
    torch.testing.assert_close(grad, torch.full_like(m, -0.7 / 9))


def hand_tv_grad(m, beta):
    """d/dm of mean_{i,j}|m[i+1,j]-m[i,j]|^b + mean|m[i,j+1]-m[i,j]|^b for one (h, w) mask."""
    h, w = m.shape
    g = torch.zeros_like(m)
    for i in range(h):
        for j in range(w):
            for (a, b), n in ((((i + 1, j), (i, j)), (h - 1) * w), (((i, j + 1), (i, j)), h * (w - 1))):
                if a[0] < h and a[1] < w:
                    d = m[a] - m[b]
                    term = beta * abs(d) ** (beta - 1) * torch.sign(d) / n
                    g[a] += term
                    g[b] -= term
    return g


@pytest.mark.parametrize('beta', [3.0, 2.0, 1.5])
def test_tv_gradient_matches_hand_computation(beta):
    m = torch.rand(2, 1, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    m.requires_grad_()
    grad, = torch.autograd.grad(total_variation(m, beta).sum(), m)
    for k in range(2):
        torch.testing.assert_close(grad[k, 0], hand_tv_grad(m[k, 0].detach(), beta))
    assert torch.equal(total_variation(torch.full((1, 1, 4, 5), 0.3), beta), torch.zeros(1))


@pytest.mark.parametrize('mask_size', [6, 3])
def test_prob_gradient_matches_softmax_by_hand(mask_size):
    """Linear classifier, constant perturbation: dp_c/dM = p_c (W_c - sum_k p_k W_k) (x - mu);
    a 3x3 mask upsampled (nearest, x2) to 6x6 gets the sum over its 2x2 block."""
    x, t = data()
    net = linear_net()
    u = Updater(x, t, net, mask_size=mask_size, perturbation='constant', constant=0.25,
                upsample_mode='nearest', jitter=0, init='ones')
    m = torch.rand(4, 1, mask_size, mask_size, dtype=torch.float64).requires_grad_()
    _, _, prob = u.loss_terms(x, t, u.reference(x), m=m)
    grad, = torch.autograd.grad(prob.sum(), m)

    big = m.detach().repeat_interleave(6 // mask_size, 2).repeat_interleave(6 // mask_size, 3)
    xt = big * x + (1 - big) * 0.25
    W = net[1].weight.detach()
    p = (xt.flatten(1) @ W.T + net[1].bias.detach()).softmax(1)
    for k in range(4):
        c = t[k]
        dp_dxt = p[k, c] * (W[c] - p[k] @ W)                     # (36,)
        dp_dM = (dp_dxt.reshape(6, 6) * (x[k, 0] - 0.25))
        expected = F.avg_pool2d(dp_dM[None, None], 6 // mask_size)[0, 0] * (6 // mask_size) ** 2
        torch.testing.assert_close(grad[k, 0], expected)
        torch.testing.assert_close(prob[k], p[k, c])


def test_one_step_uses_the_weighted_sum_and_clamps():
    x, t = data()
    u = Updater(x, t, linear_net(), mask_size=3, lr=5.0, l1_weight=0.3, tv_weight=0.2,
                perturbation='constant', jitter=0, init=torch.full((4, 1, 3, 3), 0.5))
    m = u.masks.mask.detach().clone().requires_grad_()
    l1, tv, prob = u.loss_terms(x, t, u.reference(x), m=m)
    expected, = torch.autograd.grad((0.3 * l1 + 0.2 * tv + prob).sum(), m)
    u.update()
    torch.testing.assert_close(u.masks.mask.grad, expected)
    mask = u.masks.mask.detach()
    assert mask.min() >= 0 and mask.max() <= 1
    assert ((mask == 0) | (mask == 1)).all()   # lr 5 from 0.5: every value hit a bound


def test_upsampling_shape_and_identities():
    x = torch.rand(2, 3, 12, 20, dtype=torch.float64)
    for mode in ('bilinear', 'nearest'):
        up = upsample(torch.ones(2, 1, 3, 5, dtype=torch.float64), (12, 20), mode)
        assert up.shape == (2, 1, 12, 20) and torch.equal(up, torch.ones_like(up))
    u = Updater(x, torch.tensor([0, 1]), torch.nn.Sequential(torch.nn.Flatten(),
                torch.nn.Linear(720, 2)).double(), mask_size=(3, 5), init='ones')
    assert u.masks.mask.shape == (2, 1, 3, 5) and u.upsampled().shape == (2, 1, 12, 20)
    assert Updater(x, torch.tensor([0, 1]), u.classifier, init='ones').mask_size == (3, 5)
    x0 = torch.rand_like(x)
    ones, zeros = torch.ones(2, 1, 12, 20, dtype=torch.float64), torch.zeros(2, 1, 12, 20,
                                                                              dtype=torch.float64)
    assert torch.equal(perturb(x, ones, x0), x) and torch.equal(perturb(x, zeros, x0), x0)


def test_gaussian_blur_and_circles():
    x = torch.rand(1, 2, 9, 9)
    assert torch.equal(gaussian_blur(x, 0), x)
    flat = gaussian_blur(torch.full((1, 1, 5, 5), 0.4), 10.0)   # kernel wider than the image
    torch.testing.assert_close(flat, torch.full((1, 1, 5, 5), 0.4))
    blurred = gaussian_blur(x, 1.0)
    assert blurred.std() < x.std() and blurred.shape == x.shape
    c = circle_masks((7, 7), [0, 1, 3])
    assert torch.equal(c[0], torch.ones(1, 7, 7)) and c[1, 0, 3, 3] == 0 and c[1, 0, 0, 0] == 1
    assert (1 - c).sum((1, 2, 3)).tolist() == sorted((1 - c).sum((1, 2, 3)).tolist())


def shifts_of(seed, n=50):
    x, t = data()
    u = Updater(x, t, linear_net(), jitter=2, seed=seed, init='ones')
    return [u.draw_shift() for _ in range(n)]


def test_jitter_is_seeded_and_covers_the_range():
    a, b = shifts_of(0), shifts_of(0)
    assert a == b and shifts_of(1) != a
    assert {s for pair in a for s in pair} == {-2, -1, 0, 1, 2}
    x, t = data()
    masks = []
    for _ in range(2):
        u = Updater(x, t, linear_net(), mask_size=3, perturbation='noise', jitter=2, seed=5)
        for _ in range(5):
            u.update()
        masks.append(u.masks.mask.detach().clone())
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], torch.ones_like(masks[0]))


@pytest.mark.parametrize('perturbation', ['blur', 'noise', 'constant'])
def test_save_load_continue_is_bit_identical(tmp_path, perturbation):
    x, t = data(dtype=torch.float32)
    net = linear_net(dtype=torch.float32)

    def make():
        return Updater(x, t, net, mask_size=3, perturbation=perturbation, blur_sigma=1.0,
                       jitter=1, seed=7)

    straight = make()
    for _ in range(10):
        straight.update()
    first = make()
    for _ in range(4):
        first.update()
    save_state(first.state_dict(), str(tmp_path / 'state'))
    for _ in range(3):       # the live updater keeps going; the snapshot is of step 4
        first.update()
    resumed = make()
    resumed.load_state_dict(load_state(str(tmp_path / 'state')))
    assert resumed.iteration == 4
    for _ in range(6):
        resumed.update()
    assert resumed.iteration == 10
    assert torch.equal(resumed.masks.mask, straight.masks.mask)
    assert resumed.draw_shift() == straight.draw_shift()
    assert torch.equal(resumed.reference(x), straight.reference(x))   # noise generator too


class BNNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4 * 36, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def test_classifier_stays_frozen_and_bit_identical(tmp_path):
    torch.manual_seed(0)
    net = BNNet()
    net.train()
    with torch.no_grad():
        net.bn.running_mean.normal_()
    before = copy.deepcopy(net.state_dict())
    x, t = data(dtype=torch.float32)
    u = Updater(x, t, net, mask_size=3, perturbation='blur', blur_sigma=1.0)
    trainer = Trainer(u, (8, 'iteration'), out=str(tmp_path))
    trainer.run()
    assert not net.training and all(not p.requires_grad and p.grad is None
                                    for p in net.parameters())
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    obs = trainer.observation
    assert set(obs) >= {'main/loss', 'main/l1', 'main/tv', 'main/prob'}
    assert 0 <= obs['main/l1'] <= 1 and 0 < obs['main/prob'] < 1
    torch.testing.assert_close(obs['main/loss'], 0.05 * obs['main/l1'] + 0.2 * obs['main/tv']
                               + obs['main/prob'])


def test_hot_path_converts_no_tensor_to_host(monkeypatch, tmp_path):
    """Nothing of ours reduces a tensor to a Python value per iteration (torch's Adam reads
    its CPU step counter with .item(); that is no device sync and is not counted)."""
    x, t = data(dtype=torch.float32)
    u = Updater(x, t, linear_net(dtype=torch.float32), mask_size=3, perturbation='noise')
    trainer = Trainer(u, (5, 'iteration'), out=str(tmp_path))
    calls = []

    def guard(name, original):
        def checked(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if os.sep + os.path.join('torch', 'optim') + os.sep not in caller:
                calls.append((name, caller))
            return original(self, *args, **kwargs)
        return checked

    for name in ['item', 'tolist', 'numpy', '__float__', '__int__', '__bool__', '__index__']:
        monkeypatch.setattr(torch.Tensor, name, guard(name, getattr(torch.Tensor, name)))
    trainer.run()
    monkeypatch.undo()
    assert calls == [] and u.iteration == 5


def planted(n=8, side=12, seed=0):
    """Class 0/1: a bright 4x4 square at a fixed place in the left/right half, on faint
    noise; the classifier sums each square's window (a template matcher)."""
    g = torch.Generator().manual_seed(seed)
    x = 0.1 * torch.rand(n, 1, side, side, generator=g)
    t = torch.arange(n) % 2
    for k in range(n):
        col = 1 if t[k] == 0 else side - 5
        x[k, 0, 4:8, col:col + 4] = 1.0
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(side * side, 2))
    with torch.no_grad():
        w = torch.zeros(2, side, side)
        w[0, 4:8, 1:5], w[1, 4:8, side - 5:side - 1] = 1.0, 1.0
        net[1].weight.copy_(w.flatten(1))
        net[1].bias.zero_()
    return x, t, net


def test_overconfident_classifier_stalls_the_mask_and_circle_init_fixes_it():
    x, t, net = planted()
    with torch.no_grad():
        net[1].weight.mul_(10)   # logit margin ~160: p_c == 1.0 in float32
    kw = dict(mask_size=6, perturbation='constant', constant=0.0, jitter=0, lr=0.1)
    with pytest.warns(UserWarning, match='saturated'):
        stalled = Updater(x, t, net, init='ones', **kw)
    assert torch.equal(stalled.initial_prob, torch.ones(8))
    for _ in range(30):
        stalled.update()
    assert torch.equal(stalled.masks.mask, torch.ones_like(stalled.masks.mask))  # area 0

    fixed = Updater(x, t, net, init='auto', **kw)
    start = fixed.masks.mask.detach().clone()
    assert (start < 1).any(dim=(1, 2, 3)).all()          # every image got a deleted disk
    for _ in range(100):
        fixed.update()
    mask = fixed.upsampled().detach()
    assert not torch.equal(fixed.masks.mask, start)
    with torch.no_grad():
        after = fixed.class_prob(perturb(x, mask, torch.zeros_like(x)), t)
    assert after.mean() < 0.5
    deleted = 1 - mask[:, 0]
    own = torch.stack([deleted[k, 4:8, 1:5] if t[k] == 0 else deleted[k, 4:8, 7:11]
                       for k in range(8)])
    other = torch.stack([deleted[k, 4:8, 7:11] if t[k] == 0 else deleted[k, 4:8, 1:5]
                         for k in range(8)])
    assert own.mean() > 0.9 and other.mean() < 0.25    # it deletes the evidence, not the rest


def test_auto_init_keeps_ones_for_a_calibrated_classifier():
    x, t, net = planted()
    with torch.no_grad():
        net[1].weight.mul_(0.05)
    u = Updater(x, t, net, init='auto', mask_size=6)
    assert (u.initial_prob < 0.99).all()
    assert torch.equal(u.masks.mask, torch.ones_like(u.masks.mask))


@pytest.mark.parametrize('kwargs, match', [
    (dict(perturbation='fog'), 'perturbation'),
    (dict(init='square'), 'init'),
    (dict(init=torch.ones(4, 1, 2, 2)), 'mask size'),
])
def test_bad_arguments(kwargs, match):
    x, t = data()
    with pytest.raises(ValueError, match=match):
        Updater(x, t, linear_net(), mask_size=3, **kwargs)
