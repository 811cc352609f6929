"""Explain a classifier by meaningful perturbation (Fong & Vedaldi, ICCV 2017).

For each of a few test images the classifier gets right, a low-resolution mask is optimized
(one Adam step per iteration, :class:`~trainerlib.updaters.MeaningfulPerturbationUpdater`)
to delete as little of the image as possible (L1 on ``1 - m``, a TV prior) while driving the
probability of the image's class down; the deleted region is the explanation. By default a
CNN is first trained by the ``classify`` recipe on the shipped MNIST test set (8,000 train /
2,000 test images) with label smoothing 0.1, so that it is not over-confident::

    python -m recipes.explain --out result_explain
    python -m recipes.explain --set classifier.run=result --set dataset=kmnist-test --out r2
    python -m recipes.explain --set explain.perturbation=blur --out r3
    python -m recipes.explain --out result_explain --resume

Writes ``out/config.yaml``, ``out/classifier/`` (a classify run: ``config.yaml``,
``cnn/best_model.pt`` ...; absent with ``classifier.run``), the mask optimization's ``log``,
``snapshot_iter_*`` and ``loss.png``, the pictures ``mask.png`` (white = kept),
``heatmap.png`` (deletion ``1 - m`` in the jet colour map), ``perturbed.png``, ``overlay.png``
and ``explanations.png`` (the first 8, with probabilities), ``masks.pt`` (tensors) and
``summary.json``: per image and on average the class probability before and after the
deletion, with the mask shifted by half the image (a control), and the deleted fraction
``mean(1 - M)`` of the upsampled mask ``M`` (also the fraction with ``M < 0.5``).
"""
from __future__ import annotations

import os
import sys
import warnings
from typing import Any, Dict, List, Optional

import torch

import trainerlib.extensions as E
from trainerlib.recipes import classify
from trainerlib.recipes._explain_output import save_pictures
from trainerlib.recipes.launcher import (Context, check_batch_norm_batch, check_test_fraction,
                                         launch, write_json)
from trainerlib import Trainer, triggers
from trainerlib.config import Choice, Nullable, save_config
from trainerlib.convert import concat_examples
from trainerlib.errors import ConfigError
from trainerlib.serialization import save_state
from trainerlib.updaters import MeaningfulPerturbationUpdater
from trainerlib.updaters.perturbation_updater import perturb

NAME = 'explain'
DEFAULTS: Dict[str, Any] = {
    'dataset': Choice('mnist-test', 'kmnist-test', 'digits'),
    'seed': 0,              # classifier init and batch order; jitter and noise of the masks
    'device': 'cpu',
    'data': {'root': Nullable(str), 'test_fraction': 0.2, 'split_seed': 0},   # as in classify
    'classifier': {
        'run': Nullable(str),   # a classify run directory to explain; null: train one here
        'model': Choice('cnn', 'mlp'),
        'overconfident': 0.99,   # p_c of a saturated image (circle init, warning)
        'train': {'epochs': 2, 'batch_size': 64, 'lr': 0.001, 'label_smoothing': 0.1,
                  'snapshot_every_epochs': 1},
    },
    'explain': {
        'images': 24,       # test images explained (the first ones classified correctly)
        'iterations': 200,  # Adam steps on the masks
        'lr': 0.1,
        'mask_size': 14,    # low-resolution mask side (28x28 images: upsampled x2)
        'upsample': Choice('bilinear', 'nearest'),
        'l1_weight': 1.0,   # on mean|1 - m|
        'tv_weight': 0.2,   # on the TV prior
        'tv_beta': 3.0,
        'perturbation': Choice('constant', 'blur', 'noise'),
        'constant': 0.0,    # constant: the fill value (0: the MNIST background)
        'blur_sigma': 3.0,  # blur: Gaussian sigma in pixels
        'noise_std': 0.2,   # noise: image mean + N(0, std^2), redrawn every iteration
        'jitter': 1,        # random image shift of up to +-jitter pixels per iteration
        'init': Choice('auto', 'ones', 'circle'),   # auto: circle for saturated images
        'log_every': 20,
        'snapshot_every': 50,
    },
}
# What a resumed run may change (every other setting must equal the saved config).
RESUME_MAY_CHANGE = ('device', 'explain.iterations', 'explain.log_every',
                     'explain.snapshot_every')


