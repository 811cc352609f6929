"""Path-SGD vs SGD and AdaGrad on balanced and unbalanced ReLU nets (Neyshabur et al. 2015).

The same function is trained from two parametrisations: a balanced MLP
(N(0, 1/fan_in) weights) and an unbalanced one (half of the hidden units of each
layer rescaled by log-normal factors around 10, their outgoing weights divided by
the same factors, see :mod:`recipes._path_sgd_nets`). SGD and AdaGrad depend on the
parametrisation; Path-SGD (steepest descent in the rescaling-invariant path
geometry) does not. Each cell of the grid {balanced, unbalanced} × {sgd, adagrad,
path_sgd} is one Trainer run; by default on the MNIST test set shipped with
trainerlib (8,000 train / 2,000 test, fixed split)::

    python -m recipes.path_sgd --out result/path_sgd
    python -m recipes.path_sgd --set dataset=digits --set train.epochs=20 --out r_digits
    python -m recipes.path_sgd --out result/path_sgd --resume        # continue / re-report

Writes ``out/<init>_<optimizer>/`` (``log``, ``snapshot_iter_*``, ``final.json``),
``out/comparison.png`` (training loss and test error against epochs, six curves),
``out/results.md`` and ``out/results.csv`` (final train loss / test accuracy per
cell) and ``out/summary.json``. A run whose weights or gradients become NaN/Inf is
stopped by ``FailOnNonNumber`` and reported as ``diverged``; the grid goes on.
"""
from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

import trainerlib.extensions as E
from trainerlib.recipes import _path_sgd_report as report
from trainerlib.recipes._path_sgd_nets import (INITS, OPTIMIZERS, build_mlp, make_optimizer,
                                               unbalance)
from trainerlib.recipes.launcher import Context, launch, torch_threads, write_json
from trainerlib import Classifier, Trainer, triggers
from trainerlib.config import Choice, Nullable
from trainerlib.datasets import TupleDataset, get_dataset
from trainerlib.errors import ConfigError, NonFiniteError, TrainerlibError
from trainerlib.iterators import SerialIterator
from trainerlib.updaters import PathSGDUpdater, StandardUpdater

NAME = 'path_sgd'
DEFAULTS: Dict[str, Any] = {
    'dataset': Choice('mnist-test', 'kmnist-test', 'digits'),
    'seed': 0,              # balanced weights and batch order (the same for every cell)
    'device': 'cpu',
    'threads': 1,           # torch CPU threads (0: torch's default); the nets are small
    'dtype': Choice('float32', 'float64'),   # float64: Path-SGD's two curves agree to ~1e-15
    'data': {
        'root': Nullable(str),  # folder with mnist/ or kmnist/ files; None: the shipped copy
        'test_fraction': 0.2,
        'split_seed': 0,
    },
    'model': {'hidden': 256, 'depth': 2},     # ReLU MLP: depth hidden layers of `hidden` units
    'unbalance': {
        'fraction': 0.5,    # draws per hidden layer / its units (with replacement)
        'scale': 10.0,      # median of the log-normal factor
        'sigma': 1.0,       # std of the factor's log
        'seed': 1,
    },
    'lr': {'sgd': 0.3, 'adagrad': 0.01, 'path_sgd': 0.03},   # best on the balanced net
    'grid': {'inits': list(INITS), 'optimizers': list(OPTIMIZERS)},
    'train': {'epochs': 10, 'batch_size': 100, 'snapshot_every_epochs': 1},
}
# What a resumed grid may change (every other setting must equal the saved config: the
# cells are compared with each other); new cells may be added to the grid.
RESUME_MAY_CHANGE = ('device', 'threads', 'grid', 'train.epochs', 'train.snapshot_every_epochs')


def check_values(cfg: Dict[str, Any]) -> None:
    """Range checks the schema cannot express."""
    def need(ok: bool, key: str, what: str, value: Any) -> None:
        if not ok:
            raise ConfigError(f'config key {key!r} must be {what}, got {value!r}')

    for key in ('epochs', 'batch_size', 'snapshot_every_epochs'):
        need(cfg['train'][key] >= 1, f'train.{key}', 'an integer >= 1', cfg['train'][key])
    need(cfg['threads'] >= 0, 'threads', 'an integer >= 0 (0: torch default)', cfg['threads'])
    for key in ('hidden', 'depth'):
        need(cfg['model'][key] >= 1, f'model.{key}', 'an integer >= 1', cfg['model'][key])
    for key, lr in cfg['lr'].items():
        need(lr > 0 and lr < float('inf'), f'lr.{key}', '> 0 (a step size)', lr)
    u = cfg['unbalance']
    need(0 <= u['fraction'] <= 100, 'unbalance.fraction', 'in [0, 100]', u['fraction'])
    need(u['scale'] > 0, 'unbalance.scale', '> 0', u['scale'])
    need(u['sigma'] >= 0, 'unbalance.sigma', '>= 0', u['sigma'])
    need(0 < cfg['data']['test_fraction'] < 1, 'data.test_fraction',
         'between 0 and 1 (exclusive)', cfg['data']['test_fraction'])
    for key, valid in (('inits', INITS), ('optimizers', OPTIMIZERS)):
        chosen = cfg['grid'][key]
        need(bool(chosen) and all(v in valid for v in chosen) and len(set(chosen)) == len(chosen),
             f'grid.{key}', f'a non-empty list of distinct values from {", ".join(valid)}',
             chosen)


