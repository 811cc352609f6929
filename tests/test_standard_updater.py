"""StandardUpdater: equals a hand-written loop; dict forms, accumulation, clipping, AMP."""
import pytest
import torch
import torch.nn.functional as F

from trainerlib import Classifier, Trainer
from trainerlib.iterators import SerialIterator
from trainerlib.serialization import load_state, save_state
from trainerlib.updaters import AmpContext, StandardUpdater

X = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))
T = (X[:, 0] + X[:, 1] > 0).long()
DATA = torch.utils.data.TensorDataset(X, T)


def net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


def hand_loop(model, opt, batch_size, steps, clip=None):
    losses = []
    for i in range(steps):
        j = (i * batch_size) % len(X)
        x, t = X[j:j + batch_size], T[j:j + batch_size]
        opt.zero_grad()
        loss = F.cross_entropy(model(x), t)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        losses.append(loss.detach())
    return losses


def run_updater(updater, until):
    """Train until iteration ``until``; return the reported losses (if any)."""
    losses = []
    trainer = Trainer(updater, (until, 'iteration'), out='unused')
    trainer.extend(lambda tr: losses.append(tr.observation.get('main/loss')))
    trainer._prepare_out = lambda: None   # nothing is written
    trainer.run()
    return losses


@pytest.mark.parametrize('clip', [None, 0.05])
def test_equals_hand_written_loop(clip):
    ref = net()
    ref_losses = hand_loop(ref, torch.optim.SGD(ref.parameters(), lr=0.5, momentum=0.9), 8, 12,
                           clip)
    model = Classifier(net())
    updater = StandardUpdater(SerialIterator(DATA, 8, shuffle=False),
                              torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9), model,
                              clip_grad_norm=clip)
    losses = run_updater(updater, 12)
    assert all(torch.equal(a, b) for a, b in zip(losses, ref_losses))
    assert all(torch.equal(a, b) for a, b in zip(model.predictor.parameters(), ref.parameters()))


def test_dict_forms_and_loss_func():
    model = net()
    calls = []

    def loss_func(x, t):
        calls.append(x.shape[0])
        return F.cross_entropy(model(x), t)

    updater = StandardUpdater({'main': SerialIterator(DATA, 16)},
                              {'main': torch.optim.SGD(model.parameters(), lr=0.1)},
                              {'main': model, 'aux': torch.nn.Linear(1, 1)}, loss_func=loss_func)
    run_updater(updater, 3)
    assert calls == [16, 16, 16]
    assert set(updater.get_all_models()) == {'main', 'aux'}
    assert updater.iteration == 3 and updater.epoch_detail == 0.75


def test_gradient_accumulation_equals_the_big_batch():
    big = net()
    hand_loop(big, torch.optim.SGD(big.parameters(), lr=0.3), 16, 4)
    model = Classifier(net())
    updater = StandardUpdater(SerialIterator(DATA, 4, shuffle=False),
                              torch.optim.SGD(model.parameters(), lr=0.3), model, accumulate=4)
    losses = run_updater(updater, 4)
    assert updater.iteration == 4 and updater.epoch == 1     # 16 batches of 4 = one epoch
    for a, b in zip(model.predictor.parameters(), big.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    # the reported loss is the mean of the four micro-batch losses
    first = net()
    expected = torch.stack([F.cross_entropy(first(X[i:i + 4]), T[i:i + 4])
                            for i in range(0, 16, 4)]).mean()
    torch.testing.assert_close(losses[0], expected)


def test_clip_grad_value():
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    before = [p.detach().clone() for p in model.parameters()]
    updater = StandardUpdater(SerialIterator(DATA, 64), opt, model,
                              loss_func=lambda x, t: 1000 * F.cross_entropy(model(x), t),
                              clip_grad_value=1e-3)
    run_updater(updater, 1)
    for p, b in zip(model.parameters(), before):
        assert (p.detach() - b).abs().max() <= 1e-3 + 1e-7


def test_amp_bfloat16_on_cpu_trains_and_reports():
    model = Classifier(net())
    updater = StandardUpdater(SerialIterator(DATA, 16), torch.optim.Adam(model.parameters()),
                              model, amp=True, device='cpu')
    assert updater.amp.dtype is torch.bfloat16 and updater.amp.scaler is None
    losses = run_updater(updater, 8)
    assert losses[-1] < losses[0]


def test_grad_scaler_state_round_trip(tmp_path):
    amp = AmpContext('float16', 'cpu')
    assert amp.scaler is not None
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        amp.scale(model(torch.ones(1, 2)).sum()).backward()
        amp.step(opt)
        amp.update()
        opt.zero_grad()
    save_state(amp.state_dict(), str(tmp_path / 's'))
    other = AmpContext('float16', 'cpu')
    other.load_state_dict(load_state(str(tmp_path / 's')))
    assert other.scaler.get_scale() == amp.scaler.get_scale()
    assert other.scaler.state_dict()['_growth_tracker'] == 3


def test_updater_state_round_trip_continues_identically(tmp_path):
    def make(seed):
        model = Classifier(net(seed))
        return StandardUpdater(SerialIterator(DATA, 8, seed=1),
                               torch.optim.Adam(model.parameters(), lr=0.01), model)

    a = make(0)
    run_updater(a, 5)
    save_state(a.state_dict(), str(tmp_path / 'u'))
    b = make(42)
    b.load_state_dict(load_state(str(tmp_path / 'u')))
    la, lb = run_updater(a, 11), run_updater(b, 11)
    assert len(la) == 6 and all(torch.equal(x, y) for x, y in zip(la, lb))
    assert b.iteration == a.iteration == 11
