"""MultiHeadUpdater: hand-computed update, frozen heads, one step per optimizer, real-data
training (also through the ported Chainer ``MyUpdater``), exact resume."""
import pytest
import torch
import torch.nn.functional as F

import extensions as E
from trainerlib import Classifier, Trainer
from trainerlib.convert import concat_examples
from trainerlib.datasets import TupleDataset, get_digits
from trainerlib.iterators import SerialIterator
from trainerlib.updaters import MultiHeadUpdater, StandardUpdater
from trainerlib.updaters.multi_head_updater import Head

torch.set_flush_denormal(True)

G = torch.Generator().manual_seed(0)
X = torch.randn(32, 4, generator=G)
T_A = (X[:, 0] > 0).long()                                # 2 classes
T_B = (X[:, 1] > X[:, 2]).long() + (X[:, 3] > 0).long()   # 3 classes
T_C = X[:, :2].sum(1, keepdim=True)                       # regression
DATA = TupleDataset(X, T_A, T_B, T_C)


def parts(seed=0):
    torch.manual_seed(seed)
    trunk = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh())
    return trunk, torch.nn.Linear(6, 2), torch.nn.Linear(6, 3), torch.nn.Linear(6, 1)


def run(updater, iterations):
    """Train ``iterations``; return the observation of each iteration."""
    observations = []
    trainer = Trainer(updater, (iterations, 'iteration'), out='unused')
    trainer.extend(lambda tr: observations.append(dict(tr.observation)))
    trainer._prepare_out = lambda: None   # nothing is written
    trainer.run()
    return observations


def test_update_equals_hand_computed_update():
    trunk, a, b, c = parts()
    ref = [[p.detach().clone() for p in m.parameters()] for m in (trunk, a, b, c)]
    updater = MultiHeadUpdater(
        SerialIterator(DATA, 8, shuffle=False), trunk,
        {'a': Head(a, target=1),
         'b': Head(b, target=2, weight=0.5),
         'c': Head(c, target=3, loss_fn=F.mse_loss, weight=2.0)},
        {'trunk': torch.optim.SGD(trunk.parameters(), lr=0.1),
         'a': torch.optim.SGD(a.parameters(), lr=0.2),
         'b': torch.optim.SGD(b.parameters(), lr=0.3, momentum=0.9),
         'c': torch.optim.Adam(c.parameters(), lr=0.01)})
    observations = run(updater, 2)

    # by hand: separate losses, separate gradients, textbook update rules
    momentum = [torch.zeros_like(p) for p in ref[2]]
    adam_m = [torch.zeros_like(p) for p in ref[3]]
    adam_v = [torch.zeros_like(p) for p in ref[3]]
    for step in (1, 2):
        rows = slice(8 * (step - 1), 8 * step)
        x = X[rows]
        w1, b1 = [p.requires_grad_() for p in ref[0]]
        h = torch.tanh(x @ w1.T + b1)
        losses, grads = [], []
        for params, t, loss_fn, weight in ((ref[1], T_A, F.cross_entropy, 1.0),
                                           (ref[2], T_B, F.cross_entropy, 0.5),
                                           (ref[3], T_C, F.mse_loss, 2.0)):
            w, bias = [p.requires_grad_() for p in params]
            loss = loss_fn(h @ w.T + bias, t[rows])
            losses.append(weight * loss)
            grads.append([weight * g for g in torch.autograd.grad(loss, [w1, b1, w, bias],
                                                                  retain_graph=True)])
        with torch.no_grad():
            torch.testing.assert_close(observations[step - 1]['main/loss'], sum(losses))
            trunk_grads = [sum(g[i] for g in grads) for i in range(2)]
            ref[0] = [p - 0.1 * g for p, g in zip(ref[0], trunk_grads)]
            ref[1] = [p - 0.2 * g for p, g in zip(ref[1], grads[0][2:])]
            momentum = [0.9 * m + g if step > 1 else g for m, g in zip(momentum, grads[1][2:])]
            ref[2] = [p - 0.3 * m for p, m in zip(ref[2], momentum)]
            adam_m = [0.9 * m + 0.1 * g for m, g in zip(adam_m, grads[2][2:])]
            adam_v = [0.999 * v + 0.001 * g * g for v, g in zip(adam_v, grads[2][2:])]
            ref[3] = [p - 0.01 * (m / (1 - 0.9 ** step))
                      / ((v / (1 - 0.999 ** step)).sqrt() + 1e-8)
                      for p, m, v in zip(ref[3], adam_m, adam_v)]
    for module, expected in zip((trunk, a, b, c), ref):
        for p, e in zip(module.parameters(), expected):
            torch.testing.assert_close(p.detach(), e.detach(), rtol=0, atol=1e-6)


