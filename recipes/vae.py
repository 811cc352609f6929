"""Variational autoencoder on binarized MNIST: the seed's reparameterization-trick example.

A Gaussian-latent, Bernoulli-output VAE (:class:`recipes._vae_model.VAE`, MLP encoder and
decoder) trained with :class:`trainerlib.updaters.StochasticUpdater` and Adam on the 8,000
binarized training images of ``recipes._binarized_mnist``; each epoch the ELBO of the 2,000
held-out images is evaluated with fixed noise (the same numbers after a resume). The
headline is the held-out -ELBO in nats per image, next to the independent-Bernoulli model
of the same split (206.9 nats) and the importance-weighted estimate of -log p(x)::

    python -m recipes.vae --out result/vae                      # about 2 minutes on a CPU
    python -m recipes.vae --set model.latent=2 --out result/vae_2d   # + the latent scatter
    python -m recipes.vae --set model.estimator=likelihood_ratio --out result/vae_lr
    python -m recipes.vae --out result/vae --resume             # continue / re-report

Writes ``out/config.yaml``, ``log``, ``elbo.png`` (train / held-out ELBO per epoch and the
independent-Bernoulli line), ``rec_kl.png`` (held-out reconstruction and KL terms),
``reconstructions/epoch_NNN.png`` (rows of held-out images, each followed by their
reconstructions), ``samples/epoch_NNN.png`` (64 decodings of fixed ``z ~ N(0, I)``), with a
2-D latent also ``latent_scatter.png`` (held-out latent means by class) and ``manifold.png``,
``vae.pt`` (the model's weights), ``snapshot_iter_*`` (``--resume``) and ``summary.json``.
"""
from __future__ import annotations

import math
import sys
from typing import Any, Dict, List, Optional

import torch

import trainerlib.extensions as E
from trainerlib.recipes._binarized_mnist import binarized_split, independent_bernoulli_nats
from trainerlib.recipes._vae_model import ESTIMATORS, VAE
from trainerlib.recipes._vae_report import (FixedNoise, importance_nll, latent_means, manifold,
                                            plot_latent, prior_sampler, reconstructions,
                                            reference_line)
from trainerlib.recipes.launcher import Context, check_test_fraction, launch, torch_threads
from trainerlib import Trainer, triggers
from trainerlib.config import Choice, Nullable
from trainerlib.errors import ConfigError
from trainerlib.iterators import SerialIterator
from trainerlib.updaters import StochasticUpdater

NAME = 'vae'
DEFAULTS: Dict[str, Any] = {
    'dataset': Choice('mnist-test', 'kmnist-test'),
    'seed': 0,              # initial weights, batch order and the training draws of z
    'device': 'cpu',
    'threads': 1,           # torch CPU threads while training (0: leave torch's setting)
    'data': {
        'root': Nullable(str),  # folder holding mnist/ or kmnist/ files; None: the shipped copy
        'test_fraction': 0.2,   # 8000 train / 2000 held out
        'split_seed': 0,
        'threshold': 0.5,       # a pixel is 1 when its intensity exceeds this
    },
    'model': {
        'hidden': 500,
        'latent': 20,
        'activation': Choice('relu', 'tanh'),
        'estimator': Choice(*ESTIMATORS),
    },
    'train': {
        'epochs': 50,
        'batch_size': 100,
        'lr': 0.0005,
        'samples': 1,           # draws of z per image per step
        'baseline': Choice('moving_average', 'none'),   # likelihood_ratio only
        'snapshot_every_epochs': 5,
    },
    'eval': {
        'samples': 1,           # draws of z per held-out image per evaluation
        'seed': 0,              # the evaluations' fixed noise
        'batch_size': 500,
        'iw_samples': 100,      # importance samples for -log p(x) at the end; 0: skip
    },
    'images': {'every_epochs': 10, 'count': 64},
    'target_nats': 130.0,       # the goal: held-out -ELBO at most this
}
# What a resumed run may change (every other setting must equal the saved config).
RESUME_MAY_CHANGE = ('device', 'threads', 'train.epochs', 'train.snapshot_every_epochs',
                     'eval.iw_samples', 'images.every_epochs', 'target_nats')


