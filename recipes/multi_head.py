"""Multi-output training: a CNN trunk shared by several heads, each with its own loss and optimizer.

The seed's Chainer ``MyUpdater`` (one ``base_cnn``, a list of Linear classifiers, one
optimizer each, the trunk updated by the sum of every head's gradient) written with
:class:`~trainerlib.updaters.MultiHeadUpdater`. The task is real: ``positions`` images
of the MNIST test set side by side (e.g. a 28x84 image of three digits); one head per
position names its digit, and an optional ``sum`` head names the sum of the digits
directly. The source images are split into train/test sources first (fixed
``data.split_seed``), so test composites never show a training image::

    python -m recipes.multi_head --out result                       # 3 MNIST digits + sum
    python -m recipes.multi_head --set data.positions=2 --set heads.sum=false --out r2
    python -m recipes.multi_head --out result --resume              # continue a run

Each epoch the Evaluator reports every head's test accuracy (``validation/<head>/accuracy``),
the fraction of composites whose positions are all right (``validation/main/all_correct``)
and how often the sum of the predicted digits is the true sum
(``validation/main/sum_from_positions``). Writes ``out/config.yaml``, ``log``,
``accuracy.png``, ``loss.png``, ``samples.png``, ``snapshot_iter_*`` and ``summary.json``.
"""
from __future__ import annotations

import functools
import sys
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn

import trainerlib.extensions as E
from trainerlib.extensions.plot_report import new_figure
from trainerlib.recipes._multi_head_data import Composites, build_composites
from trainerlib.recipes.launcher import Context, check_test_fraction, launch
from trainerlib import Trainer, reporter, triggers
from trainerlib.config import Choice, Nullable
from trainerlib.datasets import get_dataset
from trainerlib.errors import ConfigError, TrainerlibError
from trainerlib.iterators import SerialIterator
from trainerlib.serialization import atomic_open
from trainerlib.updaters import MultiHeadUpdater
from trainerlib.updaters.multi_head_updater import Head, select

NAME = 'multi_head'
DATA_PARALLEL = True   # runs under torchrun: train.batch_size is per rank
DEFAULTS: Dict[str, Any] = {
    'dataset': Choice('mnist-test', 'kmnist-test', 'digits'),
    'seed': 0,               # initial weights and batch order
    'device': 'cpu',         # 'cpu', 'cuda', 'cuda:1', ...
    'data': {
        'root': Nullable(str),   # folder with mnist/ or kmnist/ files; None: the shipped copy
        'test_fraction': 0.2,  # of the source images; test composites use only these
        'split_seed': 0,     # the source split and the composites do not depend on `seed`
        'positions': 3,      # source images side by side in one composite (2..5)
        'overlap': 0,        # pixels by which neighbours overlap (pixel-wise max)
        'train_size': 20000,  # composites drawn from the train sources
        'test_size': 2000,   # composites drawn from the test sources
    },
    'model': {
        'channels': 8,       # conv channels of the trunk (twice as many in its second conv)
        'features': 128,     # width of the trunk's output, the input of every head
    },
    'heads': {
        'sum': True,         # also a head that names the sum of the labels directly
        'sum_weight': 1.0,   # weight of the sum head's loss (position heads: 1.0)
    },
    'train': {
        'epochs': 5,
        'batch_size': 128,
        'lr': 0.001,         # Adam of the trunk
        'head_lr': 0.001,    # one Adam per head, as the seed's cl_optimizers
        'snapshot_every_epochs': 1,
    },
}
# What a resumed run may change (every other setting must equal the saved config).
RESUME_MAY_CHANGE = ('device', 'train.epochs', 'train.snapshot_every_epochs')