def test_frozen_head_is_reported_but_stays_bit_identical():
    trunk, a, b, c = parts()
    frozen = [p.detach().clone() for p in b.parameters()]
    moving = [p.detach().clone() for p in [*trunk.parameters(), *a.parameters()]]
    updater = MultiHeadUpdater(
        SerialIterator(DATA, 8), trunk,
        {'a': {'module': a, 'target': 1}, 'b': {'module': b, 'target': 2, 'train': False}},
        {'main': torch.optim.Adam([*trunk.parameters(), *a.parameters()], lr=0.1),
         'b': torch.optim.AdamW(b.parameters(), lr=0.1, weight_decay=0.5)})
    observations = run(updater, 5)
    assert all(torch.equal(p, q) for p, q in zip(b.parameters(), frozen))
    assert not any(torch.equal(p, q) for p, q in zip([*trunk.parameters(), *a.parameters()],
                                                     moving))
    for obs in observations:
        assert {'a/loss', 'a/accuracy', 'b/loss', 'b/accuracy', 'main/loss'} <= obs.keys()
        assert torch.equal(obs['main/loss'], obs['a/loss'])   # b is not in the total


@pytest.mark.parametrize('shared_by_name', [True, False])
def test_every_optimizer_steps_exactly_once_per_iteration(shared_by_name):
    trunk, a, b, c = parts()
    shared = torch.optim.SGD([*a.parameters(), *b.parameters()], lr=0.1, momentum=0.5)
    optimizers = {'trunk': torch.optim.SGD(trunk.parameters(), lr=0.1),
                  'c': torch.optim.Adam(c.parameters())}
    if shared_by_name:       # both heads name one optimizer
        optimizers['shared'] = shared
        heads = {'a': Head(a, 1, optimizer='shared'), 'b': Head(b, 2, optimizer='shared')}
    else:                    # the same optimizer given under each head's name
        optimizers.update(a=shared, b=shared)
        heads = {'a': Head(a, 1), 'b': Head(b, 2)}
    heads['c'] = Head(c, 3, loss_fn=F.mse_loss)
    counts = {}
    for opt in {id(o): o for o in optimizers.values()}.values():
        def counting_step(*args, _step=opt.step, _opt=opt, **kwargs):
            counts[id(_opt)] = counts.get(id(_opt), 0) + 1
            return _step(*args, **kwargs)
        opt.step = counting_step
    run(MultiHeadUpdater(SerialIterator(DATA, 8), trunk, heads, optimizers), 7)
    assert sorted(counts.values()) == [7, 7, 7]
    assert all(s['step'] == 7 for s in optimizers['c'].state.values())


def test_dict_batches_select_by_key():
    trunk, a, b, c = parts()
    examples = [{'x': x, 'parity': t, 'sign': s} for x, t, s in zip(X, T_A, T_C)]
    updater = MultiHeadUpdater(
        SerialIterator(examples, 8), trunk,
        {'parity': Head(a, 'parity'), 'sign': Head(c, 'sign', loss_fn=F.mse_loss)},
        torch.optim.SGD([*trunk.parameters(), *a.parameters(), *c.parameters()], lr=0.1),
        input_key='x')
    observation = run(updater, 1)[0]
    assert observation.keys() == {'parity/loss', 'parity/accuracy', 'sign/loss', 'main/loss'}
    torch.testing.assert_close(observation['main/loss'],
                               observation['parity/loss'] + observation['sign/loss'])


