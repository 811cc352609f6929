"""Gradient estimators of nets with sampling inside, against closed forms; baselines; losses."""
import io
import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal

from trainerlib import Trainer
from trainerlib.iterators import SerialIterator
from trainerlib.stochastic import (MovingAverageBaseline, Sampled, bernoulli_nll,
                                   gaussian_kl_divergence, gaussian_nll,
                                   score_function_surrogate)
from trainerlib.updaters import StochasticUpdater

DRAWS = 4000


class BernoulliUnit(torch.nn.Module):
    """z ~ Bernoulli(sigmoid(theta)), f(z) = (z - c)^2 (+ x, a per-example offset).

    E f = p (1 - c)^2 + (1 - p) c^2 + x, so dE/dtheta = p (1 - p) (1 - 2c).
    """

    def __init__(self, theta=0.3, c=0.2):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.tensor(theta))
        self.c = c
        self.offset = torch.nn.Linear(1, 1)          # the learned baseline's parameters

    def forward(self, x):
        q = Bernoulli(logits=self.theta.expand(len(x)))
        z = q.sample()
        return Sampled((z - self.c) ** 2 + x[:, 0], q.log_prob(z))

    def exact_gradient(self):
        p = torch.sigmoid(self.theta).item()
        return p * (1 - p) * (1 - 2 * self.c)


class GaussianUnit(torch.nn.Module):
    """z ~ N(mu, 1), f(z) = (z - a)^2: dE/dmu = 2 (mu - a); pathwise or likelihood-ratio."""

    def __init__(self, reparameterize, mu=0.5, a=2.0):
        super().__init__()
        self.mu = torch.nn.Parameter(torch.tensor(mu))
        self.a, self.reparameterize = a, reparameterize

    def forward(self, x):
        q = Normal(self.mu.expand(len(x)), 1.0)
        if self.reparameterize:
            return Sampled((q.rsample() - self.a) ** 2)
        z = q.sample()
        return Sampled((z - self.a) ** 2, q.log_prob(z))


def updater_of(model, baseline='none', data=None, batch=1, **kw):
    data = data if data is not None else torch.zeros(8, 1)
    return StochasticUpdater(SerialIterator(list(data), batch, seed=0),
                             torch.optim.SGD(model.parameters(), lr=0.1), model,
                             baseline=baseline, **kw)


def estimates(updater, x, param):
    return updater.gradient_estimates((x,), DRAWS, [param])[:, 0]


def within_standard_error(draws, exact, k=4.0):
    se = draws.std() / math.sqrt(len(draws))
    return abs(draws.mean().item() - exact) < k * se.item(), se.item()


@pytest.mark.parametrize('baseline, value', [('none', None), ('moving_average', 0.5),
                                             ('moving_average', 3.0)])
def test_likelihood_ratio_mean_is_the_exact_gradient(baseline, value):
    torch.manual_seed(0)
    model = BernoulliUnit()
    updater = updater_of(model, baseline)
    if value is not None:
        updater.moving_average.value = torch.tensor(value)
    draws = estimates(updater, torch.zeros(1, 1), model.theta)
    ok, se = within_standard_error(draws, model.exact_gradient())
    assert ok, (draws.mean().item(), model.exact_gradient(), se)


def test_a_good_baseline_keeps_the_mean_and_lowers_the_variance():
    torch.manual_seed(0)
    model = BernoulliUnit()
    x = torch.full((1, 1), 5.0)                      # f ~ 5: far from the no-baseline 0
    plain = estimates(updater_of(model, 'none'), x, model.theta)
    centred_updater = updater_of(model, 'moving_average')
    centred_updater.moving_average.value = torch.tensor(5.0 + 0.2)
    centred = estimates(centred_updater, x, model.theta)
    for draws in (plain, centred):
        assert within_standard_error(draws, model.exact_gradient())[0]
    assert centred.var() < plain.var() / 50


def test_learned_baseline_is_fitted_and_keeps_the_mean(tmp_path):
    """x varies per example, so only an input-dependent baseline can centre f."""
    torch.manual_seed(0)
    model = BernoulliUnit()
    data = torch.linspace(-4, 4, 64).reshape(-1, 1)
    updater = updater_of(model, 'learned', data=data, batch=16,
                         baseline_net=lambda x: model.offset(x)[:, 0], decay=0.5)
    model.theta.requires_grad_(False)                # fit the baseline alone first
    trainer = Trainer(updater, (300, 'iteration'), out=str(tmp_path))
    losses = []
    trainer.extend(lambda tr: losses.append(float(tr.observation['main/baseline_loss'])))
    trainer.run()
    # from the spread of x (var 5.5) to that of f given x (var p (1-p) 0.6^2 = 0.09)
    assert losses[0] > 3.0 and sum(losses[-50:]) / 50 < 0.3
    model.theta.requires_grad_(True)
    x = torch.full((1, 1), 3.0)
    learned = estimates(updater, x, model.theta)
    plain = estimates(updater_of(model, 'none'), x, model.theta)
    assert within_standard_error(learned, model.exact_gradient())[0]
    assert learned.var() < plain.var() / 5