def check_values(cfg: Dict[str, Any]) -> None:
    """Range checks the schema cannot express."""
    model, train, ev = cfg['model'], cfg['train'], cfg['eval']
    positive = {'model.hidden': model['hidden'], 'model.latent': model['latent'],
                'train.epochs': train['epochs'], 'train.batch_size': train['batch_size'],
                'train.samples': train['samples'],
                'train.snapshot_every_epochs': train['snapshot_every_epochs'],
                'eval.samples': ev['samples'], 'eval.batch_size': ev['batch_size'],
                'images.every_epochs': cfg['images']['every_epochs'],
                'images.count': cfg['images']['count']}
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f'config key {key!r} must be an integer >= 1, got {value}')
    for key, value in (('threads', cfg['threads']), ('eval.iw_samples', ev['iw_samples'])):
        if value < 0:
            raise ConfigError(f'config key {key!r} must be >= 0 (0: default / skip), got {value}')
    for key, value in (('train.lr', train['lr']), ('target_nats', cfg['target_nats'])):
        if not 0 < value < math.inf:
            raise ConfigError(f'config key {key!r} must be a finite number > 0, got {value}')
    if not 0 <= cfg['data']['threshold'] < 1:
        raise ConfigError("config key 'data.threshold' must be in [0, 1) (a pixel is 1 above "
                          f"it), got {cfg['data']['threshold']}")
    check_test_fraction(cfg)