def load_data(cfg: Dict[str, Any]) -> Tuple[TupleDataset, TupleDataset]:
    """Flattened images (``cfg['dtype']``) split (train, test) with the fixed seed, standardised.

    Inputs are ``(x - m) / s`` with the scalar mean ``m`` and std ``s`` of the
    training pixels (one scalar each, so no pixel is blown up by a tiny std).
    """
    data = cfg['data']
    try:
        dataset = get_dataset(cfg['dataset'], root=data['root'], flatten=True)
    except ImportError as e:  # digits needs scikit-learn
        raise TrainerlibError(f"dataset {cfg['dataset']!r} cannot be loaded: {e}") from None
    except ValueError as e:
        raise TrainerlibError(f"dataset {cfg['dataset']!r}: {e}") from None
    images, labels = dataset.datasets
    images = torch.as_tensor(images, dtype=getattr(torch, cfg['dtype']))
    labels = torch.as_tensor(labels, dtype=torch.long)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(data['split_seed']))
    n_test = max(1, round(len(images) * data['test_fraction']))
    train, test = order[:len(images) - n_test], order[len(images) - n_test:]
    mean, std = images[train].mean(), images[train].std()
    images = (images - mean) / std
    return (TupleDataset(images[train], labels[train]),
            TupleDataset(images[test], labels[test]))


def _initial(predictor: torch.nn.Module, train: TupleDataset,
             test: TupleDataset) -> Dict[str, float]:
    """Full-train loss and test accuracy of the untrained network (epoch 0 of the plot)."""
    with torch.no_grad():
        (xtr, ytr), (xte, yte) = train.datasets, test.datasets
        return {'train_loss': F.cross_entropy(predictor(xtr), ytr).item(),
                'test_accuracy': (predictor(xte).argmax(1) == yte).float().mean().item()}


