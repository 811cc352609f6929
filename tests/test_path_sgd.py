"""Path-SGD: γ equals path enumeration, rescaling invariance, refusals, state, updater, digits."""
import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainerlib import Trainer
from trainerlib.iterators import SerialIterator
from trainerlib.optimizers import (GammaFactors, PathSGD, UnsupportedModuleError,
                                   path_gamma_factors, path_gammas, path_regularizer)
from trainerlib.updaters import PathSGDUpdater

torch.set_flush_denormal(True)


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """These nets are tiny: extra threads only add contention (seconds on a busy CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 5), nn.ReLU(),
                         nn.Linear(5, 2)).double()


def cnn(seed=0, pool=None):
    """§1.10 B's CNN on 1x8x8 (pool=None), or conv-ReLU-pool-conv-Linear on 1x6x6."""
    torch.manual_seed(seed)
    if pool is None:
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                             nn.Linear(96, 3)).double()
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), pool(2),
                         nn.Conv2d(2, 3, 2), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
                         nn.Linear(12, 2)).double()


# -- brute force: unroll every layer into explicit edges, enumerate every path ---------------
def unroll(model, shape):
    """Per layer, ``{src: [(dst, weight, key)]}`` and its bias edges ``[(dst, weight, key)]``."""
    layers, names = [], {id(p): n for n, p in model.named_parameters()}
    for m in model:
        out, bias = {}, []
        if isinstance(m, nn.Linear):
            for j in range(m.out_features):
                for i in range(m.in_features):
                    out.setdefault(i, []).append((j, m.weight[j, i].item(),
                                                  (names[id(m.weight)], j * m.in_features + i)))
                bias.append((j, m.bias[j].item(), (names[id(m.bias)], j)))
            shape = (m.out_features,)
        elif isinstance(m, (nn.Conv2d, nn.AvgPool2d, nn.MaxPool2d)):
            conv = isinstance(m, nn.Conv2d)
            c, h, w = shape
            k, s, pad = (m.kernel_size[0], m.stride[0], m.padding[0]) if conv else \
                (m.kernel_size, m.stride, m.padding)
            co = m.out_channels if conv else c
            ho, wo = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
            for o in range(co):
                for y in range(ho):
                    for x in range(wo):
                        dst = (o * ho + y) * wo + x
                        if conv:
                            bias.append((dst, m.bias[o].item(), (names[id(m.bias)], o)))
                        for ci in (range(c) if conv else [o]):
                            for dy in range(k):
                                for dx in range(k):
                                    yi, xi = y * s - pad + dy, x * s - pad + dx
                                    if not (0 <= yi < h and 0 <= xi < w):
                                        continue
                                    src = (ci * h + yi) * w + xi
                                    if conv:
                                        flat = ((o * c + ci) * k + dy) * k + dx
                                        edge = (dst, m.weight.flatten()[flat].item(),
                                                (names[id(m.weight)], flat))
                                    else:   # avg: weight 1/k², max: 1 (ALGORITHMS.md §1.3)
                                        edge = (dst, 1 / k ** 2 if isinstance(
                                            m, nn.AvgPool2d) else 1.0, None)
                                    out.setdefault(src, []).append(edge)
            shape = (co, ho, wo)
        else:
            continue   # ReLU, Flatten, Dropout: no edges, same node order
        layers.append((out, bias))
    return layers


