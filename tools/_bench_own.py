"""The hand-written loops and the trainerlib contestants of tools/bench_overhead.py."""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Dict

import torch
import torch.nn.functional as F

import trainerlib.extensions as E
from _bench_clock import Clock
from _bench_common import (LOG_EVERY, LR, Batches, Contestant, Run, Settings, Workload,
                           finish)
from trainerlib import Classifier, Trainer
from trainerlib.iterators import DataLoaderIterator, SerialIterator
from trainerlib.updaters import StandardUpdater


def hand(w: Workload, n: int, s: Settings, compiled: bool = False) -> Run:
    """(a) zero_grad / forward / loss / backward / step; no ``.item()``. ``compiled``: the
    network's forward through ``torch.compile`` (inductor; the loss stays eager), compiled
    once per process (a fresh model of the same network reuses the code)."""
    model = w.make_model()
    forward = torch.compile(model) if compiled else model
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    clock = Clock(opt, n, s.period)
    batches, nb = w.batches, len(w.batches)
    for i in range(n):
        x, t = batches[i % nb]
        opt.zero_grad()
        loss = F.cross_entropy(forward(x), t)
        loss.backward()
        opt.step()
    return finish(clock, model)


def hand_none(w: Workload, n: int, s: Settings) -> Run:
    """(a) with the gradients cleared by ``p.grad = None`` instead of ``opt.zero_grad()``: what
    trainerlib's updaters do (``trainerlib.updaters.zero_grad``), so the row shows how much of
    trainerlib's ratio is that saving."""
    model = w.make_model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    clock = Clock(opt, n, s.period)
    batches, nb = w.batches, len(w.batches)
    params = list(model.parameters())
    for i in range(n):
        x, t = batches[i % nb]
        for p in params:
            p.grad = None
        loss = F.cross_entropy(model(x), t)
        loss.backward()
        opt.step()
    return finish(clock, model)


def hand_item(w: Workload, n: int, s: Settings) -> Run:
    """(b) as (a), plus the usual ``running += loss.item()`` and a printed mean every 50."""
    model = w.make_model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    clock = Clock(opt, n, s.period)
    batches, nb = w.batches, len(w.batches)
    running = 0.0
    for i in range(n):
        x, t = batches[i % nb]
        opt.zero_grad()
        loss = F.cross_entropy(model(x), t)
        loss.backward()
        opt.step()
        running += loss.item()
        if (i + 1) % LOG_EVERY == 0:
            print(f'iteration {i + 1} loss {running / LOG_EVERY:.4f}', file=s.sink)
            running = 0.0
    return finish(clock, model)


def hand_compiled(w: Workload, n: int, s: Settings) -> Run:
    """(a) with the network compiled by ``torch.compile``: :func:`hand` with ``compiled``."""
    return hand(w, n, s, compiled=True)


def hand_full(w: Workload, n: int, s: Settings) -> Run:
    """(a) plus, every ``snapshot_every`` iterations, a validation pass and a torch.save
    of model + optimizer: the hand-written counterpart of (e)."""
    model = w.make_model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    clock = Clock(opt, n, s.period)
    batches, nb, val = w.batches, len(w.batches), w.val_batches()
    out = tempfile.mkdtemp(dir=s.tmp)
    for i in range(n):
        x, t = batches[i % nb]
        opt.zero_grad()
        loss = F.cross_entropy(model(x), t)
        loss.backward()
        opt.step()
        if (i + 1) % s.snapshot_every == 0:
            model.eval()
            with torch.no_grad():
                total = sum(F.cross_entropy(model(vx), vt, reduction='sum') for vx, vt in val)
            model.train()
            print(f'iteration {i + 1} val loss {total.item() / len(w.val_x):.4f}', file=s.sink)
            torch.save({'model': model.state_dict(), 'optimizer': opt.state_dict()},
                       os.path.join(out, f'snapshot_iter_{i + 1}'))
    run = finish(clock, model)
    shutil.rmtree(out)
    return run


