"""Peer frameworks as contestants of tools/bench_overhead.py (each only if installed).

Each is written the way its documentation shows a minimal loop and a logging loop:
same network, same SGD, same batches in the same order as the hand loop, loss logged
every 50 iterations, text output to the null sink. ``pip install .[bench]`` installs them.
"""
from __future__ import annotations

import contextlib
import importlib.util
import itertools
import logging
import shutil
import tempfile
import warnings
from typing import Dict, List

import torch
import torch.nn.functional as F

from _bench_clock import Clock
from _bench_common import LOG_EVERY, LR, Batches, Contestant, Run, Settings, Workload, finish

PEERS = {'ppe': 'pytorch_pfn_extras', 'ignite': 'ignite', 'lightning': 'lightning'}


def missing_peers() -> List[str]:
    """Import names of the peers that are not installed."""
    return [module for module in PEERS.values() if importlib.util.find_spec(module) is None]


@contextlib.contextmanager
def _quiet(sink):
    """Send stdout/stderr and framework warnings to ``sink`` / nowhere during a run."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), \
            contextlib.redirect_stderr(sink):
        warnings.simplefilter('ignore')
        yield


def ppe_manager(w: Workload, n: int, s: Settings, log: bool) -> Run:
    """pytorch-pfn-extras: the user's loop inside ``ExtensionsManager.run_iteration()``."""
    import pytorch_pfn_extras as ppe
    ext = ppe.training.extensions
    model = w.make_model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    clock = Clock(opt, n, s.period)
    out = tempfile.mkdtemp(dir=s.tmp)
    extensions = [ext.LogReport(trigger=(LOG_EVERY, 'iteration')),
                  ext.PrintReport(['epoch', 'iteration', 'train/loss', 'elapsed_time'],
                                  out=s.sink),
                  ext.ProgressBar(out=s.sink)] if log else []
    manager = ppe.training.ExtensionsManager(
        model, opt, 1, iters_per_epoch=len(w.batches), extensions=extensions, out_dir=out,
        stop_trigger=(n, 'iteration'))
    data = itertools.islice(itertools.cycle(w.batches), n)
    with _quiet(s.sink):
        while not manager.stop_trigger:
            for x, t in data:
                with manager.run_iteration():
                    opt.zero_grad()
                    loss = F.cross_entropy(model(x), t)
                    ppe.reporting.report({'train/loss': loss})
                    loss.backward()
                    opt.step()
    run = finish(clock, model)
    shutil.rmtree(out)
    return run