def brute_force_gammas(model, input_shape, p):
    layers = unroll(model, input_shape)
    sums = {n: [0.0] * q.numel() for n, q in model.named_parameters()}
    phi_p = [0.0]   # Σ_paths Π |w|^p

    def walk(level, node, path):
        if level == len(layers):
            phi_p[0] += math.prod(abs(v) ** p for v, _ in path)
            for i, (_, key) in enumerate(path):
                if key is not None:
                    sums[key[0]][key[1]] += math.prod(abs(v) ** p for j, (v, _) in
                                                      enumerate(path) if j != i)
            return
        for dst, v, key in layers[level][0].get(node, []):
            walk(level + 1, dst, path + [(v, key)])

    for node in range(math.prod(input_shape)):
        walk(0, node, [])
    for level, (_, bias) in enumerate(layers):
        for dst, v, key in bias:
            walk(level + 1, dst, [(v, key)])
    gammas = {n: torch.tensor(s, dtype=torch.float64).pow(2 / p).reshape(q.shape)
              for (n, q), s in zip(model.named_parameters(), sums.values())}
    return gammas, phi_p[0] ** (1 / p)


@pytest.mark.parametrize('make, shape, p', [
    (mlp, (3,), 2), (mlp, (3,), 1), (mlp, (3,), 3),
    (lambda: cnn(pool=None), (1, 4, 4), 2),
    (lambda: cnn(pool=nn.AvgPool2d), (1, 6, 6), 2),
    (lambda: cnn(pool=nn.MaxPool2d), (1, 6, 6), 2)])
def test_gamma_equals_path_enumeration(make, shape, p):
    model = make()
    if shape == (1, 4, 4):
        model[-1] = nn.Linear(24, 3).double()   # conv stride 2 on 4x4 → 6x2x2
    with torch.no_grad():
        for q in model.parameters():
            q.mul_(1.5)   # γ of order 1, not tiny
    expected, phi = brute_force_gammas(model, shape, p)
    gammas = path_gammas(model, shape, p)
    for name, q in model.named_parameters():
        torch.testing.assert_close(gammas[q], expected[name], rtol=1e-12, atol=1e-12)
    assert path_regularizer(model, shape, p).item() == pytest.approx(phi, rel=1e-12)


def autograd_gammas(model, shape, p):
    """γ_p as ∂ out.sum() / ∂|w|^p of the squared network, every weight through autograd."""
    squared = copy.deepcopy(model)   # (deepcopy keeps shared weights shared)
    for m in squared.modules():
        if isinstance(m, nn.ReLU):
            m.forward = lambda x: x   # the squared network: ReLU → identity, weights → |w|^p
    with torch.no_grad():
        for q in squared.parameters():
            q.abs_().pow_(p)
    out = squared(torch.ones(1, *shape, dtype=torch.float64))
    grads = torch.autograd.grad(out.sum(), list(squared.parameters()))
    return {q: g.pow(2 / p) for q, g in zip(model.parameters(), grads)}


def shared_linear():
    """One Linear used twice: its γ sums two rank-one terms, so it is not factored."""
    torch.manual_seed(0)
    lin = nn.Linear(4, 4)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), lin, nn.ReLU(), lin).double()


def linear_over_positions():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)).double()


