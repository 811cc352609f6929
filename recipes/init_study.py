"""Glorot vs He initialisation on deep plain ReLU nets: the seed's 22- vs 30-layer experiment.

He et al. (2015, Fig. 3) trained a 22-layer and a 30-layer plain ReLU net with "Xavier"
(Glorot) and with their own init: at 22 layers both converge, at 30 layers Glorot "completely
stalls" while He trains. Scaled to a CPU: four MLPs of ``model.width`` ReLU units, {glorot,
he} x {``model.shallow_depth``, ``model.deep_depth``} hidden layers, zero biases, trained for
``train.steps`` SGD steps on real data (scikit-learn's digits by default, standardised)::

    python -m recipes.init_study --out result/init_study            # the four runs
    python -m recipes.init_study --set model.deep_depth=22 --out r22
    python -m recipes.init_study --out result/init_study --resume   # continue / re-report

Writes ``out/<init>_<depth>/`` per run (``log``, ``snapshot_iter_*``), ``out/init_study.png``
(loss vs iteration of the four runs with the ln(10) chance line; signal std per layer at
init), ``out/summary.json`` (final losses/accuracies per run, signal at init, verdict).
"""
from __future__ import annotations

import math
import sys
from typing import Any, Dict, List, Optional

import torch

import trainerlib.extensions as E
from trainerlib.recipes._init_study_net import INITS, PlainMLP, signal_stats
from trainerlib.recipes._init_study_plot import plot_study
from trainerlib.recipes.launcher import Context, check_test_fraction, launch, torch_threads
from trainerlib import Classifier, Trainer, triggers
from trainerlib.config import Choice, Nullable
from trainerlib.datasets import TupleDataset, get_dataset
from trainerlib.errors import ConfigError, TrainerlibError
from trainerlib.iterators import SerialIterator
from trainerlib.updaters import StandardUpdater

NAME = 'init_study'
LN10 = math.log(10)
STALL_BAND = 0.05   # "stalled": final full-train cross-entropy > ln(10) - STALL_BAND
TRAINED_BELOW = 1.0  # "trains": final full-train cross-entropy < 1.0 (< 0.44 ln 10)
EVAL_BATCH = 2048   # examples per batch of the full-train / test evaluations
DEFAULTS: Dict[str, Any] = {
    'dataset': Choice('digits', 'mnist-test', 'kmnist-test'),
    'seed': 0,              # initial weights and batch order (the same for all four runs)
    'device': 'cpu',
    'threads': 1,           # torch CPU threads during the run (0: torch's default); see run()
    'data': {
        'root': Nullable(str),  # folder with mnist/ or kmnist/ files; None: the shipped copy
        'test_fraction': 0.2,
        'split_seed': 0,
        'standardize': Choice('feature', 'global', 'none'),
    },
    'model': {
        'width': 128,
        'shallow_depth': 10,    # hidden ReLU layers; both inits train
        'deep_depth': 30,       # Glorot stalls, He trains
        'distribution': Choice('normal', 'uniform'),
    },
    'train': {
        'steps': 300,
        'batch_size': 64,
        'optimizer': Choice('sgd', 'adam'),
        'lr': 0.003,
        'momentum': 0.9,        # sgd only
        'log_every': 10,        # iterations per log entry (mean minibatch loss)
        'eval_every': 50,       # iterations between full-train / test evaluations
        'snapshot_every': 100,
    },
    'stats': {'samples': 512},  # training examples for the signal statistics at init
}
# What a resumed run may change (every other setting must equal the saved config: the
# data, the nets and, through the seed, the initial weights whose statistics it reports).
RESUME_MAY_CHANGE = ('device', 'threads', 'train.steps', 'train.log_every',
                     'train.eval_every', 'train.snapshot_every')