@pytest.mark.parametrize('heads, optimizer, match', [
    ({'a': Head(torch.nn.Linear(6, 2), 1)}, 'trunk', "head 'a': optimizer 'main'"),
    ({'a': Head(torch.nn.Linear(6, 2), 1, train=False)}, 'all', 'no head has train=True'),
    ({'main': Head(torch.nn.Linear(6, 2), 1)}, 'all', "'main' and 'trunk' are taken"),
])
def test_configuration_errors(heads, optimizer, match):
    trunk = torch.nn.Linear(4, 6)
    params = [*trunk.parameters()] + [p for h in heads.values() for p in h.module.parameters()]
    opt = torch.optim.SGD(trunk.parameters() if optimizer == 'trunk' else params, lr=0.1)
    with pytest.raises(ValueError, match=match):
        MultiHeadUpdater(SerialIterator(DATA, 8), trunk, heads, opt)


# -- real data: two sklearn digits side by side, one head per position ---------------------

def digit_pairs():
    """(train, test) TupleDatasets of 8x16 images ``x`` and labels ``t[:, (left, right)]``.

    Train pairs use the first 1,400 source digits and test pairs the other 397 (no
    leakage); pairs are drawn by a fixed generator, so the data is deterministic.
    """
    images, labels = get_digits().datasets
    g = torch.Generator().manual_seed(0)
    out = []
    for lo, hi, n in ((0, 1400, 3000), (1400, len(images), 1000)):
        left, right = torch.randint(lo, hi, (2, n), generator=g)
        out.append(TupleDataset(torch.cat([images[left], images[right]], dim=3),
                                torch.stack([labels[left], labels[right]], dim=1)))
    return out


def cnn():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(256, 64), torch.nn.ReLU())


class MyUpdater(StandardUpdater):
    """The seed's Chainer ``MyUpdater``, ported by replacing Chainer calls with torch ones
    (as in Chainer, ``__init__`` sets the attributes itself instead of calling super())."""

    def __init__(self, iterator, base_cnn, classifiers, base_cnn_optimizer, cl_optimizers,
                 converter=concat_examples, device=None):
        if not isinstance(iterator, dict):
            iterator = {'main': iterator}
        self._iterators = iterator
        self.base_cnn = base_cnn
        self.classifiers = classifiers

        self._optimizers = {}
        self._optimizers['base_cnn_opt'] = base_cnn_optimizer
        for i in range(0, len(cl_optimizers)):
            self._optimizers[str(i)] = cl_optimizers[i]
        # added: models by name, so that the Classifiers' reports read '0/accuracy'
        self._models = {'base_cnn': base_cnn,
                        **{str(i): c for i, c in enumerate(classifiers)}}

        self.converter = converter
        self.device = device
        self.iteration = 0

    def update_core(self):
        iterator = self._iterators['main'].next()
        in_arrays = self.converter(iterator, self.device)

        x_batch = in_arrays[0]
        t_batch = in_arrays[1]
        y = self.base_cnn(x_batch)

        loss_dic = {}
        for i, classifier in enumerate(self.classifiers):
            loss = classifier(y, t_batch[:, i])
            loss_dic[str(i)] = loss

        for name, optimizer in self._optimizers.items():
            optimizer.zero_grad()                       # optimizer.target.cleargrads()

        for name, loss in loss_dic.items():
            loss.backward(retain_graph=True)            # Chainer keeps the graph

        for name, optimizer in self._optimizers.items():
            optimizer.step()                            # optimizer.update()




def held_out_accuracy(trunk, heads, data):
    """Test accuracy of each head (floats)."""
    x, t = data.datasets
    with torch.no_grad():
        features = trunk(x)
        return [float((head(features).argmax(1) == t[:, i]).float().mean())
                for i, head in enumerate(heads)]


@pytest.fixture(scope='module')
def pairs():
    return digit_pairs()


def test_ported_chainer_my_updater_learns_two_digits(pairs, tmp_path):
    train, test = pairs
    torch.manual_seed(0)
    base_cnn = cnn()
    classifiers = [Classifier(torch.nn.Linear(64, 10)) for _ in range(2)]
    updater = MyUpdater(SerialIterator(train, 64), base_cnn, classifiers,
                        torch.optim.Adam(base_cnn.parameters(), lr=3e-3),
                        [torch.optim.Adam(c.parameters(), lr=3e-3) for c in classifiers])
    trainer = Trainer(updater, (5, 'epoch'), out=str(tmp_path))
    trainer.extend(E.LogReport())
    trainer.run()
    log = trainer.get_extension('LogReport').log
    assert [e['epoch'] for e in log] == [1, 2, 3, 4, 5]
    assert log[-1]['0/accuracy'] > 0.9 and log[-1]['1/accuracy'] > 0.9   # measured 0.96, 0.96
    accuracies = held_out_accuracy(base_cnn, [c.predictor for c in classifiers], test)
    assert min(accuracies) > 0.8                                          # measured 0.89, 0.90