def flattened_mlp():
    """Its first Linear is fed the all-ones input through Flatten (row sums of |w|^p)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double()


@pytest.mark.parametrize('make, shape, p, factored', [
    (mlp, (3,), 2, [True, True, True]), (mlp, (3,), 3, [True, True, True]),
    (flattened_mlp, (1, 2, 2), 2, [True, True]), (flattened_mlp, (1, 2, 2), 1, [True, True]),
    (shared_linear, (3,), 2, [True, False]),            # the shared Linear: its sum of uses
    (linear_over_positions, (2, 3), 2, [False, True]),  # a Linear applied at 2 positions
    (cnn, (1, 8, 8), 2, [False, False, True])])
def test_linear_gammas_are_factored_where_rank_one(make, shape, p, factored):
    model = make()
    parts = path_gamma_factors(model, shape, p)
    expected = autograd_gammas(model, shape, p)
    weights = [q for name, q in model.named_parameters() if name.endswith('weight')]
    assert [isinstance(parts[q], GammaFactors) for q in weights] == factored
    gammas = path_gammas(model, shape, p)
    for q, part in parts.items():
        dense = torch.outer(*part) if isinstance(part, GammaFactors) else part
        torch.testing.assert_close(dense, expected[q], rtol=1e-12, atol=0)
        torch.testing.assert_close(gammas[q], expected[q], rtol=1e-12, atol=0)


@pytest.mark.parametrize('make, shape', [(mlp, (3,)), (cnn, (1, 8, 8)),
                                         (linear_over_positions, (2, 3))])
@pytest.mark.parametrize('momentum, weight_decay', [(0., 0.), (0.9, 0.01)])
def test_step_follows_the_update_rule(make, shape, momentum, weight_decay):
    """Two steps against w ← (1 − ηλ)w − η·buf, buf = μ·buf + g / max(γ, tiny)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, *shape, generator=g, dtype=torch.float64)
    t = torch.randint(0, 2, (8,), generator=g)
    model, lr = make(), 0.05
    ref = copy.deepcopy(model)
    opt = PathSGD(model, lr, momentum, weight_decay, input_shape=shape)
    bufs = {}
    for _ in range(2):
        train(model, opt, x, t, steps=1)
        ref.zero_grad()
        F.cross_entropy(ref(x), t).backward()
        gammas = autograd_gammas(ref, shape, 2)
        with torch.no_grad():
            for name, q in ref.named_parameters():
                d = q.grad / gammas[q].clamp_min(torch.finfo(q.dtype).tiny)
                bufs[name] = d if name not in bufs or not momentum else \
                    momentum * bufs[name] + d
                q.mul_(1 - lr * weight_decay).sub_(lr * bufs[name])
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


# -- rescaling invariance (Theorem 4.1) ------------------------------------------------------
def rescale(model, seed=1):
    """ρ: each hidden unit/channel k of a weight layer × c_k (row + bias), next layer ÷ c_k."""
    g = torch.Generator().manual_seed(seed)
    layers = [m for m in model if isinstance(m, (nn.Linear, nn.Conv2d))]
    factors = []
    with torch.no_grad():
        for a, b in zip(layers, layers[1:]):
            c = 10 ** (4 * torch.rand(a.weight.shape[0], generator=g, dtype=torch.float64) - 2)
            a.weight.mul_(c.view(-1, *[1] * (a.weight.dim() - 1)))
            a.bias.mul_(c)
            per = b.weight.shape[1] // len(c)   # inputs of b per unit of a (Flatten: H*W)
            b.weight.div_(c.repeat_interleave(per).view(1, -1, *[1] * (b.weight.dim() - 2)))
            factors.append(c)
    return factors


def train(model, opt, x, t, steps=10):
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), t).backward()
        opt.step()