def check_values(cfg: Dict[str, Any]) -> None:
    """Range checks the schema cannot express."""
    if cfg['threads'] < 0:
        raise ConfigError(f"config key 'threads' must be >= 0 (0: torch's default), got "
                          f"{cfg['threads']}")
    ints = [('model.width', cfg['model']['width']),
            ('model.shallow_depth', cfg['model']['shallow_depth']),
            ('model.deep_depth', cfg['model']['deep_depth']),
            ('stats.samples', cfg['stats']['samples'])]
    ints += [(f'train.{k}', cfg['train'][k])
             for k in ('steps', 'batch_size', 'log_every', 'eval_every', 'snapshot_every')]
    for key, value in ints:
        if value < 1:
            raise ConfigError(f'config key {key!r} must be an integer >= 1, got {value}')
    model, train = cfg['model'], cfg['train']
    if model['shallow_depth'] >= model['deep_depth']:
        raise ConfigError("config key 'model.shallow_depth' must be smaller than "
                          f"'model.deep_depth', got {model['shallow_depth']} >= "
                          f"{model['deep_depth']}")
    if not 0 < train['lr'] < math.inf:
        raise ConfigError(f"config key 'train.lr' must be > 0, got {train['lr']}")
    if not 0 <= train['momentum'] < 1:
        raise ConfigError(f"config key 'train.momentum' must be in [0, 1), got "
                          f"{train['momentum']}")
    check_test_fraction(cfg)


def load_data(cfg: Dict[str, Any]):
    """(train, test) flattened and standardised with the train statistics, n_classes."""
    data = cfg['data']
    try:
        x, y = get_dataset(cfg['dataset'], root=data['root'], flatten=True).datasets
    except ImportError as e:  # digits needs scikit-learn
        raise TrainerlibError(f"dataset {cfg['dataset']!r} cannot be loaded: {e}") from None
    except ValueError as e:  # a corrupt or mismatched data file
        raise TrainerlibError(f"dataset {cfg['dataset']!r}: {e}") from None
    n_test = max(1, round(len(x) * data['test_fraction']))
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(data['split_seed']))
    train_idx, test_idx = order[n_test:], order[:n_test]
    if len(train_idx) == 0:
        raise ConfigError("config key 'data.test_fraction' leaves no training example")
    xtr = x[train_idx]
    if data['standardize'] == 'feature':   # each input unit: mean 0, std 1 on train
        mean, std = xtr.mean(0), xtr.std(0) + 1e-3
    elif data['standardize'] == 'global':
        mean, std = xtr.mean(), xtr.std() + 1e-3
    else:
        mean, std = torch.zeros(()), torch.ones(())
    train = TupleDataset(((xtr - mean) / std).contiguous(), y[train_idx].contiguous())
    test = TupleDataset(((x[test_idx] - mean) / std).contiguous(), y[test_idx].contiguous())
    return train, test, int(y.max()) + 1


def run_one(init: str, depth: int, cfg: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    """Train one net in ``out/<init>_<depth>/``; return its final numbers and init stats."""
    train, test, n_classes = ctx.data
    mcfg, tcfg = cfg['model'], cfg['train']
    out = ctx.path(f'{init}_{depth}')
    torch.manual_seed(cfg['seed'])
    net = PlainMLP(train.datasets[0].shape[1], n_classes, depth, mcfg['width'], init,
                   mcfg['distribution'])
    n = min(cfg['stats']['samples'], len(train))
    stats = signal_stats(net, train.datasets[0][:n], train.datasets[1][:n])
    model = Classifier(net).to(ctx.device)
    if tcfg['optimizer'] == 'sgd':
        optimizer = torch.optim.SGD(model.parameters(), lr=tcfg['lr'], momentum=tcfg['momentum'])
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=tcfg['lr'])
    updater = StandardUpdater(SerialIterator(train, tcfg['batch_size']), optimizer,
                              model=model, device=ctx.device)
    steps = tcfg['steps']
    trainer = Trainer(updater, (steps, 'iteration'), out=out)

    def every(k: int) -> triggers.ManualScheduleTrigger:
        return triggers.ManualScheduleTrigger(sorted(set(range(k, steps + 1, k)) | {steps}),
                                              'iteration')
    for split, name in ((train, 'train_full'), (test, 'validation')):  # whole splits
        batches = SerialIterator(split, EVAL_BATCH, repeat=False, shuffle=False)
        trainer.extend(E.Evaluator(batches, model, device=ctx.device, name=name),
                       trigger=every(tcfg['eval_every']))
    trainer.extend(E.LogReport(trigger=every(tcfg['log_every'])))
    trainer.extend(E.snapshot(n_retains=2, autoload=ctx.resume),
                   trigger=every(tcfg['snapshot_every']))
    printed = E.LogReport(trigger=every(tcfg['eval_every']), filename=None)  # fewer rows
    trainer.extend(E.PrintReport(['iteration', 'main/loss', 'train_full/main/loss',
                                  'validation/main/accuracy', 'elapsed_time'],
                                 log_report=printed, out=sys.stdout))
    trainer.run()

    log = trainer.get_extension('LogReport').log
    last = [e for e in log if 'train_full/main/loss' in e][-1]
    return {
        'init': init, 'depth': depth, 'iterations': updater.iteration,
        'train_loss': last['train_full/main/loss'],
        'train_accuracy': last['train_full/main/accuracy'],
        'test_loss': last['validation/main/loss'],
        'test_accuracy': last['validation/main/accuracy'],
        'first_logged_loss': log[0]['main/loss'],
        'init_output_std': stats['act_std'][-1],
        'init_last_hidden_rms_ratio': stats['act_rms_ratio'][-2],
        'init_first_layer_grad_std': stats['grad_std'][0],
        'init_stats': stats,
        'curve': [[e['iteration'], e['main/loss']] for e in log],
        'elapsed_time': trainer.elapsed_time,
    }


