"""Image classification: an MLP and a CNN on the same data, written as a Chainer script.

The two networks are those of the seed notebook (an MLP of Linear-BN-ReLU layers
64, 32, out on flattened images; a CNN of three conv-BN-ReLU-maxpool blocks with
64, 32, 16 channels and a linear head). By default both are trained on the
Kuzushiji-MNIST test set shipped with trainerlib (10,000 images, split 8,000
train / 2,000 test with a fixed seed) and compared::

    python -m recipes.classify --out result                      # both models
    python -m recipes.classify --set model=cnn --set train.epochs=3 --out r2
    python -m recipes.classify --out result --resume             # continue a run

Writes ``out/config.yaml`` (the effective config), ``out/<model>/`` (``log``,
``snapshot_iter_*``, ``best_model.pt``, ``final.json``, ``loss.png``, ``accuracy.png``),
``out/summary.json`` and, for ``model=both``, ``out/results.json`` and ``out/comparison.png``
(see :mod:`recipes._classify_plots`). A user error prints ``error: ...`` and exits with
status 2 (see :mod:`recipes.launcher` for the common options).
"""
from __future__ import annotations

import functools
import os
import shlex
import sys
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

import trainerlib.extensions as E
from trainerlib import Classifier, Trainer, triggers
from trainerlib.recipes._classify_plots import add_curves, plot_comparison
from trainerlib.recipes._resume import previous_run
from trainerlib.recipes.launcher import (Context, check_batch_norm_batch, check_test_fraction,
                                         launch, schema_of, write_json)
from trainerlib.config import Choice, Nullable, load_config
from trainerlib.datasets import get_dataset, split_dataset_random
from trainerlib.errors import ConfigError, TrainerlibError
from trainerlib.iterators import SerialIterator
from trainerlib.serialization import load_snapshot
from trainerlib.updaters import StandardUpdater

NAME = 'classify'
TRAINER_HOOK = True   # train_model hands each trainer to ctx.trainer_hook (--mlflow)
DATA_PARALLEL = True   # runs under torchrun: train.batch_size is per rank
MODELS = ('mlp', 'cnn')
DEFAULTS: Dict[str, Any] = {
    'dataset': Choice('kmnist-test', 'mnist-test', 'digits'),
    'model': Choice('both', 'mlp', 'cnn'),
    'seed': 0,              # initial weights and batch order
    'device': 'cpu',        # 'cpu', 'cuda', 'cuda:1', ...
    'data': {
        'root': Nullable(str),  # folder with kmnist/ or mnist/ files; None: the shipped copy
        'test_fraction': 0.2,
        'split_seed': 0,    # the train/test split does not depend on `seed`
    },
    'train': {
        'epochs': 10,
        'batch_size': 64,
        'lr': 0.001,        # Adam, as the seed
        'label_smoothing': 0.0,  # > 0 keeps the classifier from being over-confident
        'snapshot_every_epochs': 1,
    },
}
# What a resumed run may change (every other setting must equal the saved config).
RESUME_MAY_CHANGE = ('device', 'train.epochs', 'train.snapshot_every_epochs')


class MLP(nn.Sequential):
    """The seed's MLP: (Linear-BN-ReLU) 64, (Linear-BN-ReLU) 32, Linear, on flattened images."""

    def __init__(self, in_features: int, n_classes: int) -> None:
        super().__init__(
            nn.Flatten(),
            nn.Linear(in_features, 64), nn.BatchNorm1d(64), nn.ReLU(inplace=True),
            nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(inplace=True),
            nn.Linear(32, n_classes),
        )