@pytest.mark.parametrize('make, shape, lr', [(mlp, (3,), 0.1), (cnn, (1, 8, 8), 0.05)])
@pytest.mark.parametrize('momentum, weight_decay', [(0., 0.), (0.9, 0.01)])
def test_rescaling_invariance(make, shape, lr, momentum, weight_decay):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, *shape, generator=g, dtype=torch.float64)
    t = torch.randint(0, 2, (16,), generator=g)
    base = make()
    scaled = copy.deepcopy(base)
    rescale(scaled)
    assert (base(x) - scaled(x)).abs().max() < 1e-12
    path = {}
    for name, model in (('base', copy.deepcopy(base)), ('scaled', copy.deepcopy(scaled))):
        train(model, PathSGD(model, lr, momentum, weight_decay), x, t)
        path[name] = model
    assert (path['base'](x) - path['scaled'](x)).abs().max() < 1e-10
    moved = copy.deepcopy(path['base'])
    rescale(moved)   # same factors (same seed): w̃(t) = ρ(w(t))
    for a, b in zip(moved.parameters(), path['scaled'].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    sgd = {}
    for name, model in (('base', copy.deepcopy(base)), ('scaled', copy.deepcopy(scaled))):
        train(model, torch.optim.SGD(model.parameters(), lr, momentum), x, t)
        sgd[name] = model
    diff = (sgd['base'](x) - sgd['scaled'](x)).abs().max()
    assert not diff <= 1e-3   # differs (or diverged to NaN)


# -- refusals, hygiene, state ----------------------------------------------------------------
class Custom(nn.Module):
    def forward(self, x):
        return x


@pytest.mark.parametrize('bad, name', [(nn.BatchNorm1d(4), 'BatchNorm1d'),
                                       (nn.LayerNorm(4), 'LayerNorm'), (nn.Tanh(), 'Tanh'),
                                       (Custom(), 'Custom')])
def test_modules_outside_the_theory_are_refused(bad, name):
    model = nn.Sequential(nn.Linear(3, 4), bad, nn.Linear(4, 2))
    with pytest.raises(UnsupportedModuleError, match=rf"'1' \({name}\)"):
        PathSGD(model, 0.1)


def test_gamma_is_fresh_and_does_not_touch_the_model():
    model, x = cnn(), torch.randn(4, 1, 8, 8, dtype=torch.float64)
    opt = PathSGD(model, 0.1)
    before = model(x)
    assert opt.input_shape == (1, 8, 8) and not model._forward_pre_hooks   # hook removed
    first, second = opt.gammas(), opt.gammas()
    assert all(torch.equal(first[q], second[q]) for q in model.parameters())
    assert torch.equal(model(x), before) and all(q.grad is None for q in model.parameters())


def test_input_shape_is_needed_before_the_first_step():
    model = cnn()
    with pytest.raises(RuntimeError, match='input shape'):
        PathSGD(model, 0.1).step()


def test_zero_gamma_edges_get_no_step():
    g = torch.Generator().manual_seed(0)
    model, x = mlp(), torch.randn(8, 3, generator=g, dtype=torch.float64)
    t = torch.randint(0, 2, (8,), generator=g)
    with torch.no_grad():
        model[0].weight[1] = 0.   # unit 1 of layer 1 is dead: its out-edges lie on no path
        model[0].bias[1] = 0.
    out_edges = model[2].weight[:, 1].clone()
    opt = PathSGD(model, 0.1, momentum=0.9)
    assert torch.all(opt.gammas()[model[2].weight][:, 1] == 0)
    train(model, opt, x, t, steps=3)
    assert all(torch.isfinite(q).all() for q in model.parameters())
    assert torch.equal(model[2].weight[:, 1], out_edges)


def test_state_dict_round_trip_continues_identically():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1, 8, 8, generator=g, dtype=torch.float64)
    t = torch.randint(0, 3, (8,), generator=g)
    model = cnn()
    opt = PathSGD(model, 0.05, momentum=0.9, weight_decay=0.01)
    train(model, opt, x, t, steps=3)
    buffer = io.BytesIO()
    torch.save({'model': model.state_dict(), 'opt': opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = cnn(seed=5)
    resumed.load_state_dict(saved['model'])
    opt2 = PathSGD(resumed, 0.05, momentum=0.9, weight_decay=0.01)
    opt2.load_state_dict(saved['opt'])
    assert opt2.input_shape == (1, 8, 8)
    train(model, opt, x, t, steps=3)
    train(resumed, opt2, x, t, steps=3)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), resumed.parameters()))


def test_updater_equals_a_hand_written_path_sgd_loop():
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 3, generator=g, dtype=torch.float64),
                                          torch.randint(0, 2, (32,), generator=g))
    ref = mlp()
    opt = PathSGD(ref, 0.1, momentum=0.5)
    for i in range(6):
        x, t = data[(i * 8) % 32:(i * 8) % 32 + 8]
        opt.zero_grad()
        F.cross_entropy(ref(x), t).backward()
        opt.step()
    model = mlp()
    updater = PathSGDUpdater(SerialIterator(data, 8, shuffle=False), model, lr=0.1,
                             momentum=0.5, loss_func=lambda x, t: F.cross_entropy(model(x), t))
    trainer = Trainer(updater, (6, 'iteration'), out='unused')
    trainer._prepare_out = lambda: None   # nothing is written
    trainer.run()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), ref.parameters()))
    with pytest.raises(TypeError, match='PathSGD'):
        PathSGDUpdater(SerialIterator(data, 8), model, torch.optim.SGD(model.parameters(), 0.1))


