"""GANUpdater: isolated D/G steps, hand-computed losses, WGAN-GP penalty, n_dis, exact resume."""
import copy

import pytest
import torch

from trainerlib import Trainer
from trainerlib.iterators import SerialIterator
from trainerlib.reporter import Reporter
from trainerlib.updaters import GANUpdater
from trainerlib.updaters.gan_updater import gradient_penalty

NZ, DIM, B = 3, 6, 4
X = torch.randn(32, DIM, generator=torch.Generator().manual_seed(0)) * 0.5 + 1.0
DATA = torch.utils.data.TensorDataset(X, torch.arange(32) % 10)     # (image, label) pairs
LOSSES = ['bce', 'hinge', 'wgan-gp']


class Quadratic(torch.nn.Module):
    """D(x) = sum(v * x^2): its input gradient 2 v x is known in closed form."""

    def __init__(self):
        super().__init__()
        self.v = torch.nn.Parameter(torch.linspace(0.2, 1.4, DIM))

    def forward(self, x):
        return (self.v * x.square()).sum(1)


def nets(seed=0):
    torch.manual_seed(seed)
    gen = torch.nn.Sequential(torch.nn.Linear(NZ, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                              torch.nn.Linear(8, DIM))
    dis = torch.nn.Sequential(torch.nn.Linear(DIM, 8), torch.nn.LeakyReLU(0.2),
                              torch.nn.Linear(8, 1), torch.nn.Flatten(0))
    return gen, dis


def make(loss='bce', seed=0, dis=None, data=DATA, **kw):
    gen, default_dis = nets(seed)
    dis = dis or default_dis
    return GANUpdater(SerialIterator(data, B, shuffle=False), gen, dis,
                      torch.optim.Adam(gen.parameters(), lr=0.01, betas=(0.5, 0.999)),
                      torch.optim.Adam(dis.parameters(), lr=0.01, betas=(0.5, 0.999)),
                      loss=loss, z_dim=NZ, **kw)


def observe(updater, fn, *args):
    """Run ``fn(*args)`` under a reporter that knows 'gen' and 'dis'; return the observation."""
    rep, obs = Reporter(), {}
    for name, model in updater.get_all_models().items():
        rep.add_module(name, model)
    with rep.scope(obs):
        fn(*args)
    return obs


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def identical(module, saved):
    return all(torch.equal(p, s) for p, s in zip(module.parameters(), saved))


@pytest.mark.parametrize('loss', LOSSES)
def test_discriminator_step_leaves_the_generator_bit_identical(loss):
    updater = make(loss)
    gen_before, dis_before = snapshot(updater.gen), snapshot(updater.dis)
    updater.update_discriminator(X[:B])
    assert identical(updater.gen, gen_before)
    assert all(p.grad is None for p in updater.gen.parameters())   # fake batch was detached
    assert not identical(updater.dis, dis_before)


@pytest.mark.parametrize('loss', LOSSES)
def test_generator_step_leaves_the_discriminator_bit_identical(loss):
    updater = make(loss)
    updater.update_discriminator(X[:B])
    updater.dis_opt.zero_grad(set_to_none=True)
    gen_before, dis_before = snapshot(updater.gen), snapshot(updater.dis)
    dis_state = copy.deepcopy(updater.dis_opt.state_dict())
    updater.update_generator(B)
    assert identical(updater.dis, dis_before)
    assert all(p.grad is None and p.requires_grad for p in updater.dis.parameters())
    assert str(updater.dis_opt.state_dict()) == str(dis_state)
    assert not identical(updater.gen, gen_before)
    assert all(p.grad is not None for p in updater.gen.parameters())


def hand_dis_loss(loss, dis, real, fake, alpha):
    r, f = dis(real), dis(fake)
    if loss == 'bce':
        return -torch.log(torch.sigmoid(r)).mean() - torch.log(1 - torch.sigmoid(f)).mean()
    if loss == 'hinge':
        return torch.clamp(1 - r, min=0).mean() + torch.clamp(1 + f, min=0).mean()
    x = (alpha[:, None] * real + (1 - alpha[:, None]) * fake).requires_grad_(True)
    grad, = torch.autograd.grad(dis(x).sum(), x)
    return f.mean() - r.mean() + 10.0 * ((grad.norm(dim=1) - 1) ** 2).mean()


@pytest.mark.parametrize('loss', LOSSES)
def test_losses_equal_hand_formulas(loss):
    updater = make(loss)
    gen0, dis0 = copy.deepcopy(updater.gen), copy.deepcopy(updater.dis)
    real = X[:B]
    torch.manual_seed(1)
    obs = observe(updater, updater.update_discriminator, real)
    torch.manual_seed(1)                        # the updater draws z, then (WGAN-GP) alpha
    fake = gen0(torch.randn(B, NZ)).detach()
    alpha = torch.rand(B)
    torch.testing.assert_close(obs['dis/loss'], hand_dis_loss(loss, dis0, real, fake, alpha))
    assert ('dis/gp' in obs) == (loss == 'wgan-gp')

    dis1 = copy.deepcopy(updater.dis)           # G's loss goes through the *updated* D
    torch.manual_seed(2)
    obs = observe(updater, updater.update_generator, B)
    torch.manual_seed(2)
    f = dis1(gen0(torch.randn(B, NZ)))
    want = -torch.log(torch.sigmoid(f)).mean() if loss == 'bce' else -f.mean()
    torch.testing.assert_close(obs['gen/loss'], want)


@pytest.mark.parametrize('real_label', [1.0, 0.9, 0.5])
def test_bce_real_label_is_one_sided_smoothing(real_label):
    updater = make('bce', real_label=real_label)
    gen0, dis0 = copy.deepcopy(updater.gen), copy.deepcopy(updater.dis)
    real = X[:B]
    torch.manual_seed(1)
    obs = observe(updater, updater.update_discriminator, real)
    torch.manual_seed(1)
    r, f = dis0(real), dis0(gen0(torch.randn(B, NZ)).detach())
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    want = bce(r, torch.full_like(r, real_label)) + bce(f, torch.zeros_like(f))
    torch.testing.assert_close(obs['dis/loss'], want)
    torch.manual_seed(2)                        # G's loss does not depend on the label
    obs = observe(updater, updater.update_generator, B)
    torch.manual_seed(2)
    f = updater.dis(gen0(torch.randn(B, NZ)))
    torch.testing.assert_close(obs['gen/loss'], bce(f, torch.ones_like(f)))


def test_wgan_gp_penalty_equals_a_direct_computation():
    dis = Quadratic()
    real, fake = X[:B], torch.randn(B, DIM, generator=torch.Generator().manual_seed(3))
    alpha = torch.tensor([0.1, 0.5, 0.7, 1.0])
    x = alpha[:, None] * real + (1 - alpha[:, None]) * fake
    want = ((2 * dis.v * x).norm(dim=1) - 1).square().mean()
    torch.testing.assert_close(gradient_penalty(dis, real, fake, alpha), want)
    # inside the D step, with seeded interpolation weights; the penalty is differentiable
    updater = make('wgan-gp', dis=Quadratic())
    torch.manual_seed(4)
    obs = observe(updater, updater.update_discriminator, real)
    torch.manual_seed(4)
    fake = updater.gen(torch.randn(B, NZ)).detach()
    alpha = torch.rand(B)[:, None]
    x = alpha * real + (1 - alpha) * fake
    torch.testing.assert_close(obs['dis/gp'], ((2 * dis.v * x).norm(dim=1) - 1).square().mean())
    assert obs['dis/gp'] > 0


def trainer_for(updater, until, record=None):
    """A trainer that writes nothing; ``record`` collects (gen/loss, dis/loss) per iteration."""
    trainer = Trainer(updater, (until, 'iteration'), out='unused')
    trainer._prepare_out = lambda: None
    if record is not None:
        trainer.extend(lambda tr: record.append((tr.observation['gen/loss'],
                                                 tr.observation['dis/loss'])))
    return trainer


def run(updater, until, record=None):
    trainer = trainer_for(updater, until, record)
    trainer.run()
    return trainer


@pytest.mark.parametrize('data', [DATA, X], ids=['pairs', 'tensor'])
def test_n_dis_steps_per_iteration(data):
    updater = make('wgan-gp', n_dis=3, data=data)
    steps = []
    updater.dis_opt.register_step_post_hook(lambda *a: steps.append('D'))
    updater.gen_opt.register_step_post_hook(lambda *a: steps.append('G'))
    run(updater, 2)
    assert steps == ['D', 'D', 'D', 'G'] * 2
    assert updater.iteration == 2
    assert updater.epoch_detail == 6 * B / len(X)     # each D step consumes a real batch


@pytest.mark.parametrize('loss', LOSSES)
def test_resume_is_bit_identical(tmp_path, loss):
    full, want = make(loss, n_dis=2), []
    run(full, 6, want)
    first = run(make(loss, n_dis=2), 3)
    torch.save(first.state_dict(), tmp_path / 'state.pt')
    resumed, got = make(loss, n_dis=2, seed=7), []     # other init: must be overwritten
    trainer = trainer_for(resumed, 6, got)
    trainer.load_state_dict(torch.load(tmp_path / 'state.pt', weights_only=True))
    assert resumed.iteration == 3
    trainer.run()
    assert len(got) == 3
    assert all(torch.equal(a, b) for pair, ref in zip(got, want[3:]) for a, b in zip(pair, ref))
    for name in ('gen', 'dis'):
        a, b = full.get_model(name).state_dict(), resumed.get_model(name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_amp_bfloat16_on_cpu_runs():
    updater = make('hinge', amp=True, device='cpu')
    assert updater.amp.dtype is torch.bfloat16
    record = []
    run(updater, 3, record)
    assert all(torch.isfinite(v).all() for pair in record for v in pair)


def test_custom_noise_and_bad_arguments():
    shapes = []
    updater = make(noise=lambda b, device: shapes.append(b) or torch.rand(b, NZ, device=device))
    run(updater, 1)
    assert shapes == [B, B]
    gen, dis = nets()
    opt = torch.optim.SGD(gen.parameters(), lr=0.1)
    it = SerialIterator(DATA, B)
    with pytest.raises(ValueError, match='loss must be one of'):
        GANUpdater(it, gen, dis, opt, opt, loss='lsgan', z_dim=NZ)
    with pytest.raises(ValueError, match='n_dis'):
        GANUpdater(it, gen, dis, opt, opt, n_dis=0, z_dim=NZ)
    with pytest.raises(ValueError, match='z_dim'):
        GANUpdater(it, gen, dis, opt, opt)
    for loss, label in [('bce', 0.0), ('bce', 1.1), ('hinge', 0.9)]:
        with pytest.raises(ValueError, match='real_label'):
            GANUpdater(it, gen, dis, opt, opt, loss=loss, real_label=label, z_dim=NZ)
