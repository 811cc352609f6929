"""Chainer's examples/mnist/train_mnist.py, ported by renaming (real data: sklearn digits).

The structure is Chainer's line for line: Classifier, SerialIterator,
StandardUpdater, Trainer, Evaluator, snapshot, LogReport, PrintReport,
ProgressBar and resume; only the model and the optimizer are PyTorch objects.
"""
import io
import json

import torch
import torch.nn.functional as F

import extensions                                  # from chainer.training import extensions
import trainerlib                                  # import chainer
import trainerlib as training                      # from chainer import training
from trainerlib.datasets import get_digits, split_dataset_random
from trainerlib.serialization import load_snapshot  # chainer.serializers.load_npz


class MLP(torch.nn.Module):                        # chainer.Chain
    def __init__(self, n_units, n_out):
        super().__init__()
        self.l1 = torch.nn.Linear(64, n_units)     # L.Linear(None, n_units)
        self.l2 = torch.nn.Linear(n_units, n_units)
        self.l3 = torch.nn.Linear(n_units, n_out)

    def forward(self, x):
        h1 = F.relu(self.l1(x))
        h2 = F.relu(self.l2(h1))
        return self.l3(h2)


def train_mnist(out, epoch=20, batchsize=100, unit=100, frequency=-1, resume=None,
                stdout=None):
    torch.manual_seed(0)
    model = trainerlib.Classifier(MLP(unit, 10))
    optimizer = torch.optim.Adam(model.parameters())
    train, test = split_dataset_random(get_digits(flatten=True), 1437, seed=0)

    train_iter = trainerlib.iterators.SerialIterator(train, batchsize)
    test_iter = trainerlib.iterators.SerialIterator(test, batchsize, repeat=False, shuffle=False)

    updater = training.updaters.StandardUpdater(train_iter, optimizer, model=model)
    trainer = training.Trainer(updater, (epoch, 'epoch'), out=out)
    trainer.extend(extensions.Evaluator(test_iter, model))
    frequency = epoch if frequency == -1 else max(1, frequency)
    trainer.extend(extensions.snapshot(n_retains=1), trigger=(frequency, 'epoch'))
    trainer.extend(extensions.LogReport())
    trainer.extend(extensions.PrintReport(
        ['epoch', 'main/loss', 'validation/main/loss',
         'main/accuracy', 'validation/main/accuracy', 'elapsed_time'], out=stdout))
    trainer.extend(extensions.ProgressBar(out=stdout))
    if resume:
        load_snapshot(resume, trainer)
    trainer.run()
    return trainer


def test_train_mnist_port_reaches_95_percent_and_resumes_exactly(tmp_path):
    printed = io.StringIO()
    full = train_mnist(str(tmp_path / 'full'), stdout=printed)
    log = json.loads((tmp_path / 'full' / 'log').read_text())
    assert [e['epoch'] for e in log] == list(range(1, 21))
    assert log[-1]['validation/main/accuracy'] >= 0.95
    assert 'validation/main/accuracy' in printed.getvalue()
    # 1437 examples / 100 per batch: 20 epochs end at iteration 288; n_retains=1 keeps one
    assert sorted(p.name for p in (tmp_path / 'full').iterdir()) == ['log', 'snapshot_iter_288']

    # interrupted after 8 epochs, resumed with the Chainer idiom `--resume`
    half = tmp_path / 'half'
    train_mnist(str(half), epoch=8, frequency=3, stdout=io.StringIO())
    snapshot, = half.glob('snapshot_iter_*')          # epoch 6, iteration 87
    assert snapshot.name == 'snapshot_iter_87'
    resumed = train_mnist(str(half), resume=str(snapshot), stdout=io.StringIO())
    for a, b in zip(full.updater.get_model('main').parameters(),
                    resumed.updater.get_model('main').parameters()):
        assert torch.equal(a, b)
    strip = [{k: v for k, v in e.items() if k != 'elapsed_time'} for e in log]
    assert [{k: v for k, v in e.items() if k != 'elapsed_time'}
            for e in json.loads((half / 'log').read_text())] == strip