class CNN(nn.Module):
    """The seed's CNN: conv3x3 64/32/16 channels, each BN-ReLU-maxpool 2x2, then Linear.

    A 28x28 image ends as 3x3x16 features after the three pools (8x8 digits as 1x1x16).
    """

    def __init__(self, in_channels: int, n_classes: int, image_size: int = 28) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 32, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(32)
        self.conv3 = nn.Conv2d(32, 16, 3, 1, 1)
        self.bn3 = nn.BatchNorm2d(16)
        side = image_size // 2 // 2 // 2
        if side < 1:
            raise ValueError(f'CNN needs images of at least 8x8 pixels, got {image_size}')
        self.fc = nn.Linear(16 * side * side, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
        x = F.max_pool2d(torch.relu(self.bn3(self.conv3(x))), 2)
        return self.fc(x.flatten(1))  # logits: Classifier applies cross-entropy


def build_predictor(name: str, image_shape: torch.Size, n_classes: int) -> nn.Module:
    channels, height, width = image_shape
    if name == 'mlp':
        return MLP(channels * height * width, n_classes)
    return CNN(channels, n_classes, min(height, width))


def check_values(cfg: Dict[str, Any]) -> None:
    """Range checks the schema cannot express."""
    train = cfg['train']
    for key in ('epochs', 'batch_size', 'snapshot_every_epochs'):
        if train[key] < 1:
            raise ConfigError(f"config key 'train.{key}' must be an integer >= 1, "
                              f'got {train[key]}')
    if not train['lr'] > 0:
        raise ConfigError(f"config key 'train.lr' must be > 0, got {train['lr']}")
    if not 0 <= train['label_smoothing'] < 1:
        raise ConfigError("config key 'train.label_smoothing' must be in [0, 1), got "
                          f"{train['label_smoothing']}")
    if cfg['model'] in ('mlp', 'both'):
        check_batch_norm_batch('train.batch_size', train['batch_size'],
                               "the MLP's BatchNorm1d layers")
    check_test_fraction(cfg)


def load_data(cfg: Dict[str, Any]):
    """Load the dataset and split it into (train, test) with the fixed split seed."""
    data = cfg['data']
    try:
        dataset = get_dataset(cfg['dataset'], root=data['root'])
    except ImportError as e:  # digits needs scikit-learn
        raise TrainerlibError(f"dataset {cfg['dataset']!r} cannot be loaded: {e}") from None
    except ValueError as e:  # a corrupt or mismatched data file
        raise TrainerlibError(f"dataset {cfg['dataset']!r}: {e}") from None
    n_test = max(1, round(len(dataset) * data['test_fraction']))
    train, test = split_dataset_random(dataset, len(dataset) - n_test, seed=data['split_seed'])
    images, labels = dataset.datasets
    return train, test, tuple(images.shape[1:]), int(labels.max()) + 1


def train_command(model: str, cfg: Dict[str, Any], out: str) -> str:
    """The command that trains ``model`` on the data of ``cfg`` into ``out``, or, if ``out``
    already holds a run (where the command would be refused), into a new directory beside it."""
    args = [f'--set model={model}', f"--set dataset={cfg['dataset']}"]
    args += [f'--set data.{key}={cfg["data"][key]}' for key in ('test_fraction', 'split_seed')]
    if cfg['data'].get('root') is not None:
        args.append(f"--set data.root={shlex.quote(cfg['data']['root'])}")
    target, n = out, 1
    while previous_run(target) or os.path.isfile(os.path.join(target, 'config.yaml')):
        target, n = f'{out}_{model}{"" if n == 1 else n}', n + 1
    return f'python -m recipes.classify {" ".join(args)} --out {shlex.quote(target)}'


def load_trained(run_dir: str, model: str = 'cnn',
                 wanted: Optional[Dict[str, Any]] = None) -> Tuple[nn.Module, Dict[str, Any]]:
    """The best predictor of a classify run (``run_dir/<model>/best_model.pt``) and its config.

    The predictor is in eval mode and returns logits. Raises :class:`TrainerlibError`
    (with the fix) when ``run_dir`` is not a finished classify run of that model; the
    suggested command trains one on the data of ``wanted`` (a config with ``dataset`` and
    ``data``; default: classify's defaults).
    """
    config_path = os.path.join(run_dir, 'config.yaml')
    weights = os.path.join(run_dir, model, 'best_model.pt')
    if not os.path.isfile(config_path) or not os.path.isfile(weights):
        wanted = wanted or load_config(None, schema_of(sys.modules[__name__]))
        raise TrainerlibError(f'{run_dir!r} holds no trained {model} (expected config.yaml and '
                              f'{model}/best_model.pt); train one with: '
                              f'{train_command(model, wanted, run_dir)}')
    cfg = load_config(config_path, schema_of(sys.modules[__name__]))
    _, _, image_shape, n_classes = load_data(cfg)
    predictor = build_predictor(model, image_shape, n_classes)
    load_snapshot(weights, predictor)
    return predictor.eval(), cfg


def train_model(name: str, cfg: Dict[str, Any], data, out: str, device: torch.device,
                resume: bool, comm: Any = None, hook: Any = None) -> Dict[str, Any]:
    """Train one model the Chainer way; return the content of ``final.json``.

    ``hook(name, trainer)``, if given, is called before training (``Context.trainer_hook``).

    With a communicator of W ranks (torchrun), ``train.batch_size`` is per rank: the
    global batch is ``batch_size * W``, and the test set is shared among the ranks.
    """
    train, test, image_shape, n_classes = data
    tcfg = cfg['train']
    epochs, batch_size = tcfg['epochs'], tcfg['batch_size']
    torch.manual_seed(cfg['seed'])
    smoothing = tcfg['label_smoothing']
    model = Classifier(build_predictor(name, image_shape, n_classes),
                       lossfun=functools.partial(F.cross_entropy, label_smoothing=smoothing))
    optimizer = torch.optim.Adam(model.parameters(), lr=tcfg['lr'])
    train_iter = SerialIterator(train, batch_size, comm=comm)
    test_iter = SerialIterator(test, batch_size, repeat=False, shuffle=False, comm=comm)
    updater = StandardUpdater(train_iter, optimizer, model=model, device=device)
    trainer = Trainer(updater, (epochs, 'epoch'), out=out, comm=comm)

    every = tcfg['snapshot_every_epochs']
    snapshot_at = sorted(set(range(every, epochs + 1, every)) | {epochs})
    trainer.extend(E.Evaluator(test_iter, model, device=device))
    trainer.extend(E.LogReport())
    trainer.extend(E.snapshot(n_retains=2, autoload=resume),
                   trigger=triggers.ManualScheduleTrigger(snapshot_at, 'epoch'))
    trainer.extend(E.snapshot_object(model.predictor, 'best_model.pt'),
                   trigger=triggers.MaxValueTrigger('validation/main/accuracy'))
    trainer.extend(E.PrintReport(['epoch', 'iteration', 'main/loss', 'main/accuracy',
                                  'validation/main/loss', 'validation/main/accuracy',
                                  'elapsed_time'], out=sys.stdout))
    trainer.extend(E.ProgressBar(out=sys.stdout))
    add_curves(trainer, name)
    if resume and not (os.path.isdir(out) and any(n.startswith('snapshot_iter_')
                                                  for n in os.listdir(out))):
        print(f'{name}: no snapshot to resume in {out}; starting from scratch')

    if hook is not None:
        hook(name, trainer)
    trainer.run()
    log = trainer.get_extension('LogReport').log
    accs = [(e['validation/main/accuracy'], e['epoch']) for e in log
            if 'validation/main/accuracy' in e]
    best = max(accs, key=lambda a: a[0], default=(None, None))  # the first best epoch
    return {
        'model': name, 'dataset': cfg['dataset'], 'train_size': len(train),
        'test_size': len(test), 'parameters': sum(p.numel() for p in model.parameters()),
        'epochs': updater.epoch, 'iterations': updater.iteration,
        'test_accuracy': log[-1]['validation/main/accuracy'],   # the final Evaluator run
        'test_loss': log[-1]['validation/main/loss'],
        'best_test_accuracy': best[0], 'best_epoch': best[1],
        'elapsed_time': trainer.elapsed_time,
    }


def run(cfg: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    """Train the model(s) of ``cfg`` on ``ctx.data``; return the summary."""
    data, device = ctx.data, ctx.device
    print(f"{cfg['dataset']}: {len(data[0])} train / {len(data[1])} test images of shape "
          f'{"x".join(map(str, data[2]))}, {data[3]} classes; device {device}')
    if ctx.comm.size > 1:
        print(f"data parallel: {ctx.comm.size} ranks x batch {cfg['train']['batch_size']} = "
              f"global batch {ctx.comm.size * cfg['train']['batch_size']}")
    names = MODELS if cfg['model'] == 'both' else (cfg['model'],)
    results = {}
    for name in names:
        print(f'== {name} ==')
        final = train_model(name, cfg, data, ctx.path(name), device, ctx.resume, ctx.comm,
                            ctx.trainer_hook)
        if ctx.comm.rank == 0:
            write_json(final, ctx.path(name, 'final.json'))
        results[name] = final
    print()
    for name, final in results.items():
        print(f"{name}: test accuracy {final['test_accuracy']:.4f} after {final['epochs']} "
              f"epochs (best {final['best_test_accuracy']:.4f} at epoch {final['best_epoch']}), "
              f"{final['parameters']} parameters, {final['elapsed_time']:.1f} s of training "
              f"-> {ctx.path(name, 'final.json')}")
    summary: Dict[str, Any] = {'dataset': cfg['dataset'], 'models': results}
    if len(results) == 2:
        gap = results['cnn']['test_accuracy'] - results['mlp']['test_accuracy']
        summary['cnn_minus_mlp'] = gap
        if ctx.comm.rank == 0:
            write_json(summary, ctx.path('results.json'))
        print(f"cnn - mlp: {gap:+.4f} test accuracy -> {ctx.path('results.json')}")
        if ctx.comm.rank == 0 and plot_comparison(ctx.out, names, cfg['dataset']):
            print(f"validation accuracy per epoch -> {ctx.path('comparison.png')}")
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    return launch(sys.modules[__name__], argv)


if __name__ == '__main__':
    sys.exit(main())