def check_values(cfg: Dict[str, Any]) -> None:
    """Range checks the schema cannot express."""
    ex, cl = cfg['explain'], cfg['classifier']
    for key in ('images', 'iterations', 'mask_size', 'log_every', 'snapshot_every'):
        if ex[key] < 1:
            raise ConfigError(f"config key 'explain.{key}' must be an integer >= 1, got {ex[key]}")
    for key in ('lr', 'tv_beta'):
        if not ex[key] > 0:
            raise ConfigError(f"config key 'explain.{key}' must be > 0, got {ex[key]}")
    for key in ('l1_weight', 'tv_weight', 'blur_sigma', 'noise_std'):
        if not ex[key] >= 0:
            raise ConfigError(f"config key 'explain.{key}' must be >= 0, got {ex[key]}")
    if ex['jitter'] < 0:
        raise ConfigError(f"config key 'explain.jitter' must be >= 0, got {ex['jitter']}")
    if not 0 < cl['overconfident'] <= 1:
        raise ConfigError("config key 'classifier.overconfident' must be in (0, 1], got "
                          f"{cl['overconfident']}")
    train = cl['train']
    for key in ('epochs', 'batch_size', 'snapshot_every_epochs'):
        if train[key] < 1:
            raise ConfigError(f"config key 'classifier.train.{key}' must be an integer >= 1, "
                              f'got {train[key]}')
    if not train['lr'] > 0:
        raise ConfigError(f"config key 'classifier.train.lr' must be > 0, got {train['lr']}")
    if not 0 <= train['label_smoothing'] < 1:
        raise ConfigError("config key 'classifier.train.label_smoothing' must be in [0, 1), "
                          f"got {train['label_smoothing']}")
    if cl['run'] is None and cl['model'] == 'mlp':
        check_batch_norm_batch('classifier.train.batch_size', train['batch_size'],
                               "the MLP's BatchNorm1d layers")
    check_test_fraction(cfg)


