"""DCGAN on handwritten characters, judged by a locally trained classifier.

The networks are the seed's (nyk510's EMNIST DCGAN, see :mod:`recipes._dcgan_nets`), trained
with :class:`trainerlib.updaters.GANUpdater` (BCE, non-saturating G loss, Adam beta1 0.5 with
lr 4e-4 for G and 2e-4 for D, one-sided label smoothing 0.9 for real images).
A classifier (``recipes.classify``'s CNN, trained first into ``out/classifier/`` or an existing
classify run given by ``quality.classifier``) judges 1,000 samples from fixed noise each epoch
and at the end: mean max-probability, classes covered, classifier score and Fréchet distance
in its penultimate features to the real test images (:mod:`recipes._dcgan_quality`)::

    python -m recipes.dcgan --out result/dcgan                    # MNIST test set, offline
    python -m recipes.dcgan --set dataset=kmnist-test --out r_kmnist
    python -m recipes.dcgan --set dataset=emnist --set data.root=~/data --set data.download=true

Writes ``out/config.yaml``, ``out/classifier/`` (when trained here), ``log``, ``loss.png``
(G/D losses), ``samples/epoch_NNN.png`` (64 samples from fixed noise), ``real_samples.png``,
``generator.pt``, ``snapshot_iter_*`` (``--resume``) and ``summary.json`` (the sample
metrics, the same metrics of real train/test images and of uniform noise for reference).
"""
from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F

import trainerlib.extensions as E
from trainerlib.recipes import classify
from trainerlib.recipes._dcgan_nets import Discriminator, Generator, dcgan_init, init_output_bias
from trainerlib.recipes._dcgan_quality import Judge, quality_report
from trainerlib.recipes.launcher import (Context, check_batch_norm_batch, check_test_fraction,
                                         launch, schema_of, torch_threads, write_json)
from trainerlib import Trainer, triggers
from trainerlib.config import Choice, Nullable, load_config
from trainerlib.convert import concat_examples
from trainerlib.datasets import TupleDataset, get_dataset, split_dataset_random
from trainerlib.errors import ConfigError, TrainerlibError
from trainerlib.iterators import SerialIterator
from trainerlib.serialization import load_snapshot
from trainerlib.updaters import GANUpdater

NAME = 'dcgan'
SIZE = 28   # the seed's generator makes 28x28 images; other sizes are resized to it
DEFAULTS: Dict[str, Any] = {
    'dataset': Choice('mnist-test', 'kmnist-test', 'digits', 'emnist'),
    'seed': 0,              # weights, batch order and noise
    'device': 'cpu',
    'threads': 1,           # torch CPU threads while training (0: leave torch's setting)
    'data': {
        'root': Nullable(str),  # mnist/kmnist folder (None: shipped copy); emnist: torchvision root
        'test_fraction': 0.2,   # offline sets: held-out part (as recipes.classify)
        'split_seed': 0,
        'emnist_split': Choice('balanced', 'letters', 'digits', 'mnist', 'bymerge', 'byclass'),
        'download': False,  # emnist: let torchvision download into data.root
        'max_train': 0,     # emnist: use this many training images (random subset); 0: all
    },
    'model': {'z_dim': 100, 'width': 16, 'fc': 256},   # the seed: width 64, fc 1024
    'train': {
        'epochs': 24,
        'batch_size': 64,
        'lr_gen': 0.0004,   # Adam for G: twice D's, else D wins at once (D loss 0.006 by 200 steps)
        'lr_dis': 0.0002,   # Adam for D (the DCGAN paper's 2e-4)
        'beta1': 0.5,
        'real_label': 0.9,  # D's target for real images (one-sided label smoothing); 1: none
        'snapshot_every_epochs': 1,
        'plot_every': 25,   # iterations per point of loss.png
    },
    'quality': {
        'classifier': Nullable(str),  # a classify run dir (its cnn/best_model.pt); None: train one
        'classifier_epochs': 3,     # when trained here
        'n_samples': 1000,
        'every_epoch': True,        # report quality/* into the log each epoch
        'target_mean_max_prob': 0.8,
    },
}
# What a resumed run may change (every other setting must equal the saved config).
RESUME_MAY_CHANGE = ('device', 'threads', 'train.epochs', 'train.snapshot_every_epochs',
                     'train.plot_every')
