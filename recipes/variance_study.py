"""The variance of gradient estimators of stochastic nets (seed 003, the talk on stochastic NNs).

On one fixed model state and one fixed batch, the gradient of the expected loss is
estimated ``draws`` times by each estimator, and the total variance (the trace of the
estimates' covariance) is compared, with each mean checked against a high-sample reference
(``reference_draws`` of the lowest-variance estimator):

* a sigmoid belief network (:class:`recipes._sbn_model.SBN`, discrete units: only the
  likelihood-ratio method applies) with (a) no baseline, (b) the moving-average baseline
  and (c) the learned input-dependent one (NVIL), on its inference-net parameters;
* the Gaussian VAE (:class:`recipes._vae_model.VAE`): (d) the likelihood-ratio estimate
  (no baseline, and with a constant baseline) vs (e) the reparameterization trick, on its
  encoder parameters.

Each model is first trained for ``pretrain_iterations`` (the SBN with NVIL's baselines,
the VAE with the reparameterization trick) so that the state is a realistic one::

    python -m recipes.variance_study --out result/variance_study
    python -m recipes.variance_study --out result/variance_study --resume   # re-report

Writes ``out/config.yaml``, ``sbn/`` and ``vae/`` (the pretraining's logs and snapshots),
``variance.png`` and ``summary.json`` (the table, the ratios and the targets of issue 21).
"""
from __future__ import annotations

import sys
from typing import Any, Dict

import torch

import trainerlib.extensions as E
from trainerlib.recipes._binarized_mnist import binarized_split
from trainerlib.recipes._sbn_model import SBN
from trainerlib.recipes._vae_model import VAE
from trainerlib.recipes._variance_study_stats import compare, draw_moments, plot
from trainerlib.recipes.launcher import Context, check_test_fraction, launch, torch_threads
from trainerlib import Trainer
from trainerlib.config import Choice, Nullable
from trainerlib.convert import concat_examples
from trainerlib.errors import ConfigError
from trainerlib.iterators import SerialIterator
from trainerlib.updaters import StochasticUpdater

NAME = 'variance_study'
DEFAULTS: Dict[str, Any] = {
    'dataset': Choice('mnist-test', 'kmnist-test'),
    'seed': 0,              # weights, pretraining batches and every draw
    'device': 'cpu',
    'threads': 1,           # torch CPU threads (0: leave torch's setting)
    'data': {'root': Nullable(str), 'test_fraction': 0.2, 'split_seed': 0, 'threshold': 0.5},
    'batch_size': 100,      # the fixed batch: the first images of the training split
    'draws': 1000,          # estimates per estimator
    'reference_draws': 5000,    # of the lowest-variance estimator, for the means
    'chunk': 25,            # estimates computed (and held in memory) at a time
    'sbn': {'units': 200, 'pretrain_iterations': 1000, 'lr': 0.0003, 'decay': 0.9},
    'vae': {'hidden': 500, 'latent': 20, 'pretrain_iterations': 500, 'lr': 0.0005},
    'targets': {'baseline_ratio': 0.2, 'reparameterization_ratio': 0.1},
}
RESUME_MAY_CHANGE = ('device', 'threads', 'draws', 'reference_draws', 'chunk', 'targets',
                     'sbn.pretrain_iterations', 'vae.pretrain_iterations')


def check_values(cfg: Dict[str, Any]) -> None:
    """Range checks the schema cannot express."""
    counts = {'batch_size': cfg['batch_size'], 'chunk': cfg['chunk'],
              'sbn.units': cfg['sbn']['units'], 'vae.hidden': cfg['vae']['hidden'],
              'vae.latent': cfg['vae']['latent']}
    counts.update({'draws': cfg['draws'] - 1, 'reference_draws': cfg['reference_draws'] - 1})
    for key, value in counts.items():
        if value < 1:
            raise ConfigError(f'config key {key!r} must be an integer >= '
                              f'{2 if "draws" in key else 1}')
    for key in ('sbn.pretrain_iterations', 'vae.pretrain_iterations', 'threads'):
        section, _, name = key.rpartition('.')
        if (cfg[section] if section else cfg)[name] < 0:
            raise ConfigError(f'config key {key!r} must be >= 0')
    for key in ('sbn.lr', 'vae.lr', 'targets.baseline_ratio', 'targets.reparameterization_ratio'):
        section, name = key.split('.')
        if not 0 < cfg[section][name] < float('inf'):
            raise ConfigError(f'config key {key!r} must be a finite number > 0')
    if not 0 <= cfg['sbn']['decay'] < 1:
        raise ConfigError("config key 'sbn.decay' must be in [0, 1)")
    check_test_fraction(cfg)


def load_data(cfg: Dict[str, Any]) -> Dict[str, Any]:
    train, _ = binarized_split(cfg['dataset'], **cfg['data'])
    if len(train) < cfg['batch_size']:
        raise ConfigError(f"config key 'batch_size' ({cfg['batch_size']}) exceeds the "
                          f'{len(train)} training images')
    return {'train': train}