class Trunk(nn.Sequential):
    """conv3x3(c)-ReLU-maxpool2, conv3x3(2c)-ReLU-maxpool2, Linear(features)-ReLU."""

    def __init__(self, image_shape: tuple, channels: int, features: int) -> None:
        c, h, w = image_shape
        super().__init__(
            nn.Conv2d(c, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * channels * (h // 4) * (w // 4), features), nn.ReLU())


def position_names(positions: int) -> List[str]:
    """Head names of the positions, left to right: ``pos1``, ``pos2``, ..."""
    return [f'pos{k + 1}' for k in range(positions)]


def _column(batch: Any, k: int) -> torch.Tensor:
    return batch[1][:, k]


def _label_sum(batch: Any) -> torch.Tensor:
    return batch[1].sum(1)


def build_heads(cfg: Dict[str, Any], n_classes: int) -> Dict[str, Head]:
    """One Linear head per position (target: its label), plus ``sum`` if configured."""
    features, positions = cfg['model']['features'], cfg['data']['positions']
    heads = {name: Head(nn.Linear(features, n_classes), functools.partial(_column, k=k))
             for k, name in enumerate(position_names(positions))}
    if cfg['heads']['sum']:
        heads['sum'] = Head(nn.Linear(features, (n_classes - 1) * positions + 1), _label_sum,
                            weight=cfg['heads']['sum_weight'])
    return heads


def check_values(cfg: Dict[str, Any]) -> None:
    """Range checks the schema cannot express."""
    for section, keys in (('train', ('epochs', 'batch_size', 'snapshot_every_epochs')),
                          ('data', ('train_size', 'test_size')),
                          ('model', ('channels', 'features'))):
        for key in keys:
            if cfg[section][key] < 1:
                raise ConfigError(f"config key '{section}.{key}' must be an integer >= 1, "
                                  f'got {cfg[section][key]}')
    for key in ('lr', 'head_lr'):
        if not cfg['train'][key] > 0:
            raise ConfigError(f"config key 'train.{key}' must be > 0, got {cfg['train'][key]}")
    if not cfg['heads']['sum_weight'] > 0:
        raise ConfigError("config key 'heads.sum_weight' must be > 0 (to drop the sum head "
                          f"set heads.sum=false), got {cfg['heads']['sum_weight']}")
    data = cfg['data']
    if not 2 <= data['positions'] <= 5:
        raise ConfigError(f"config key 'data.positions' must be between 2 and 5, "
                          f"got {data['positions']}")
    check_test_fraction(cfg)
    if data['overlap'] < 0:
        raise ConfigError(f"config key 'data.overlap' must be >= 0, got {data['overlap']}")


def load_data(cfg: Dict[str, Any]):
    """``(train, test, n_classes, n_train_sources, n_test_sources)``: composites of the dataset."""
    data = cfg['data']
    try:
        images, labels = get_dataset(cfg['dataset'], root=data['root']).datasets
    except ImportError as e:  # digits needs scikit-learn
        raise TrainerlibError(f"dataset {cfg['dataset']!r} cannot be loaded: {e}") from None
    except ValueError as e:  # a corrupt or mismatched data file
        raise TrainerlibError(f"dataset {cfg['dataset']!r}: {e}") from None
    width = images.shape[-1]
    if data['overlap'] >= width:
        raise ConfigError(f"config key 'data.overlap' must be smaller than the image width "
                          f"{width} of {cfg['dataset']!r}, got {data['overlap']}")
    train, test = build_composites(
        images, labels, positions=data['positions'], train_size=data['train_size'],
        test_size=data['test_size'], test_fraction=data['test_fraction'],
        seed=data['split_seed'], overlap=data['overlap'])
    n_test = max(1, round(len(images) * data['test_fraction']))  # as split_sources
    return train, test, int(labels.max()) + 1, len(images) - n_test, n_test


def make_eval_func(trunk: nn.Module, heads: Dict[str, Head]):
    """``fn(x, t)`` reporting each head's loss/accuracy, and all_correct/sum_from_positions."""
    positions = [name for name in heads if name != 'sum']

    def eval_func(x: torch.Tensor, t: torch.Tensor) -> None:
        features = trunk(x)
        total, hits, guesses = 0.0, [], []
        for name, head in heads.items():
            y = head.module(features)
            target = select((x, t), head.target)
            loss = head.loss_fn(y, target)
            total = total + head.weight * loss
            guess = y.argmax(1)
            hit = guess == target
            reporter.report({'loss': loss, 'accuracy': hit.float().mean()}, head.module)
            if name in positions:
                hits.append(hit)
                guesses.append(guess)
        sum_hit = torch.stack(guesses, 1).sum(1) == t.sum(1)
        reporter.report({'loss': total,
                         'all_correct': torch.stack(hits, 1).all(1).float().mean(),
                         'sum_from_positions': sum_hit.float().mean()}, trunk)
    return eval_func


def plot_samples(trunk: nn.Module, heads: Dict[str, Head], test: Composites, path: str,
                 n: int = 12) -> None:
    """The first ``n`` test composites titled ``true -> predicted`` (red where wrong)."""
    x, t = test.get_batch(slice(0, min(n, len(test))))
    device = next(trunk.parameters()).device
    trunk.eval()
    with torch.no_grad():
        features = trunk(x.to(device))
        guesses = {name: h.module(features).argmax(1).cpu() for name, h in heads.items()}
    trunk.train()
    fig = new_figure((10, 1.0 + 0.9 * ((len(x) + 2) // 3)))
    for i in range(len(x)):
        ax = fig.add_subplot((len(x) + 2) // 3, 3, i + 1)
        ax.imshow(x[i, 0].numpy(), cmap='gray', vmin=0, vmax=1)
        ax.set_axis_off()
        true = ''.join(str(int(v)) for v in t[i])
        pred = ''.join(str(int(guesses[name][i])) for name in heads if name != 'sum')
        extra = f" sum {int(t[i].sum())}->{int(guesses['sum'][i])}" if 'sum' in heads else ''
        ax.set_title(f'{true}->{pred}{extra}', fontsize=8,
                     color='black' if true == pred else 'red')
    fig.tight_layout()
    with atomic_open(path, 'wb', durable=False) as f:
        fig.savefig(f, format='png', dpi=80)


def run(cfg: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    """Train the trunk and heads on ``ctx.data``; return the summary (headline numbers)."""
    torch.set_flush_denormal(True)
    train, test, n_classes, n_train_src, n_test_src = ctx.data
    tcfg, device = cfg['train'], ctx.device
    print(f"{cfg['dataset']}: {len(train)} train / {len(test)} test composites of "
          f"{cfg['data']['positions']} images ({'x'.join(map(str, train.image_shape))}), "
          f'from {n_train_src} train / {n_test_src} test source images; device {device}')
    torch.manual_seed(cfg['seed'])
    trunk = Trunk(train.image_shape, cfg['model']['channels'], cfg['model']['features'])
    heads = build_heads(cfg, n_classes)
    optimizers = {'trunk': torch.optim.Adam(trunk.parameters(), lr=tcfg['lr'])}
    optimizers.update({name: torch.optim.Adam(h.module.parameters(), lr=tcfg['head_lr'])
                       for name, h in heads.items()})
    comm = ctx.comm   # under torchrun: train.batch_size per rank, the test set shared out
    if comm.size > 1:
        print(f"data parallel: {comm.size} ranks x batch {tcfg['batch_size']} = global batch "
              f"{comm.size * tcfg['batch_size']}")
    updater = MultiHeadUpdater(SerialIterator(train, tcfg['batch_size'], comm=comm), trunk,
                               heads, optimizers, device=device)
    epochs = tcfg['epochs']
    trainer = Trainer(updater, (epochs, 'epoch'), out=ctx.out, comm=comm)

    test_iter = SerialIterator(test, 500, repeat=False, shuffle=False, comm=comm)
    targets = {'main': trunk, **{name: h.module for name, h in heads.items()}}
    trainer.extend(E.Evaluator(test_iter, targets, device=device,
                               eval_func=make_eval_func(trunk, heads)))
    trainer.extend(E.LogReport())
    every = tcfg['snapshot_every_epochs']
    snapshot_at = sorted(set(range(every, epochs + 1, every)) | {epochs})
    trainer.extend(E.snapshot(n_retains=2, autoload=ctx.resume),
                   trigger=triggers.ManualScheduleTrigger(snapshot_at, 'epoch'))
    accuracy_keys = [f'validation/{name}/accuracy' for name in heads] + [
        'validation/main/all_correct', 'validation/main/sum_from_positions']
    trainer.extend(E.PlotReport(accuracy_keys, 'epoch', filename='accuracy.png'))
    trainer.extend(E.PlotReport(['main/loss'] + [f'{name}/loss' for name in heads], 'epoch',
                                filename='loss.png'))
    trainer.extend(E.PrintReport(['epoch', 'main/loss', *accuracy_keys, 'elapsed_time'],
                                 out=sys.stdout))
    trainer.extend(E.ProgressBar(out=sys.stdout))
    trainer.run()
    if comm.rank == 0:
        plot_samples(trunk, heads, test, ctx.path('samples.png'))

    last = trainer.get_extension('LogReport').log[-1]
    accuracies = {name: last[f'validation/{name}/accuracy'] for name in heads}
    summary = {
        'dataset': cfg['dataset'], 'positions': cfg['data']['positions'],
        'image_shape': list(train.image_shape), 'heads': list(heads),
        'train_size': len(train), 'test_size': len(test),
        'train_sources': n_train_src, 'test_sources': n_test_src,
        'parameters': sum(p.numel() for m in updater.get_all_models().values()
                          for p in m.parameters()),
        'epochs': updater.epoch, 'iterations': updater.iteration,
        'test_accuracy': accuracies,
        'test_all_correct': last['validation/main/all_correct'],
        'test_sum_from_positions': last['validation/main/sum_from_positions'],
        'test_loss': last['validation/main/loss'],
        'elapsed_time': trainer.elapsed_time,
    }
    print()
    print('test accuracy per head: ' + ', '.join(f'{k} {v:.4f}' for k, v in accuracies.items()))
    print(f"all positions right: {summary['test_all_correct']:.4f}; sum of the predicted "
          f"digits right: {summary['test_sum_from_positions']:.4f}"
          + (f" (sum head: {accuracies['sum']:.4f})" if 'sum' in accuracies else '')
          + f"; {summary['elapsed_time']:.1f} s of training")
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    return launch(sys.modules[__name__], argv)


if __name__ == '__main__':
    sys.exit(main())
