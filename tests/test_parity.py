"""trainerlib trains exactly as the hand-written loop does: the same loss at every
iteration and the same final state, bit for bit on CPU (not timed: see
tools/bench_overhead.py for the cost)."""
import io

import pytest
import torch
import torch.nn.functional as F

import extensions as E
from trainerlib import Classifier, Trainer
from trainerlib.iterators import SerialIterator
from trainerlib.updaters import StandardUpdater

BATCH, N, ITERATIONS = 8, 44, 12    # 5.5 batches per epoch: two batches cross an epoch end


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                               torch.nn.Linear(32, 5))


def cnn():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(8 * 3 * 3, 5))


NETS = {'mlp': (mlp, (16,)), 'cnn': (cnn, (1, 12, 12))}
OPTIMIZERS = {
    'sgd': lambda p: torch.optim.SGD(p, lr=0.1),
    'nesterov+decay': lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True,
                                                weight_decay=1e-3),
    'adam': lambda p: torch.optim.Adam(p, lr=1e-2),
}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny ops run far faster on one thread when other processes share the CPUs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def data(shape, n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, 5, (n,), generator=g)


def hand(make, make_opt, x, t):
    """The loop a user writes; batch i is examples i*B .. i*B+B-1 modulo N (as Chainer's
    SerialIterator: a batch crossing the epoch end is completed from the next epoch)."""
    model = make()
    optimizer = make_opt(model.parameters())
    torch.manual_seed(1)                      # dropout masks
    losses = []
    for i in range(ITERATIONS):
        idx = torch.arange(i * BATCH, (i + 1) * BATCH) % len(x)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x[idx]), t[idx])
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return model, torch.stack(losses)


def with_trainerlib(make, make_opt, x, t, val, stack, out):
    model = make()
    classifier = Classifier(model)            # also reports accuracy: must not matter
    optimizer = make_opt(model.parameters())
    iterator = SerialIterator(torch.utils.data.TensorDataset(x, t), BATCH, shuffle=False)
    trainer = Trainer(StandardUpdater(iterator, optimizer, classifier), (ITERATIONS, 'iteration'),
                      out=str(out))
    losses = []
    trainer.extend(lambda tr: losses.append(tr.observation['main/loss']), name='record',
                   trigger=(1, 'iteration'))
    if stack != 'bare':
        sink = io.StringIO()
        trainer.extend(E.LogReport(trigger=(3, 'iteration')))
        trainer.extend(E.PrintReport(['epoch', 'iteration', 'main/loss'], out=sink))
        trainer.extend(E.ProgressBar(update_interval=2, out=sink))
    if stack == 'full':                       # eval mode and back, a file every 4 iterations
        every = (4, 'iteration')
        trainer.extend(E.Evaluator(SerialIterator(torch.utils.data.TensorDataset(*val), BATCH,
                                                  repeat=False, shuffle=False), classifier),
                       trigger=every)
        trainer.extend(E.snapshot(), trigger=every)
    torch.manual_seed(1)                      # dropout masks
    trainer.run()
    return model, torch.stack([loss.detach() for loss in losses]), trainer


@pytest.mark.parametrize('stack', ['bare', 'default', 'full'])
@pytest.mark.parametrize('opt', list(OPTIMIZERS))
@pytest.mark.parametrize('net', list(NETS))
def test_trainerlib_equals_hand_loop(tmp_path, net, opt, stack):
    make, shape = NETS[net]
    x, t = data(shape, N, seed=2)
    val = data(shape, 2 * BATCH, seed=3)
    ref_model, ref_losses = hand(make, OPTIMIZERS[opt], x, t)
    model, losses, trainer = with_trainerlib(make, OPTIMIZERS[opt], x, t, val, stack, tmp_path)
    assert len(ref_losses) == ITERATIONS and not torch.equal(ref_losses[0], ref_losses[-1])
    assert torch.equal(losses, ref_losses)
    ref_state, state = ref_model.state_dict(), model.state_dict()   # BatchNorm buffers too
    assert list(state) == list(ref_state)
    for key in state:
        assert torch.equal(state[key], ref_state[key]), key
    assert trainer.updater.epoch == ITERATIONS * BATCH // N
    if stack == 'full':
        log = trainer.get_extension('LogReport').log
        assert [e['iteration'] for e in log] == [3, 6, 9, 12]
        assert 'validation/main/loss' in log[1] and 'validation/main/loss' in log[3]
        assert sorted(p.name for p in tmp_path.glob('snapshot_iter_*')) == \
            ['snapshot_iter_12', 'snapshot_iter_4', 'snapshot_iter_8']


def test_parity_detects_a_different_order(tmp_path):
    """The comparison is sharp: the same run on shuffled batches differs from the hand loop."""
    x, t = data((16,), N, seed=2)
    ref_model, ref_losses = hand(mlp, OPTIMIZERS['sgd'], x, t)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(4))
    model, losses, _ = with_trainerlib(mlp, OPTIMIZERS['sgd'], x[perm], t[perm],
                                       data((16,), BATCH, 3), 'bare', tmp_path)
    assert not torch.equal(losses, ref_losses)
    assert not torch.equal(model[0].weight, ref_model[0].weight)