def classify_config(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The classify recipe's config for the classifier this run trains."""
    return {'recipe': 'classify', 'dataset': cfg['dataset'], 'model': cfg['classifier']['model'],
            'seed': cfg['seed'], 'device': cfg['device'], 'data': dict(cfg['data']),
            'train': dict(cfg['classifier']['train'])}


def load_data(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The data split (and, with ``classifier.run``, the trained classifier), before writing."""
    run_dir, model = cfg['classifier']['run'], cfg['classifier']['model']
    predictor = None
    if run_dir is not None:
        predictor, trained = classify.load_trained(run_dir, model, cfg)
        for key in ('dataset', 'data'):
            if trained[key] != cfg[key]:
                raise ConfigError(f'classifier.run {run_dir!r} was trained with {key} = '
                                  f'{trained[key]!r} but this config has {cfg[key]!r}; set the '
                                  f'same {key} so that the images explained are its test split, '
                                  f'or train a matching one with: '
                                  f'{classify.train_command(model, cfg, run_dir)}')
    train, test, image_shape, n_classes = classify.load_data(cfg)
    side = min(image_shape[1:])
    if cfg['explain']['mask_size'] > side:
        raise ConfigError(f"config key 'explain.mask_size' ({cfg['explain']['mask_size']}) must "
                          f'not exceed the image side ({side} for {cfg["dataset"]})')
    return {'split': (train, test, image_shape, n_classes), 'predictor': predictor}


def get_classifier(cfg: Dict[str, Any], ctx: Context) -> torch.nn.Module:
    """The classifier of ``classifier.run``, or one trained now into ``out/classifier``."""
    if ctx.data['predictor'] is not None:
        return ctx.data['predictor']
    ccfg, folder = classify_config(cfg), ctx.path('classifier')
    save_config(ccfg, os.path.join(folder, 'config.yaml'))   # a classify run: reusable
    model = ccfg['model']
    print(f"== training the {model} to explain (label smoothing "
          f"{ccfg['train']['label_smoothing']}) -> {folder} ==")
    final = classify.train_model(model, ccfg, ctx.data['split'], os.path.join(folder, model),
                                 ctx.device, ctx.resume)
    write_json(final, os.path.join(folder, model, 'final.json'))
    return classify.load_trained(folder, model)[0]


@torch.no_grad()
def test_predictions(classifier: torch.nn.Module, test, device: torch.device):
    """Images, labels and softmax probabilities of the whole test split."""
    images, labels = concat_examples([test[i] for i in range(len(test))], device)
    probs = torch.cat([classifier(chunk).softmax(1) for chunk in images.split(500)])
    return images, labels, probs


def check_confidence(probs: torch.Tensor, chosen_probs: torch.Tensor, threshold: float,
                     init: str) -> Dict[str, Any]:
    """Warn when the classifier is over-confident and say what is done about it.

    Over-confident: the mean max-probability on the test split exceeds ``threshold``, or
    some chosen image's class probability does (its softmax is saturated: no gradient).
    """
    max_prob = probs.max(1).values
    info = {'mean_max_prob': float(max_prob.mean()),
            'saturated_fraction': float((max_prob > 1 - 1e-6).float().mean()),
            'images_above_threshold': int((chosen_probs > threshold).sum())}
    info['overconfident'] = info['mean_max_prob'] > threshold or info['images_above_threshold'] > 0
    if info['overconfident']:
        fix = {'ones': 'explain.init=ones keeps their masks at ones: use auto or circle',
               'auto': "those images start from the paper's circular mask (explain.init=auto)",
               'circle': "every mask starts from the paper's circular mask (explain.init=circle)"}
        message = (f"the classifier is over-confident: mean max-probability "
                   f"{info['mean_max_prob']:.4f} on the test split, "
                   f"{info['images_above_threshold']} of {len(chosen_probs)} images with p_c > "
                   f'{threshold}; a saturated softmax has no gradient, so a mask starting at '
                   f'ones never moves; {fix[init]}; or train the classifier with '
                   'classifier.train.label_smoothing=0.1')
        warnings.warn(message, stacklevel=2)
        print('warning: ' + message)
    return info


def run(cfg: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    """Train or load the classifier, optimize the masks, write pictures; return the summary."""
    torch.set_flush_denormal(True)   # the saturated softmax makes denormal gradients
    ex, device = cfg['explain'], ctx.device
    classifier = get_classifier(cfg, ctx).to(device).eval()
    _, test, _, _ = ctx.data['split']
    images, labels, probs = test_predictions(classifier, test, device)
    correct = (probs.argmax(1) == labels).nonzero()[:, 0]
    if len(correct) < ex['images']:
        raise ConfigError(f"only {len(correct)} test images are classified correctly; lower "
                          f"explain.images (is {ex['images']})")
    chosen = correct[:ex['images']]
    x, c = images[chosen], labels[chosen]
    confidence = check_confidence(probs, probs[chosen, c], cfg['classifier']['overconfident'],
                                  ex['init'])

    updater = MeaningfulPerturbationUpdater(
        x, c, classifier, mask_size=ex['mask_size'], lr=ex['lr'], l1_weight=ex['l1_weight'],
        tv_weight=ex['tv_weight'], tv_beta=ex['tv_beta'], perturbation=ex['perturbation'],
        blur_sigma=ex['blur_sigma'], constant=ex['constant'], noise_std=ex['noise_std'],
        jitter=ex['jitter'], init=ex['init'], overconfident=cfg['classifier']['overconfident'],
        upsample_mode=ex['upsample'], seed=cfg['seed'], device=device)
    iterations = ex['iterations']
    trainer = Trainer(updater, (iterations, 'iteration'), out=ctx.out)
    every = (ex['log_every'], 'iteration')
    snap_at = sorted(set(range(ex['snapshot_every'], iterations + 1, ex['snapshot_every']))
                     | {iterations})
    keys = ['main/prob', 'main/l1', 'main/tv', 'main/loss']
    trainer.extend(E.LogReport(trigger=every))
    trainer.extend(E.PrintReport(['iteration'] + keys + ['elapsed_time'], out=sys.stdout))
    trainer.extend(E.PlotReport(keys[:3], trigger=every, filename='loss.png'))
    trainer.extend(E.snapshot(n_retains=2, autoload=ctx.resume),
                   trigger=triggers.ManualScheduleTrigger(snap_at, 'iteration'))
    print(f"== explaining {len(x)} test images: {ex['perturbation']} perturbation, "
          f"{ex['mask_size']}x{ex['mask_size']} masks, {iterations} iterations ==")
    trainer.run()
    return finish(cfg, ctx, updater, chosen, confidence, trainer.elapsed_time)


@torch.no_grad()
def finish(cfg: Dict[str, Any], ctx: Context, updater: MeaningfulPerturbationUpdater,
           chosen: torch.Tensor, confidence: Dict[str, Any], elapsed: float) -> Dict[str, Any]:
    """Measure the final masks, write pictures and tensors; return the summary."""
    x, c = updater.images, updater.targets
    mask = updater.upsampled()
    x0 = updater.reference(x)
    perturbed = perturb(x, mask, x0)
    half = (x.shape[2] // 2, x.shape[3] // 2)
    before = updater.initial_prob
    after = updater.class_prob(perturbed, c)
    shifted = updater.class_prob(perturb(x, mask.roll(half, (2, 3)), x0), c)
    deleted = (1 - mask).flatten(1).mean(1)
    area = (mask < 0.5).flatten(1).float().mean(1)
    save_pictures(ctx.out, x, mask, perturbed, before, after)
    save_state({'images': x, 'labels': c, 'test_indices': chosen, 'masks': updater.masks.mask,
                'upsampled': mask, 'perturbed': perturbed, 'prob_before': before,
                'prob_after': after}, ctx.path('masks.pt'))
    rows = [{'test_index': int(i), 'label': int(k), 'prob_before': float(b),
             'prob_after': float(a), 'prob_shifted_mask': float(s), 'deleted_fraction': float(d),
             'deleted_area_below_half': float(r)}
            for i, k, b, a, s, d, r in zip(chosen, c, before, after, shifted, deleted, area)]
    mean = {key: sum(r[key] for r in rows) / len(rows) for key in rows[0] if key.startswith(
        ('prob', 'deleted'))}
    summary = {
        'dataset': cfg['dataset'], 'classifier': cfg['classifier']['run'] or ctx.path('classifier'),
        'perturbation': cfg['explain']['perturbation'], 'images': len(rows),
        'iterations': updater.iteration, 'confidence': confidence,
        'circle_init_images': int(updater.circle_init_images.sum()),
        'deleted_fraction_definition': 'mean of 1 - M over the pixels of the upsampled mask M '
                                       '(deleted_area_below_half: fraction of pixels with M < 0.5)',
        **{f'mean_{k}': v for k, v in mean.items()},
        'elapsed_time': elapsed, 'per_image': rows,
    }
    print(f"{len(rows)} images, {cfg['explain']['perturbation']} perturbation: class probability "
          f"{mean['prob_before']:.3f} -> {mean['prob_after']:.3f} after deleting "
          f"{mean['deleted_fraction']:.1%} of the image (M < 0.5: "
          f"{mean['deleted_area_below_half']:.1%}); the same masks shifted by half the image: "
          f"{mean['prob_shifted_mask']:.3f}; pictures in {ctx.out}")
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    return launch(sys.modules[__name__], argv)


if __name__ == '__main__':
    sys.exit(main())