METRICS = ('mean_max_prob', 'classes_covered', 'classifier_score', 'frechet_distance')


def check_values(cfg: Dict[str, Any]) -> None:
    """Range checks the schema cannot express."""
    positive = {'model.z_dim': cfg['model']['z_dim'], 'model.width': cfg['model']['width'],
                'model.fc': cfg['model']['fc'], 'train.epochs': cfg['train']['epochs'],
                'train.batch_size': cfg['train']['batch_size'],
                'train.snapshot_every_epochs': cfg['train']['snapshot_every_epochs'],
                'train.plot_every': cfg['train']['plot_every'],
                'quality.classifier_epochs': cfg['quality']['classifier_epochs']}
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f'config key {key!r} must be an integer >= 1, got {value}')
    check_batch_norm_batch('train.batch_size', cfg['train']['batch_size'],
                           "the generator's BatchNorm1d layers")
    if cfg['quality']['n_samples'] < 2:
        raise ConfigError("config key 'quality.n_samples' must be >= 2 (a covariance needs two), "
                          f"got {cfg['quality']['n_samples']}")
    for key in ('lr_gen', 'lr_dis'):
        if not cfg['train'][key] > 0:
            raise ConfigError(f"config key 'train.{key}' must be > 0, got {cfg['train'][key]}")
    if not 0 < cfg['train']['real_label'] <= 1:
        raise ConfigError("config key 'train.real_label' must be in (0, 1] (1: no label "
                          f"smoothing), got {cfg['train']['real_label']}")
    if not 0 <= cfg['train']['beta1'] < 1:
        raise ConfigError(f"config key 'train.beta1' must be in [0, 1), got {cfg['train']['beta1']}")
    check_test_fraction(cfg)
    if cfg['threads'] < 0 or cfg['data']['max_train'] < 0:
        raise ConfigError("config keys 'threads' and 'data.max_train' must be >= 0 (0: default)")
    if cfg['dataset'] == 'emnist' and cfg['data']['root'] is None:
        raise ConfigError("dataset 'emnist' needs data.root, the torchvision data folder (e.g. "
                          '--set data.root=~/data --set data.download=true)')