def test_multi_head_updater_learns_two_digits_and_their_sum(pairs, tmp_path):
    train, test = pairs
    torch.manual_seed(0)
    trunk = cnn()
    left, right, total = torch.nn.Linear(64, 10), torch.nn.Linear(64, 10), torch.nn.Linear(64, 19)
    updater = MultiHeadUpdater(
        SerialIterator(train, 64), trunk,
        {'left': Head(left, target=lambda batch: batch[1][:, 0]),
         'right': Head(right, target=lambda batch: batch[1][:, 1]),
         'sum': Head(total, target=lambda batch: batch[1].sum(1), weight=0.5)},
        {name: torch.optim.Adam(m.parameters(), lr=3e-3)
         for name, m in (('trunk', trunk), ('left', left), ('right', right), ('sum', total))})
    trainer = Trainer(updater, (5, 'epoch'), out=str(tmp_path))
    trainer.extend(E.LogReport())
    trainer.run()
    last = trainer.get_extension('LogReport').log[-1]
    assert {'left/loss', 'right/loss', 'sum/loss', 'main/loss', 'sum/accuracy'} <= last.keys()
    assert last['left/accuracy'] > 0.9 and last['right/accuracy'] > 0.9
    x, t = test.datasets
    test_sum = TupleDataset(x, torch.stack([t[:, 0], t[:, 1], t.sum(1)], dim=1))
    accuracies = held_out_accuracy(trunk, [left, right, total], test_sum)
    assert min(accuracies[:2]) > 0.8 and accuracies[2] > 0.18   # chance 0.1 (sum: 9 is 10%)


# -- exact resume ------------------------------------------------------------------------------

def build_trainer(out, stop, seed, amp):
    trunk, a, b, c = parts(seed)
    updater = MultiHeadUpdater(
        SerialIterator(DATA, 6, seed=1), torch.nn.Sequential(trunk, torch.nn.Dropout(0.2)),
        {'a': Head(a, 1), 'b': Head(b, 2, optimizer='shared'),
         'c': Head(c, 3, optimizer='shared', loss_fn=F.mse_loss)},
        {'trunk': torch.optim.SGD(trunk.parameters(), lr=0.1, momentum=0.9),
         'a': torch.optim.Adam(a.parameters(), lr=0.01),
         'shared': torch.optim.Adam([*b.parameters(), *c.parameters()], lr=0.01)},
        amp=amp, clip_grad_norm=1.0)
    trainer = Trainer(updater, stop, out=str(out))
    trainer.extend(E.LogReport(trigger=(4, 'iteration')))
    return trainer


@pytest.mark.parametrize('amp', [False, 'float16'])
def test_resume_continues_bit_identically(tmp_path, amp):
    full = build_trainer(tmp_path / 'full', (15, 'iteration'), 0, amp)
    full.run()
    first = build_trainer(tmp_path / 'cut', (7, 'iteration'), 0, amp)
    first.run()
    torch.save(first.state_dict(), tmp_path / 'state.pt')
    resumed = build_trainer(tmp_path / 'cut', (15, 'iteration'), 99, amp)
    state = torch.load(tmp_path / 'state.pt', weights_only=True)
    if amp == 'float16':       # overflows lowered the scale: its saved state matters
        assert state['updater']['amp']['scaler']['scale'] < 2.0 ** 16
    resumed.load_state_dict(state)
    resumed.run()
    assert resumed.updater.iteration == 15
    for name, model in full.updater.get_all_models().items():
        for (key, p), q in zip(model.state_dict().items(),
                               resumed.updater.get_model(name).state_dict().values()):
            assert torch.equal(p, q) and p.isfinite().all(), (name, key)
    strip = [{k: v for k, v in e.items() if k != 'elapsed_time'}
             for e in full.get_extension('LogReport').log]
    assert strip == [{k: v for k, v in e.items() if k != 'elapsed_time'}
                     for e in resumed.get_extension('LogReport').log]