def test_reparameterization_and_likelihood_ratio_agree_and_differ_in_variance():
    torch.manual_seed(0)
    exact = 2 * (0.5 - 2.0)
    found = {}
    for reparameterize in (True, False):
        model = GaussianUnit(reparameterize)
        draws = estimates(updater_of(model), torch.zeros(1, 1), model.mu)
        assert within_standard_error(draws, exact)[0], reparameterize
        found[reparameterize] = draws.var().item()
    assert found[True] == pytest.approx(4.0, rel=0.1)            # Var 2(z - a) = 4
    assert found[True] < found[False] / 10


def test_surrogate_gradient_is_f_grad_plus_signal_times_score():
    theta = torch.tensor(0.4, requires_grad=True)
    loss = theta * 3.0                       # f depends on theta directly too
    log_prob = 2.0 * theta
    surrogate = score_function_surrogate(loss.reshape(1), log_prob.reshape(1), baseline=0.2)
    surrogate.sum().backward()
    assert theta.grad.item() == pytest.approx(3.0 + (1.2 - 0.2) * 2.0)


def test_moving_average_baseline_values_and_bad_decay():
    b = MovingAverageBaseline(0.5)
    assert float(b()) == 0.0
    b.update(torch.tensor([2.0, 4.0]))
    b.update(torch.tensor([6.0]))
    assert float(b()) == pytest.approx(0.5 * 3.0 + 0.5 * 6.0)
    with pytest.raises(ValueError, match='decay must be in'):
        MovingAverageBaseline(1.0)


def roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def train(out, stop, state=None):
    torch.manual_seed(0)
    model = BernoulliUnit()
    updater = updater_of(model, 'moving_average', data=torch.randn(24, 1), batch=4, samples=3)
    trainer = Trainer(updater, (stop, 'iteration'), out=str(out))
    if state is not None:
        trainer.load_state_dict(state)
    trainer.run()
    return trainer


def test_moving_average_baseline_resumes_bit_identically(tmp_path):
    """save -> new updater -> load -> continue: parameters and baseline as uninterrupted."""
    full = train(tmp_path / 'full', 10)
    first = train(tmp_path / 'first', 4)
    resumed = train(tmp_path / 'resumed', 10, roundtrip(first.state_dict()))
    a, b = full.updater, resumed.updater
    assert torch.equal(a.moving_average.value, b.moving_average.value)
    assert all(torch.equal(p, q) for p, q in zip(a.get_model('main').parameters(),
                                                 b.get_model('main').parameters()))
    assert first.updater.state_dict()['baseline']['value'] is not None


@pytest.mark.parametrize('kwargs, match', [
    ({'baseline': 'mean'}, 'baseline must be one of'),
    ({'baseline': 'learned'}, 'needs baseline_net'),
    ({'baseline_net': lambda x: x}, 'needs baseline_net'),
    ({'samples': 0}, 'samples must be an integer'),
])
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        updater_of(BernoulliUnit(), **{'baseline': 'none', **kwargs})


def test_a_model_that_does_not_return_sampled_is_one_clear_error():
    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return self.w * x.sum()
    updater = updater_of(Plain())
    with pytest.raises(TypeError, match='must return trainerlib.stochastic.Sampled'):
        updater.gradient_estimates((torch.zeros(1, 1),), 1)


# ---------------------------------------------------------------- Chainer's VAE losses

@pytest.mark.parametrize('reduce', ['sum', 'mean', 'no'])
def test_gaussian_kl_divergence_closed_form(reduce):
    mean, ln_var = torch.tensor([[0.3, -1.0]]), torch.tensor([[0.2, -0.5]])
    elementwise = 0.5 * (mean ** 2 + ln_var.exp() - ln_var - 1)      # Chainer's formula
    got = gaussian_kl_divergence(mean, ln_var, reduce=reduce)
    want = {'sum': elementwise.sum(), 'mean': elementwise.mean(), 'no': elementwise}[reduce]
    assert torch.allclose(got, want)


@pytest.mark.parametrize('reduce', ['sum', 'mean', 'no'])
def test_bernoulli_nll_takes_logits(reduce):
    x, y = torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.5, -2.0, 3.0])
    elementwise = torch.nn.functional.softplus(y) - x * y             # Chainer's formula
    got = bernoulli_nll(x, y, reduce=reduce)
    want = {'sum': elementwise.sum(), 'mean': elementwise.mean(), 'no': elementwise}[reduce]
    assert torch.allclose(got, want)


def test_gaussian_nll_closed_form_and_bad_reduce():
    x, mean, ln_var = torch.tensor([0.5, 1.0]), torch.tensor([0.0, 2.0]), torch.tensor([0.0, 1.0])
    want = 0.5 * (ln_var + math.log(2 * math.pi) + (x - mean) ** 2 / ln_var.exp())
    assert torch.allclose(gaussian_nll(x, mean, ln_var, reduce='no'), want)
    for fn, args in ((gaussian_nll, (x, mean, ln_var)), (bernoulli_nll, (x, mean)),
                     (gaussian_kl_divergence, (mean, ln_var))):
        with pytest.raises(ValueError, match="only 'sum', 'mean' and 'no'"):
            fn(*args, reduce='max')