def verdict(runs: Dict[str, Dict[str, Any]], shallow: int, deep: int) -> Dict[str, Any]:
    """Whether the runs reproduce the finding, from their final full-train cross-entropy."""
    def loss(init: str, depth: int) -> float:
        return runs[f'{init}_{depth}']['train_loss']
    checks = {
        'deep_glorot_stalled': loss('glorot', deep) > LN10 - STALL_BAND,
        'deep_he_trained': loss('he', deep) < TRAINED_BELOW,
        'shallow_glorot_trained': loss('glorot', shallow) < TRAINED_BELOW,
        'shallow_he_trained': loss('he', shallow) < TRAINED_BELOW,
    }
    ok = all(checks.values())
    text = (f'reproduced: at {deep} layers Glorot stalls at ln(10) while He trains; at '
            f'{shallow} layers both train' if ok else
            'not reproduced: ' + ', '.join(k for k, v in checks.items() if not v) + ' failed')
    return {**checks, 'reproduced': ok, 'text': text,
            'stalled_above': LN10 - STALL_BAND, 'trained_below': TRAINED_BELOW}


def run(cfg: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    """Train the four nets on ``ctx.data``, plot them, return the summary.

    Runs with ``cfg['threads']`` torch threads (restored afterwards): these nets are too
    small to gain from several threads, one thread is much faster on a busy machine
    (5.8 s instead of 95 s of CPU for a 30-layer run measured with 7 other jobs on 2
    cores), and the float results do not depend on the machine's core count.
    """
    torch.set_flush_denormal(True)  # vanishing signals make denormals: ~4x slower without
    with torch_threads(cfg['threads']):
        return _run(cfg, ctx)


def _run(cfg: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    train, test, n_classes = ctx.data
    mcfg = cfg['model']
    depths = (mcfg['shallow_depth'], mcfg['deep_depth'])
    print(f"{cfg['dataset']}: {len(train)} train / {len(test)} test, "
          f"{train.datasets[0].shape[1]} inputs, {n_classes} classes; width {mcfg['width']}, "
          f"depths {depths}, {cfg['train']['steps']} {cfg['train']['optimizer']} steps "
          f"(lr {cfg['train']['lr']}); device {ctx.device}")
    runs: Dict[str, Dict[str, Any]] = {}
    for depth in depths:
        for init in INITS:
            print(f'== {init}, {depth} hidden layers ==')
            runs[f'{init}_{depth}'] = run_one(init, depth, cfg, ctx)
    plot_path = ctx.path('init_study.png')
    plot_study(runs, LN10, plot_path)
    result = verdict(runs, *depths)
    print(f"\n{'run':<12}{'out std@init':>14}{'train CE':>10}{'train acc':>11}"
          f"{'test acc':>10}")
    for name, r in runs.items():
        print(f"{name:<12}{r['init_output_std']:>14.2e}{r['train_loss']:>10.4f}"
              f"{r['train_accuracy']:>11.4f}{r['test_accuracy']:>10.4f}")
    print(f'ln(10) = {LN10:.4f}; {result["text"]}; plot -> {plot_path}')
    return {'dataset': cfg['dataset'], 'train_size': len(train), 'test_size': len(test),
            'width': mcfg['width'], 'depths': list(depths), 'steps': cfg['train']['steps'],
            'ln10': LN10, 'runs': runs, 'verdict': result}


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    return launch(sys.modules[__name__], argv)


if __name__ == '__main__':
    sys.exit(main())