def run_cell(init: str, opt_name: str, cfg: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    """Train one cell of the grid in ``out/<init>_<optimizer>/``; return its ``final.json``."""
    train, test = ctx.data
    in_features = train.datasets[0].shape[1]
    n_classes = int(max(train.datasets[1].max(), test.datasets[1].max())) + 1
    predictor = build_mlp(in_features, cfg['model']['hidden'], cfg['model']['depth'],
                          n_classes, cfg['seed']).to(getattr(torch, cfg['dtype']))
    if init == 'unbalanced':
        u = cfg['unbalance']
        unbalance(predictor, u['fraction'], u['scale'], u['sigma'], u['seed'])
    initial = _initial(predictor, train, test)   # on the CPU, where the data is
    model = Classifier(predictor).to(ctx.device)
    lr, tcfg = cfg['lr'][opt_name], cfg['train']
    optimizer = make_optimizer(opt_name, model.predictor, lr, in_features)
    train_iter = SerialIterator(train, tcfg['batch_size'], seed=cfg['seed'])
    if opt_name == 'path_sgd':
        updater = PathSGDUpdater(train_iter, model, optimizer, device=ctx.device)
    else:
        updater = StandardUpdater(train_iter, optimizer, model=model, device=ctx.device)
    out = ctx.path(f'{init}_{opt_name}')
    epochs, every = tcfg['epochs'], tcfg['snapshot_every_epochs']
    trainer = Trainer(updater, (epochs, 'epoch'), out=out)
    size = max(tcfg['batch_size'], 500)
    trainer.extend(E.FailOnNonNumber())
    trainer.extend(E.Evaluator(SerialIterator(test, size, repeat=False, shuffle=False),
                               model, device=ctx.device))
    trainer.extend(E.Evaluator(SerialIterator(train, size, repeat=False, shuffle=False),
                               model, device=ctx.device, name='train'))
    trainer.extend(E.LogReport())
    trainer.extend(E.snapshot(n_retains=2, autoload=ctx.resume),
                   trigger=triggers.ManualScheduleTrigger(
                       sorted(set(range(every, epochs + 1, every)) | {epochs}), 'epoch'))
    trainer.extend(E.PrintReport(['epoch', 'main/loss', 'train/main/loss',
                                  'validation/main/accuracy', 'elapsed_time'], out=sys.stdout))
    status, diverged_at, message = 'finished', None, None
    try:
        trainer.run()
    except NonFiniteError as e:
        status, diverged_at, message = 'diverged', updater.iteration, str(e)
        print(f'{init}/{opt_name}: diverged at iteration {diverged_at}')
    log = trainer.get_extension('LogReport').log
    last = log[-1] if log and status == 'finished' else {}
    return {
        'init': init, 'optimizer': opt_name, 'lr': lr, 'status': status,
        'epochs': updater.epoch, 'iterations': updater.iteration,
        'diverged_at_iteration': diverged_at, 'error': message,
        'train_loss': last.get('train/main/loss'),
        'test_accuracy': last.get('validation/main/accuracy'),
        'initial': initial, 'log': log, 'elapsed_time': trainer.elapsed_time,
    }


def _max_rel_gap(a: Dict[str, Any], b: Dict[str, Any]) -> Optional[float]:
    """Largest relative difference of two cells' per-epoch training losses (None: unequal)."""
    la, lb = report.curves(a)['train_loss'], report.curves(b)['train_loss']
    if len(la) != len(lb):
        return None
    return max(abs(x - y) / max(abs(x), abs(y), 1e-12) for x, y in zip(la, lb))


def headline(cells: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """Per optimizer: unbalanced/balanced final train loss, test accuracy difference, status."""
    out: Dict[str, Any] = {}
    for opt in OPTIMIZERS:
        b, u = cells.get(f'balanced_{opt}'), cells.get(f'unbalanced_{opt}')
        if b is None or u is None:
            continue
        entry: Dict[str, Any] = {'balanced_status': b['status'], 'unbalanced_status': u['status']}
        if b['status'] == u['status'] == 'finished':
            entry['train_loss_ratio'] = u['train_loss'] / max(b['train_loss'], 1e-30)
            entry['test_accuracy_gap'] = u['test_accuracy'] - b['test_accuracy']
            entry['max_rel_train_loss_gap'] = _max_rel_gap(b, u)
        out[opt] = entry
    return out


def run(cfg: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    """Train every cell of the grid, then plot, tabulate and return the summary.

    ``cfg['threads']`` torch CPU threads are used meanwhile (restored afterwards).
    """
    with torch_threads(cfg['threads']):
        return _run(cfg, ctx)


def _run(cfg: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    torch.set_flush_denormal(True)   # rescaled units carry tiny weights and gradients
    train, test = ctx.data
    print(f"{cfg['dataset']}: {len(train)} train / {len(test)} test examples of "
          f"{train.datasets[0].shape[1]} features; MLP {cfg['model']['depth']}x"
          f"{cfg['model']['hidden']} ReLU; device {ctx.device}")
    cells: Dict[str, Dict[str, Any]] = {}
    for init in cfg['grid']['inits']:
        for opt in cfg['grid']['optimizers']:
            print(f"== {init} init, {opt} (lr {cfg['lr'][opt]:g}) ==")
            final = run_cell(init, opt, cfg, ctx)
            write_json(final, ctx.path(f'{init}_{opt}', 'final.json'))
            cells[f'{init}_{opt}'] = final
    table = report.rows(cells)
    title = (f"{cfg['dataset']}: MLP {cfg['model']['depth']}x{cfg['model']['hidden']} ReLU, "
             f"solid = balanced, dashed = unbalanced init")
    report.plot(cells, ctx.path('comparison.png'), title)
    note = ('train_loss: cross-entropy on the whole training split after the last epoch; '
            'test_accuracy on the held-out split; diverged: NaN/Inf weights or gradients.')
    report.write_tables(table, ctx.path('results.md'), ctx.path('results.csv'), note)
    print()
    print(report.text_table(table))
    summary = {'dataset': cfg['dataset'], 'train_size': len(train), 'test_size': len(test),
               'table': table, 'headline': headline(cells),
               'cells': {k: {key: v for key, v in final.items() if key != 'log'}
                         for k, final in cells.items()}}
    verdicts = [f"{opt}: x{h['train_loss_ratio']:.3g}" if 'train_loss_ratio' in h else
                f"{opt}: balanced {h['balanced_status']}, unbalanced {h['unbalanced_status']}"
                for opt, h in summary['headline'].items()]
    if verdicts:
        print('final train loss, unbalanced / balanced -- ' + '; '.join(verdicts))
    path_sgd = summary['headline'].get('path_sgd', {})
    if 'max_rel_train_loss_gap' in path_sgd:
        print(f"Path-SGD: unbalanced vs balanced training loss differs by at most "
              f"{path_sgd['max_rel_train_loss_gap']:.2g} (relative) over the epochs")
    print(f"plot -> {ctx.path('comparison.png')}, table -> {ctx.path('results.md')}")
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    return launch(sys.modules[__name__], argv)


if __name__ == '__main__':
    sys.exit(main())