def run(cfg: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    with torch_threads(cfg['threads']):
        return _run(cfg, ctx)


def _run(cfg: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    train = ctx.data['train']
    x = train.datasets[0]
    batch = (x[:cfg['batch_size']].to(ctx.device),)
    sbn_cfg, vae_cfg = cfg['sbn'], cfg['vae']

    torch.manual_seed(cfg['seed'])
    sbn = SBN(x.shape[1], (sbn_cfg['units'],), visible_mean=x.mean(0)).to(ctx.device)
    nvil = _pretrain(cfg, ctx, 'sbn', sbn, sbn_cfg, baseline='learned',
                     baseline_net=sbn.baseline_net, decay=sbn_cfg['decay'])
    average = nvil.moving_average.value
    sbn_estimators = {
        'likelihood_ratio': _updater(nvil, sbn, 'none'),
        'likelihood_ratio_moving_average': _updater(nvil, sbn, 'moving_average', value=average),
        'likelihood_ratio_learned': nvil,
    }
    sbn_table = _study(cfg, sbn_estimators, 'likelihood_ratio_learned', batch,
                       sbn.inference_parameters())

    torch.manual_seed(cfg['seed'])
    vae = VAE(x.shape[1], vae_cfg['hidden'], vae_cfg['latent']).to(ctx.device)
    vae.set_output_bias(x.mean(0))
    pathwise = _pretrain(cfg, ctx, 'vae', vae, vae_cfg, baseline='none')
    with torch.no_grad():   # a constant baseline: the batch's mean loss over other draws
        torch.manual_seed(cfg['seed'] + 99)
        constant = torch.stack([vae(*batch).loss.mean() for _ in range(20)]).mean()
    vae_estimators = {
        'likelihood_ratio': _updater(pathwise, vae, 'none', estimator='likelihood_ratio'),
        'likelihood_ratio_constant_baseline': _updater(
            pathwise, vae, 'moving_average', value=constant, estimator='likelihood_ratio'),
        'reparameterization': pathwise,
    }
    vae_table = _study(cfg, vae_estimators, 'reparameterization', batch,
                       list(vae.encoder.parameters()))

    tables = {'sbn': sbn_table, 'vae': vae_table}
    plot(tables, ctx.path('variance.png'))
    return _summary(cfg, tables)


def _pretrain(cfg, ctx, name, model, mcfg, **kwargs) -> StochasticUpdater:
    """Train ``model`` for ``pretrain_iterations`` into ``out/<name>`` (resumable)."""
    it = SerialIterator(ctx.data['train'], cfg['batch_size'], seed=cfg['seed'])
    opt = torch.optim.Adam(model.parameters(), lr=mcfg['lr'])
    updater = StochasticUpdater(it, opt, model, _images, ctx.device, **kwargs)
    stop = max(1, mcfg['pretrain_iterations'])
    trainer = Trainer(updater, (stop, 'iteration'), out=ctx.path(name))
    every = (max(1, stop // 4), 'iteration')
    trainer.extend(E.LogReport(trigger=every))
    trainer.extend(E.snapshot(n_retains=1, autoload=ctx.resume), trigger=every)
    if mcfg['pretrain_iterations']:
        trainer.run()
    return updater


def _images(batch, device):
    """The images of a batch of (image, label) pairs, as the models' only input."""
    return (concat_examples(batch, device)[0],)


def _updater(like: StochasticUpdater, model, baseline: str, value=None, estimator=None):
    """Another estimator on the same model state (its estimator switched in the model)."""
    updater = StochasticUpdater(like.get_iterator('main'), like.get_optimizer('main'), model,
                                baseline=baseline)
    if value is not None:
        updater.moving_average.value = value.detach().clone()
    updater.estimator = estimator
    return updater


def _study(cfg, estimators, reference_name, batch, params) -> Dict[str, Dict[str, Any]]:
    """Moments of every estimator on ``batch``, each compared with the reference's."""
    found = {}
    for k, (name, updater) in enumerate(estimators.items()):
        found[name] = _moments(cfg, updater, batch, params, cfg['draws'], cfg['seed'] + 1 + k)
    reference = _moments(cfg, estimators[reference_name], batch, params,
                         cfg['reference_draws'], cfg['seed'] + 1000)
    table = {name: compare(m, reference) for name, m in found.items()}
    first = table[next(iter(table))]['total_variance']
    for row in table.values():
        row['variance_ratio'] = row['total_variance'] / first
    return table


def _moments(cfg, updater, batch, params, draws, seed):
    model = updater.get_model('main')
    saved = getattr(model, 'estimator', None)
    if getattr(updater, 'estimator', None):
        model.estimator = updater.estimator
    torch.manual_seed(seed)
    try:
        return draw_moments(lambda k: updater.gradient_estimates(batch, k, params),
                            draws, cfg['chunk'])
    finally:
        if saved is not None:
            model.estimator = saved


def _summary(cfg: Dict[str, Any], tables: Dict[str, Any]) -> Dict[str, Any]:
    sbn, vae = tables['sbn'], tables['vae']
    ratios = {
        'sbn_moving_average_over_none': sbn['likelihood_ratio_moving_average']['variance_ratio'],
        'sbn_learned_over_none': sbn['likelihood_ratio_learned']['variance_ratio'],
        'vae_reparameterization_over_likelihood_ratio':
            vae['reparameterization']['total_variance'] / vae['likelihood_ratio'][
                'total_variance'],
    }
    targets = cfg['targets']
    met = {'baseline': min(ratios['sbn_moving_average_over_none'],
                           ratios['sbn_learned_over_none']) <= targets['baseline_ratio'],
           'reparameterization': ratios['vae_reparameterization_over_likelihood_ratio']
           <= targets['reparameterization_ratio']}
    return {'batch_size': cfg['batch_size'], 'draws': cfg['draws'],
            'reference_draws': cfg['reference_draws'], 'ratios': ratios, 'targets_met': met,
            'sbn': sbn, 'vae': vae}


def main(argv=None) -> int:
    return launch(sys.modules[__name__], argv)


if __name__ == '__main__':
    sys.exit(main())