def load_data(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The binarized split and its independent-Bernoulli reference (nats per held-out image)."""
    try:
        train, test = binarized_split(cfg['dataset'], **cfg['data'])
    except ValueError:   # an empty part: binarized_split cannot stack zero images
        raise ConfigError("config key 'data.test_fraction' leaves no training image, got "
                          f"{cfg['data']['test_fraction']}") from None
    (x, _), (xt, yt) = train.datasets, test.datasets
    return {'x': x, 'test_x': xt, 'test_y': yt,
            'reference': independent_bernoulli_nats(x, xt)}


def run(cfg: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    """Train the VAE on ``ctx.data`` with ``cfg['threads']`` torch threads; the summary."""
    with torch_threads(cfg['threads']):   # 784-500-500 layers: 1 thread is as fast when busy
        return _run(cfg, ctx)


def epochs_schedule(every: int, epochs: int) -> triggers.ManualScheduleTrigger:
    """Every ``every`` epochs and at the last one."""
    return triggers.ManualScheduleTrigger(sorted(set(range(every, epochs + 1, every)) | {epochs}),
                                          'epoch')


def _run(cfg: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    data, device, mcfg, tcfg, ecfg = ctx.data, ctx.device, cfg['model'], cfg['train'], cfg['eval']
    x, test_x, reference = data['x'], data['test_x'], data['reference']
    print(f"{cfg['dataset']} binarized at {cfg['data']['threshold']}: {len(x)} train / "
          f"{len(test_x)} held-out images; independent Bernoulli {reference:.1f} nats per "
          f"image; VAE 784-{mcfg['hidden']}-{mcfg['hidden']}-{mcfg['latent']} "
          f"({mcfg['activation']}, {mcfg['estimator']}); device {device}")
    torch.manual_seed(cfg['seed'])
    model = VAE(x.shape[1], mcfg['hidden'], mcfg['latent'], mcfg['estimator'],
                mcfg['activation'])
    model.set_output_bias(x.mean(0))
    model.to(device)
    baseline = 'none' if mcfg['estimator'] == 'reparameterization' else tcfg['baseline']
    updater = StochasticUpdater(SerialIterator(x, tcfg['batch_size']),
                                torch.optim.Adam(model.parameters(), lr=tcfg['lr']), model,
                                device=device, samples=tcfg['samples'], baseline=baseline)
    epochs = tcfg['epochs']
    trainer = Trainer(updater, (epochs, 'epoch'), out=ctx.out)
    noise = FixedNoise(model, ecfg['samples'], ecfg['seed'])
    trainer.extend(E.Evaluator(SerialIterator(test_x, ecfg['batch_size'], repeat=False,
                                              shuffle=False),
                               model, device=device, eval_hook=noise.hook, eval_func=noise))
    trainer.extend(E.LogReport())
    trainer.extend(E.PlotReport(['main/elbo', 'validation/main/elbo'], 'epoch',
                                filename='elbo.png', postprocess=reference_line(reference)))
    trainer.extend(E.PlotReport(['validation/main/rec', 'validation/main/kl'], 'epoch',
                                filename='rec_kl.png'))
    shown = test_x[:cfg['images']['count']]
    at = epochs_schedule(cfg['images']['every_epochs'], epochs)
    trainer.extend(E.ImageGrid(lambda tr: reconstructions(model, shown.to(device)),
                               'reconstructions/epoch_{.updater.epoch:03d}.png', trigger=at),
                   name='reconstructions')
    trainer.extend(E.ImageGrid(prior_sampler(model, cfg['images']['count'], cfg['seed'] + 1),
                               'samples/epoch_{.updater.epoch:03d}.png',
                               trigger=epochs_schedule(cfg['images']['every_epochs'], epochs)),
                   name='samples')
    trainer.extend(E.snapshot_object(model, 'vae.pt'), trigger=(1, 'epoch'))
    trainer.extend(E.snapshot(n_retains=2, autoload=ctx.resume),
                   trigger=epochs_schedule(tcfg['snapshot_every_epochs'], epochs))
    trainer.extend(E.PrintReport(['epoch', 'iteration', 'main/elbo', 'validation/main/elbo',
                                  'validation/main/rec', 'validation/main/kl',
                                  'elapsed_time'], out=sys.stdout))
    trainer.run()

    log = trainer.get_extension('LogReport').log
    held_out = [(e['epoch'], -e['validation/main/elbo']) for e in log]
    last = log[-1]
    best_epoch, best = min(held_out, key=lambda p: p[1])
    test_neg_elbo = -last['validation/main/elbo']
    summary: Dict[str, Any] = {
        'dataset': cfg['dataset'], 'train_size': len(x), 'test_size': len(test_x),
        'epochs': updater.epoch, 'iterations': updater.iteration,
        'elapsed_time': trainer.elapsed_time,
        'model': {**mcfg, 'parameters': sum(p.numel() for p in model.parameters())},
        'test_neg_elbo': test_neg_elbo, 'test_rec': last['validation/main/rec'],
        'test_kl': last['validation/main/kl'], 'train_neg_elbo': -last['main/elbo'],
        'best_test_neg_elbo': best, 'best_epoch': best_epoch,
        'independent_bernoulli_nats': reference,
        'target_nats': cfg['target_nats'], 'target_reached': test_neg_elbo <= cfg['target_nats'],
        'curve': [[e, v] for e, v in held_out]}
    model.eval()
    if ecfg['iw_samples']:
        summary['test_nll_importance'] = importance_nll(
            model, test_x.to(device), ecfg['iw_samples'], ecfg['seed'] + 1)
        summary['iw_samples'] = ecfg['iw_samples']
    if mcfg['latent'] == 2:
        means = latent_means(model, test_x.to(device))
        std = plot_latent(means, data['test_y'], ctx.path('latent_scatter.png'))
        E.ImageGrid(lambda tr: manifold(model), 'manifold.png', nrow=15)(trainer)
        summary['latent_2d'] = {'scatter': 'latent_scatter.png', 'manifold': 'manifold.png',
                                'mean_std': list(std)}
    _print(summary)
    return summary


def _print(s: Dict[str, Any]) -> None:
    iw = (f"; importance-weighted -log p(x) {s['test_nll_importance']:.2f} "
          f"(k={s['iw_samples']})" if 'test_nll_importance' in s else '')
    print(f"\nheld-out -ELBO {s['test_neg_elbo']:.2f} nats per image (reconstruction "
          f"{s['test_rec']:.2f} + KL {s['test_kl']:.2f}) after {s['epochs']} epochs{iw}; "
          f"independent Bernoulli {s['independent_bernoulli_nats']:.2f}; target <= "
          f"{s['target_nats']:g}: {'reached' if s['target_reached'] else 'NOT reached'} "
          f"(training -ELBO {s['train_neg_elbo']:.2f}, {s['elapsed_time']:.0f} s)")


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    return launch(sys.modules[__name__], argv)


if __name__ == '__main__':
    sys.exit(main())