def trainerlib_run(w: Workload, n: int, s: Settings, stack: str, serial: bool = False,
                   compile: bool = False) -> Run:
    """(c)-(e): Trainer + StandardUpdater over the in-memory batches that every contestant
    gets (a ``DataLoaderIterator`` over the list; with ``serial`` a ``SerialIterator`` over
    the dataset instead, which slices each batch out of it), with ``stack`` =
    'bare' (no extension), 'default' (LogReport + PrintReport + ProgressBar every 50
    iterations, to the null sink), 'snapshot' (default + snapshot every N) or 'full'
    (default + Evaluator + snapshot every N). The loss is reported through
    ``Classifier(accfun=None)``, so the work equals the hand loop's. ``compile``:
    ``StandardUpdater(compile=True)`` (the Classifier's forward and loss, inductor)."""
    model = w.make_model()
    classifier = Classifier(model, accfun=None)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    clock = Clock(opt, n, s.period)
    iterator = SerialIterator(torch.utils.data.TensorDataset(w.x, w.t), w.batch, shuffle=False) \
        if serial else DataLoaderIterator(Batches(w.batches))
    out = tempfile.mkdtemp(dir=s.tmp)
    trainer = Trainer(StandardUpdater(iterator, opt, classifier, compile=compile),
                      (n, 'iteration'), out=out)
    every = (s.snapshot_every, 'iteration')
    if stack != 'bare':
        trainer.extend(E.LogReport(trigger=(LOG_EVERY, 'iteration')))
        trainer.extend(E.PrintReport(['epoch', 'iteration', 'main/loss', 'elapsed_time'],
                                     out=s.sink))
        trainer.extend(E.ProgressBar(out=s.sink))
    if stack == 'full':
        val = SerialIterator(torch.utils.data.TensorDataset(w.val_x, w.val_t), w.batch,
                             repeat=False, shuffle=False)
        trainer.extend(E.Evaluator(val, classifier), trigger=every)
    if stack in ('snapshot', 'full'):
        trainer.extend(E.snapshot(), trigger=every)
    trainer.run()
    run = finish(clock, model)
    shutil.rmtree(out)
    return run


def own_contestants() -> Dict[str, Contestant]:
    """Name -> contestant, in table order (the first is the reference)."""
    return {
        'hand': hand,
        'hand-none': hand_none,
        'hand-item': hand_item,
        'hand-full': hand_full,
        'bare': lambda w, n, s: trainerlib_run(w, n, s, 'bare'),
        'default': lambda w, n, s: trainerlib_run(w, n, s, 'default'),
        'default-serial': lambda w, n, s: trainerlib_run(w, n, s, 'default', serial=True),
        'default+snapshot': lambda w, n, s: trainerlib_run(w, n, s, 'snapshot'),
        'full': lambda w, n, s: trainerlib_run(w, n, s, 'full'),
    }


def compiled_contestants() -> Dict[str, Contestant]:
    """The torch.compile contestants (``--compile``, or named by ``--only``): their weights
    may differ from the hand loop's by rounding (see :data:`WEIGHT_TOLERANCE`)."""
    return {
        'hand-compiled': hand_compiled,
        'default-compiled': lambda w, n, s: trainerlib_run(w, n, s, 'default', compile=True),
    }


WEIGHT_TOLERANCE = {name: 1e-3 for name in compiled_contestants()}
"""Largest absolute weight difference from the hand loop allowed: inductor's kernels round
differently from eager's (≈ 6e-8 after 300 CNN steps), and a max-pool tie that rounding
breaks the other way sends a gradient elsewhere (measured once: 1.4e-4); every other
contestant must end bit-identical."""

DESCRIPTIONS = {
    'hand': '(a) hand loop, no .item()',
    'hand-none': 'a clearing grads by p.grad = None, not zero_grad()',
    'hand-item': '(b) hand loop, .item() each step, print every 50',
    'hand-full': 'hand + eval + torch.save every N',
    'bare': '(c) Trainer + StandardUpdater',
    'default': '(d) c + LogReport/PrintReport/ProgressBar',
    'default-serial': 'd with a SerialIterator slicing the dataset',
    'default+snapshot': 'd + snapshot every N',
    'full': '(e) d + Evaluator + snapshot every N',
    'hand-compiled': 'a with torch.compile(model) (inductor)',
    'default-compiled': 'd with StandardUpdater(compile=True) (inductor)',
}