def classifier_config(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The ``recipes.classify`` config of the judge trained here (its CNN, same data split)."""
    ccfg = load_config(None, schema_of(classify), [])
    ccfg.update(dataset=cfg['dataset'], model='cnn', seed=cfg['seed'], device=cfg['device'])
    ccfg['data'] = {k: cfg['data'][k] for k in ('root', 'test_fraction', 'split_seed')}
    ccfg['train'].update(epochs=cfg['quality']['classifier_epochs'], label_smoothing=0.0)
    return ccfg


def load_data(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Data and judge inputs, loaded before anything is written (errors leave ``out`` as is)."""
    ccfg = classifier_config(cfg)
    if cfg['dataset'] == 'emnist':
        cdata = _emnist(cfg)
    else:
        cdata = classify.load_data(ccfg)
    train, test, image_shape, n_classes = cdata
    x, y = _tensors(train)
    if tuple(x.shape[-2:]) != (SIZE, SIZE):
        x = F.interpolate(x, size=(SIZE, SIZE), mode='bilinear', align_corners=False).clamp(0, 1)
    predictor = None
    path = cfg['quality']['classifier']
    if path is not None:
        predictor, saved = classify.load_trained(os.path.expanduser(path), 'cnn', ccfg)
        theirs = (saved['dataset'], saved['data']['test_fraction'], saved['data']['split_seed'])
        ours = (cfg['dataset'], cfg['data']['test_fraction'], cfg['data']['split_seed'])
        if theirs != ours:
            command = classify.train_command('cnn', ccfg, os.path.expanduser(path))
            raise ConfigError(
                f'quality.classifier {path!r} was trained on dataset/test_fraction/split_seed '
                f'{theirs} but this run uses {ours}; train a matching one ({command}) and '
                'pass its --out as quality.classifier, or set quality.classifier=null to '
                'train it here')
    return {'gan_train': TupleDataset(x, y), 'classifier_data': cdata, 'ccfg': ccfg,
            'predictor': predictor, 'classes': sorted(set(y.tolist())),
            'image_shape': image_shape, 'n_classes': n_classes}


def _tensors(dataset: Any):
    return concat_examples([dataset[i] for i in range(len(dataset))])


def _emnist(cfg: Dict[str, Any]):
    data = cfg['data']
    root = os.path.expanduser(data['root'])
    try:
        train, test = (get_dataset('emnist', root, train=t, download=data['download'],
                                   split=data['emnist_split']) for t in (True, False))
    except (OSError, RuntimeError) as e:
        raise TrainerlibError(
            f"EMNIST ({data['emnist_split']}) is not available under data.root={root!r} "
            f"({type(e).__name__}); fix: --set data.download=true (needs a network connection), "
            'or use an offline dataset: --set dataset=mnist-test (or kmnist-test)') from None
    if 0 < data['max_train'] < len(train):
        train, _ = split_dataset_random(train, data['max_train'], seed=data['split_seed'])
    images, labels = test.datasets
    return train, test, tuple(images.shape[1:]), int(labels.max()) + 1


def judge_of(cfg: Dict[str, Any], ctx: Context) -> tuple:
    """The trained judge (classifier) and its description; trains it into out/classifier."""
    data = ctx.data
    _, test, image_shape, n_classes = data['classifier_data']
    if data['predictor'] is not None:
        predictor = data['predictor']
        info = {'source': cfg['quality']['classifier']}
    else:
        out = ctx.path('classifier')
        final_path = os.path.join(out, 'final.json')
        if ctx.resume and os.path.isfile(final_path):
            print(f'classifier: already trained in {out}')
        else:
            print(f'== classifier (recipes.classify CNN) -> {out} ==')
            final = classify.train_model('cnn', data['ccfg'], data['classifier_data'], out,
                                         ctx.device, ctx.resume)
            write_json(final, final_path)
        predictor = classify.build_predictor('cnn', torch.Size(image_shape), n_classes)
        load_snapshot(os.path.join(out, 'best_model.pt'), predictor)
        info = {'source': out}
    predictor.to(ctx.device)
    reference, labels = _tensors(test)
    judge = Judge(predictor, reference, data['classes'], tuple(image_shape[-2:]))
    with torch.no_grad():
        probs, _ = judge.outputs(reference)
    info['test_accuracy'] = float((probs.argmax(1) == labels).float().mean())
    return judge, info


def references(judge: Judge, cfg: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    """The metrics of real train and test images and of uniform noise (same count as samples)."""
    n = cfg['quality']['n_samples']
    train_x, test_x = (_tensors(d)[0] for d in ctx.data['classifier_data'][:2])   # native size
    noise = torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    return {'real_train': judge.metrics(train_x[:n]), 'real_test': judge.metrics(test_x[:n]),
            'uniform_noise': judge.metrics(noise)}


def run(cfg: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    """Train the judge (unless given), then the DCGAN; return the summary."""
    torch.set_flush_denormal(True)
    with torch_threads(cfg['threads']):  # tiny convolutions: 1 thread is often fastest
        return _run(cfg, ctx)


def _run(cfg: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    data, device, mcfg, tcfg, qcfg = ctx.data, ctx.device, cfg['model'], cfg['train'], cfg['quality']
    train = data['gan_train']
    print(f"{cfg['dataset']}: {len(train)} training images (as 1x{SIZE}x{SIZE}), "
          f"{len(data['classes'])} classes; device {device}")
    judge, classifier_info = judge_of(cfg, ctx)
    reference = references(judge, cfg, ctx)

    torch.manual_seed(cfg['seed'])
    gen = Generator(mcfg['z_dim'], mcfg['width'], mcfg['fc']).apply(dcgan_init)
    init_output_bias(gen, float(train.datasets[0].mean()))
    dis = Discriminator(mcfg['width']).apply(dcgan_init)
    betas = (tcfg['beta1'], 0.999)
    updater = GANUpdater(SerialIterator(train, tcfg['batch_size']), gen, dis,
                         torch.optim.Adam(gen.parameters(), tcfg['lr_gen'], betas),
                         torch.optim.Adam(dis.parameters(), tcfg['lr_dis'], betas),
                         loss='bce', z_dim=mcfg['z_dim'], real_label=tcfg['real_label'],
                         device=device)
    noise = torch.randn(qcfg['n_samples'], mcfg['z_dim'],
                        generator=torch.Generator().manual_seed(cfg['seed'] + 1)).to(device)

    @torch.no_grad()
    def sample(n: Optional[int] = None) -> torch.Tensor:
        gen.eval()      # BatchNorm with running statistics; the same images every call
        try:
            return gen(noise[:n])
        finally:
            gen.train()

    epochs = tcfg['epochs']
    every = tcfg['snapshot_every_epochs']
    trainer = Trainer(updater, (epochs, 'epoch'), out=ctx.out)
    trainer.extend(E.LogReport())
    if qcfg['every_epoch']:
        trainer.extend(quality_report(judge, sample))
    trainer.extend(E.PlotReport(['gen/loss', 'dis/loss'], trigger=(tcfg['plot_every'], 'iteration'),
                                filename='loss.png', marker=None))
    trainer.extend(E.ImageGrid(lambda tr: sample(64), 'samples/epoch_{.updater.epoch:03d}.png'))
    trainer.extend(E.snapshot_object(gen, 'generator.pt'), trigger=(1, 'epoch'))
    trainer.extend(E.snapshot(n_retains=2, autoload=ctx.resume), trigger=triggers.
                   ManualScheduleTrigger(sorted(set(range(every, epochs + 1, every)) | {epochs}),
                                         'epoch'))
    entries = ['epoch', 'iteration', 'gen/loss', 'dis/loss']
    if qcfg['every_epoch']:
        entries += ['quality/mean_max_prob', 'quality/classes_covered',
                    'quality/classifier_score', 'quality/frechet_distance']
    trainer.extend(E.PrintReport(entries + ['elapsed_time'], out=sys.stdout))
    trainer.extend(E.ProgressBar(out=sys.stdout))
    E.ImageGrid(lambda tr: train.datasets[0][:64], 'real_samples.png')(trainer)
    trainer.run()

    samples = judge.metrics(sample())
    target = qcfg['target_mean_max_prob']
    finding = {'target_mean_max_prob': target,
               'mean_max_prob_reached': samples['mean_max_prob'] >= target,
               'all_classes_covered': samples['classes_covered'] == samples['n_classes']}
    summary = {'dataset': cfg['dataset'], 'train_size': len(train), 'epochs': updater.epoch,
               'iterations': updater.iteration, 'elapsed_time': trainer.elapsed_time,
               'classifier': classifier_info, 'samples': samples, 'reference': reference,
               'finding': finding}
    _print(summary)
    return summary


def _print(s: Dict[str, Any]) -> None:
    def line(name: str, m: Dict[str, Any]) -> str:
        return (f"{name:14} mean max-prob {m['mean_max_prob']:.3f}  classes {m['classes_covered']}"
                f"/{m['n_classes']}  classifier score {m['classifier_score']:.2f}  "
                f"FD {m['frechet_distance']:.1f}")
    print(f"\nclassifier test accuracy {s['classifier']['test_accuracy']:.4f} "
          f"({s['classifier']['source']})")
    print(line('DCGAN samples', s['samples']))
    for name, m in s['reference'].items():
        print(line(name, m))
    f = s['finding']
    print(f"finding: mean max-prob >= {f['target_mean_max_prob']}: {f['mean_max_prob_reached']}; "
          f"all classes covered: {f['all_classes_covered']} (after {s['epochs']} epochs, "
          f"{s['elapsed_time']:.0f} s)")


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    return launch(sys.modules[__name__], argv)


if __name__ == '__main__':
    sys.exit(main())