class _LossModel(torch.nn.Module):
    """What ppe's Trainer calls: ``model(x, t)`` -> {'loss': ...}, reported as train/loss."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x, t):
        import pytorch_pfn_extras as ppe
        loss = F.cross_entropy(self.net(x), t)
        ppe.reporting.report({'train/loss': loss})
        return {'loss': loss}


def ppe_trainer(w: Workload, n: int, s: Settings) -> Run:
    """pytorch-pfn-extras' Chainer-style Trainer (``ppe.engine.create_trainer``) with
    LogReport + PrintReport + ProgressBar."""
    import pytorch_pfn_extras as ppe
    ext = ppe.training.extensions
    model = w.make_model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    clock = Clock(opt, n, s.period)
    out = tempfile.mkdtemp(dir=s.tmp)
    loss_model = _LossModel(model)
    ppe.to(loss_model, 'cpu')
    trainer = ppe.engine.create_trainer(
        loss_model, opt, 1, stop_trigger=(n, 'iteration'), out_dir=out, device='cpu',
        extensions=[ext.LogReport(trigger=(LOG_EVERY, 'iteration')),
                    ext.PrintReport(['epoch', 'iteration', 'train/loss', 'elapsed_time'],
                                    out=s.sink),
                    ext.ProgressBar(out=s.sink)])
    with _quiet(s.sink):
        trainer.run(Batches(w.batches))
    run = finish(clock, model)
    shutil.rmtree(out)
    return run


def ignite_run(w: Workload, n: int, s: Settings, log: bool) -> Run:
    """pytorch-ignite: ``create_supervised_trainer`` (its default output is ``loss.item()``);
    with ``log``, a RunningAverage of the loss, a ProgressBar and a log line every 50."""
    from ignite.engine import Events, create_supervised_trainer
    model = w.make_model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    clock = Clock(opt, n, s.period)
    trainer = create_supervised_trainer(model, opt, F.cross_entropy)
    if log:
        from ignite.handlers import ProgressBar
        from ignite.metrics import RunningAverage
        RunningAverage(output_transform=lambda loss: loss).attach(trainer, 'loss')
        ProgressBar(file=s.sink).attach(trainer, ['loss'])

        @trainer.on(Events.ITERATION_COMPLETED(every=LOG_EVERY))
        def log_line(engine):
            print(f'epoch {engine.state.epoch} iteration {engine.state.iteration} '
                  f'loss {engine.state.metrics["loss"]:.4f}', file=s.sink)
    with _quiet(s.sink):
        trainer.run(w.batches, max_iters=n)
    return finish(clock, model)


def lightning_run(w: Workload, n: int, s: Settings, log: bool) -> Run:
    """Lightning: everything off (no logger, checkpointing, progress bar, model summary),
    or with ``log`` its defaults (logger, progress bar, model summary; ``self.log`` of the
    loss every 50 steps) except checkpointing, which is off to match (d)."""
    import lightning as L

    class Module(L.LightningModule):
        def __init__(self, net, optimizer):
            super().__init__()
            self.net = net
            self.bench_optimizer = optimizer

        def training_step(self, batch, batch_idx):
            x, t = batch
            loss = F.cross_entropy(self.net(x), t)
            if log:
                self.log('loss', loss, prog_bar=True)
            return loss

        def configure_optimizers(self):
            return self.bench_optimizer

    for name in ('lightning', 'lightning.pytorch', 'lightning.fabric'):
        logging.getLogger(name).setLevel(logging.ERROR)
    model = w.make_model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    clock = Clock(opt, n, s.period)
    out = tempfile.mkdtemp(dir=s.tmp)
    options = dict(enable_checkpointing=False, log_every_n_steps=LOG_EVERY) if log else dict(
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False)
    with _quiet(s.sink):
        trainer = L.Trainer(max_steps=n, max_epochs=-1, accelerator='cpu', devices=1,
                            default_root_dir=out, **options)
        trainer.fit(Module(model, opt), train_dataloaders=Batches(w.batches))
    run = finish(clock, model)
    shutil.rmtree(out)
    return run


def peer_contestants() -> Dict[str, Contestant]:
    """Name -> contestant for every installed peer."""
    table = {
        'ppe': ('pytorch_pfn_extras', lambda w, n, s: ppe_manager(w, n, s, False)),
        'ppe-log': ('pytorch_pfn_extras', lambda w, n, s: ppe_manager(w, n, s, True)),
        'ppe-trainer': ('pytorch_pfn_extras', ppe_trainer),
        'ignite': ('ignite', lambda w, n, s: ignite_run(w, n, s, False)),
        'ignite-log': ('ignite', lambda w, n, s: ignite_run(w, n, s, True)),
        'lightning': ('lightning', lambda w, n, s: lightning_run(w, n, s, False)),
        'lightning-log': ('lightning', lambda w, n, s: lightning_run(w, n, s, True)),
    }
    missing = set(missing_peers())
    return {name: fn for name, (module, fn) in table.items() if module not in missing}


DESCRIPTIONS = {
    'ppe': 'ppe ExtensionsManager, no extensions',
    'ppe-log': 'ppe manager + LogReport/PrintReport/ProgressBar',
    'ppe-trainer': 'ppe create_trainer + LogReport/PrintReport/ProgressBar',
    'ignite': 'ignite create_supervised_trainer (.item()/step)',
    'ignite-log': 'ignite + RunningAverage + ProgressBar + log line',
    'lightning': 'Lightning Trainer, all off',
    'lightning-log': 'Lightning defaults (logger, bar, summary), no ckpt',
}
