"""``--pieces`` of tools/bench_overhead.py: the hand loop plus one piece of trainerlib at a time.

Each contestant adds a single piece to the hand loop, or removes pieces from the
trainerlib stack, so that its ratio in lockstep with the hand loop is that piece's cost
in place, where the interpreter and torch's dispatcher run with the caches the training
step leaves them (several times their cost in a micro-benchmark). The hand loop here
clears the gradients by ``p.grad = None``, as trainerlib's updaters do (``hand-none`` of
the main table), so that no piece's ratio includes that saving.
"""
from __future__ import annotations

import tempfile
from typing import Callable, Dict

import torch
import torch.nn.functional as F

import _bench_own
import trainerlib.extensions as E
from _bench_clock import Clock
from _bench_common import LOG_EVERY, LR, Batches, Contestant, Run, Settings, Workload, finish
from trainerlib import Classifier, Trainer
from trainerlib.convert import concat_examples
from trainerlib.iterators import DataLoaderIterator
from trainerlib.updaters import StandardUpdater

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _hand_with(make_step: Callable[[torch.nn.Module], Step], loader: bool = False) -> Contestant:
    """The hand loop with ``loss = step(x, t)`` (``make_step(model)``) for the forward and loss,
    the batches taken through a DataLoaderIterator and ``concat_examples`` if ``loader``."""
    def run(w: Workload, n: int, s: Settings) -> Run:
        model = w.make_model()
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        clock = Clock(opt, n, s.period)
        step = make_step(model)
        batches, nb = w.batches, len(w.batches)
        iterator = DataLoaderIterator(Batches(batches)) if loader else None
        params = list(model.parameters())
        for i in range(n):
            x, t = concat_examples(next(iterator)) if loader else batches[i % nb]
            for p in params:
                p.grad = None
            loss = step(x, t)
            loss.backward()
            opt.step()
        return finish(clock, model)
    return run


def _plain(model: torch.nn.Module) -> Step:
    return lambda x, t: F.cross_entropy(model(x), t)


def _detach(model: torch.nn.Module) -> Step:
    def step(x, t):
        loss = F.cross_entropy(model(x), t)
        step.observation = {'main/loss': loss.detach()}   # what a report keeps
        return loss
    return step


def _one_op(model: torch.nn.Module) -> Step:
    total = torch.zeros(())

    def step(x, t):
        loss = F.cross_entropy(model(x), t)
        with torch.no_grad():
            total.add_(loss)   # one small in-place op per iteration
        return loss
    return step


def _trainer(w: Workload, n: int, s: Settings, classifier: bool, extensions: str) -> Run:
    """Trainer + StandardUpdater (a Classifier, or ``loss_func``) with the extensions named by
    the letters of ``extensions``: L LogReport, P PrintReport, B ProgressBar."""
    model = w.make_model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    clock = Clock(opt, n, s.period)
    iterator = DataLoaderIterator(Batches(w.batches))
    updater = StandardUpdater(iterator, opt, Classifier(model, accfun=None)) if classifier \
        else StandardUpdater(iterator, opt, loss_func=_plain(model))
    trainer = Trainer(updater, (n, 'iteration'), out=tempfile.mkdtemp(dir=s.tmp))
    if 'L' in extensions:
        trainer.extend(E.LogReport(trigger=(LOG_EVERY, 'iteration'), filename=None))
    if 'P' in extensions:
        trainer.extend(E.PrintReport(['epoch', 'iteration', 'main/loss', 'elapsed_time'],
                                     out=s.sink))
    if 'B' in extensions:
        trainer.extend(E.ProgressBar(out=s.sink))
    trainer.run()
    return finish(clock, model)


def piece_contestants() -> Dict[str, Contestant]:
    """Name -> contestant (with the hand loop first, the reference)."""
    return {
        'hand': _bench_own.hand_none,
        'hand+detach': _hand_with(_detach),
        'hand+one-op': _hand_with(_one_op),
        'hand+classifier': _hand_with(lambda model: Classifier(model, accfun=None)),
        'hand+iterator': _hand_with(_plain, loader=True),
        'trainer-loss_func': lambda w, n, s: _trainer(w, n, s, classifier=False, extensions=''),
        'trainer-bare': lambda w, n, s: _trainer(w, n, s, classifier=True, extensions=''),
        '+LogReport': lambda w, n, s: _trainer(w, n, s, classifier=True, extensions='L'),
        '+PrintReport': lambda w, n, s: _trainer(w, n, s, classifier=True, extensions='LP'),
        '+ProgressBar': lambda w, n, s: _trainer(w, n, s, classifier=True, extensions='LPB'),
    }


DESCRIPTIONS = {
    'hand': '(a) hand loop, grads cleared by p.grad = None',
    'hand+detach': 'a + loss.detach() kept in a dict (a report)',
    'hand+one-op': 'a + one in-place add of the loss (no_grad)',
    'hand+classifier': 'a with Classifier(accfun=None), no reporter',
    'hand+iterator': 'a with DataLoaderIterator + concat_examples',
    'trainer-loss_func': 'Trainer + StandardUpdater(loss_func=), nothing reported',
    'trainer-bare': 'the same with Classifier: (c) bare',
    '+LogReport': 'the same + LogReport every 50, no file',
    '+PrintReport': 'the same + PrintReport (to the null sink)',
    '+ProgressBar': 'the same + ProgressBar (to the null sink): (d) without the log file',
}