# -- unbalanced initialisation on real digits (ALGORITHMS.md §1.10 C) ------------------------
def digits_split():
    from trainerlib.datasets import get_digits
    x, y = get_digits(flatten=True).datasets
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    mean, std = x[:1500].mean(0), x[:1500].std(0) + 1e-3
    x = (x - mean) / std
    return x[:1500], y[:1500], x[1500:], y[1500:]


def digits_mlp(unbalanced, seed=0):
    """64-256-256-10, N(0, 1/fan_in), zero biases; unbalanced: 128 units/layer × s, next ÷ s."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, 10))
    layers = model[::2]
    with torch.no_grad():
        for m in layers:
            m.weight.normal_(0, m.in_features ** -0.5)
            m.bias.zero_()
        if unbalanced:
            for a, b in zip(layers, layers[1:]):
                for k in torch.randint(0, 256, (128,)).tolist():
                    s = 10 * math.exp(torch.randn(()).item())
                    a.weight[k] *= s
                    a.bias[k] *= s
                    b.weight[:, k] /= s
    return model


def fit(model, opt, data, epochs=20):
    """Batch 100, fixed order per seed; returns per-epoch full-train CE and final test error."""
    xtr, ytr, xte, yte = data
    g, curve = torch.Generator().manual_seed(1), []
    for _ in range(epochs):
        for idx in torch.randperm(len(xtr), generator=g).split(100):
            opt.zero_grad()
            F.cross_entropy(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
        with torch.no_grad():
            curve.append(F.cross_entropy(model(xtr), ytr).item())
    with torch.no_grad():
        error = (model(xte).argmax(1) != yte).float().mean().item()
    return torch.tensor(curve, dtype=torch.float64), error


@pytest.mark.slow
def test_path_sgd_is_blind_to_unbalanced_init_on_digits():
    data = digits_split()
    runs = {}
    for unbalanced in (False, True):
        model = digits_mlp(unbalanced)
        runs[unbalanced] = fit(model, PathSGD(model, lr=0.1), data)
    (balanced, err_b), (unbal, err_u) = runs[False], runs[True]
    # equal up to float32 rounding (measured: relative differences up to 1.3e-5)
    torch.testing.assert_close(unbal, balanced, rtol=1e-4, atol=0)
    assert balanced[-1] < 0.01 and err_b < 0.05 and err_u < 0.05
    for lr in (1e-3, 3e-4, 1e-4):   # SGD on the unbalanced net stalls or diverges …
        model = digits_mlp(True)
        curve, _ = fit(model, torch.optim.SGD(model.parameters(), lr), data)
        assert not curve[-1] <= 0.05, (lr, curve[-1].item())
    model = digits_mlp(False)   # … though the data and the net are fine when balanced
    curve, _ = fit(model, torch.optim.SGD(model.parameters(), 1.0), data)
    assert curve[-1] < 0.01


def test_updater_with_a_classifier_records_the_input_shape():
    from trainerlib import Classifier
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(16, 1, 8, 8, generator=g),
                                          torch.randint(0, 3, (16,), generator=g))
    model = Classifier(cnn().float())
    before = [q.clone() for q in model.parameters()]
    updater = PathSGDUpdater(SerialIterator(data, 8), model, lr=0.05)
    trainer = Trainer(updater, (2, 'iteration'), out='unused')
    trainer._prepare_out = lambda: None
    trainer.run()
    assert updater.get_optimizer('main').input_shape == (1, 8, 8)
    assert 'main/loss' in trainer.observation
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
