"""Chainer-style extensions: make_extension, callable objects, hooks without the trainer.

Written from Chainer 7.8's documented behaviour (``chainer/training/extension.py``,
``trainer.py`` and their tests), with PyTorch objects inside.
"""
import numpy as np
import pytest
import torch

import extensions as E
from trainerlib import PRIORITY_READER, PRIORITY_WRITER, Classifier, Trainer, training
from trainerlib.extension import Extension, FunctionExtension, as_extension, make_extension
from trainerlib.function_extension import takes_trainer, trainer_hook
from trainerlib.iterators import SerialIterator
from trainerlib.serialization import load_snapshot
from trainerlib.updaters import StandardUpdater


def make_trainer(tmp_path, stop=(6, 'iteration'), name='out'):
    torch.manual_seed(0)
    x = torch.randn(12, 3)
    ds = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
    model = Classifier(torch.nn.Linear(3, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    updater = StandardUpdater(SerialIterator(ds, 4, shuffle=False), opt, model)
    return Trainer(updater, stop, out=str(tmp_path / name))


class ChainerStyleExtension(Extension):
    """Chainer's DummyExtension: ``finalize(self)`` without the trainer."""

    def __init__(self):
        self.calls = []

    def __call__(self, trainer):
        self.calls.append(trainer.updater.iteration)

    def initialize(self, trainer):
        self.calls.append('init')

    def finalize(self):
        self.calls.append('final')


class CallableObject:
    """Chainer's DummyCallableClass, plus every attribute Chainer reads or documents."""

    trigger = (2, 'iteration')
    priority = PRIORITY_WRITER

    def __init__(self):
        self.name = 'callable'
        self.calls, self.count = [], 0
        self.weights = np.zeros(3)

    def __call__(self, trainer):
        self.calls.append(trainer.updater.iteration)
        self.count += 1
        self.weights += 1

    def initialize(self, trainer):
        self.calls.append('init')

    def finalize(self):
        self.calls.append('final')

    def on_error(self, trainer, exc, tb):
        self.calls.append(('error', type(exc).__name__))

    def serialize(self, serializer):
        self.count = serializer('count', self.count)
        serializer['nested']('weights', self.weights)


class Boom(Exception):
    pass


def raiser(at):
    @make_extension(priority=PRIORITY_WRITER + 1)
    def boom(trainer):
        if trainer.updater.iteration == at:
            raise Boom('boom at %d' % at)
    return boom


# -------------------------------------------------------------------- make_extension

def initializer(trainer):
    pass


@pytest.mark.parametrize('kwargs, expected', [
    ({}, {'trigger': (1, 'iteration'), 'default_name': 'ext', 'priority': PRIORITY_READER,
          'initialize': None, 'finalize': None, 'on_error': None}),
    ({'trigger': (2, 'epoch'), 'default_name': 'my_ext', 'priority': 50,
      'initializer': initializer, 'finalizer': print, 'on_error': max},
     {'trigger': (2, 'epoch'), 'default_name': 'my_ext', 'priority': 50,
      'initialize': initializer, 'finalize': print, 'on_error': max}),
])
def test_make_extension_returns_the_function_with_attributes(kwargs, expected):
    def ext(trainer):
        pass

    decorated = make_extension(**kwargs)(ext)
    assert decorated is ext
    for attribute, value in expected.items():
        assert getattr(ext, attribute) == value, attribute
    if 'initializer' in kwargs:
        assert ext.initialize is initializer


@pytest.mark.parametrize('kwargs, error', [
    ({'invoke_before_training': False}, ValueError),
    ({'foo': 1}, TypeError),
])
@pytest.mark.parametrize('where', ['make_extension', 'extend'])
def test_removed_and_unknown_arguments_are_chainer_errors(tmp_path, kwargs, error, where):
    with pytest.raises(error, match='initializer=' if error is ValueError else 'foo'):
        if where == 'make_extension':
            make_extension(**kwargs)
        else:
            make_trainer(tmp_path).extend(lambda t: None, **kwargs)


def test_make_extension_hooks_run_in_the_trainer(tmp_path):
    calls = []

    @make_extension(trigger=(3, 'iteration'), default_name='every3',
                    initializer=lambda tr: calls.append(('init', tr.updater.iteration)),
                    finalizer=lambda: calls.append('final'))         # Chainer: no argument
    def every3(tr):
        calls.append(tr.updater.iteration)

    trainer = make_trainer(tmp_path)
    trainer.extend(every3)
    trainer.run()
    assert calls == [('init', 0), 3, 6, 'final']
    assert trainer.get_extension('every3') is every3 and every3.name == 'every3'


def test_observe_value_is_a_make_extension_function(tmp_path):
    trainer = make_trainer(tmp_path, stop=(3, 'iteration'))
    ext = E.observe_value('it', lambda tr: tr.updater.iteration)
    assert (ext.default_name, ext.trigger, ext.priority) == \
        ('observe_it', (1, 'epoch'), PRIORITY_WRITER)
    trainer.extend(ext, trigger=(1, 'iteration'))
    trainer.run()
    assert trainer.observation['it'] == 3


# ------------------------------------------------------- callable objects, lifecycle hooks

def test_callable_object_keeps_its_attributes_and_hooks(tmp_path):
    obj = CallableObject()
    trainer = make_trainer(tmp_path, stop=(4, 'iteration'))
    trainer.extend(obj)
    wrapped = trainer._extensions['callable'].extension
    assert isinstance(wrapped, FunctionExtension) and wrapped.wrapped is obj
    assert (wrapped.trigger, wrapped.priority, wrapped.name) == \
        ((2, 'iteration'), PRIORITY_WRITER, 'callable')
    trainer.run()
    assert obj.calls == ['init', 2, 4, 'final']
    assert trainer.get_extension('callable') is obj and trainer.extensions['callable'] is obj


@pytest.mark.parametrize('make', [ChainerStyleExtension, CallableObject])
def test_hooks_see_an_error_and_finalize_without_the_trainer(tmp_path, make, capsys):
    ext = make()
    trainer = make_trainer(tmp_path)
    trainer.extend(ext, trigger=(1, 'iteration'))
    trainer.extend(raiser(2))
    with pytest.raises(Boom):
        trainer.run()
    errors = [('error', 'Boom')] if make is CallableObject else []
    assert ext.calls == ['init', 1] + errors + ['final']


def test_state_through_chainer_serialize_round_trips(tmp_path):
    obj = CallableObject()
    trainer = make_trainer(tmp_path, stop=(4, 'iteration'))
    trainer.extend(obj, trigger=(1, 'iteration'))
    trainer.extend(E.snapshot(filename='snap'), trigger=(4, 'iteration'))
    trainer.run()
    state = trainer.state_dict()['extensions']['callable']
    assert state['count'] == 4 and state['nested']['weights'].tolist() == [4.0] * 3

    again = CallableObject()
    resumed = make_trainer(tmp_path, stop=(6, 'iteration'), name='resumed')
    resumed.extend(again, trigger=(1, 'iteration'))
    load_snapshot(str(tmp_path / 'out' / 'snap'), resumed)   # weights_only file
    assert again.count == 4 and again.weights.tolist() == [4.0] * 3
    resumed.run()
    assert again.count == 6 and again.weights.tolist() == [6.0] * 3


class SerializingExtension(Extension):
    def __init__(self):
        self.seen = 0

    def __call__(self, trainer):
        self.seen += 1

    def serialize(self, serializer):
        self.seen = serializer('seen', self.seen)


def test_extension_subclass_with_serialize_saves_it(tmp_path):
    trainer = make_trainer(tmp_path, stop=(3, 'iteration'))
    trainer.extend(SerializingExtension())
    trainer.run()
    state = trainer.state_dict()
    other = make_trainer(tmp_path, name='other')
    ext = SerializingExtension()
    other.extend(ext)
    other.load_state_dict(state)
    assert ext.seen == 3


def zero():
    pass


def one(trainer):
    pass


def optional(trainer=None):
    pass


def star(*args):
    pass


def two(a, b):
    pass


@pytest.mark.parametrize('fn, expected', [
    (zero, False), (one, True), (optional, True), (star, True), (two, True), (print, True),
    (ChainerStyleExtension().finalize, False), (Extension().finalize, True),
])
def test_signature_is_read_once_to_adapt_hooks(fn, expected):
    assert takes_trainer(fn) is expected
    hook = trainer_hook(fn)
    assert (hook is fn) is expected


def test_is_before_training_is_true_until_the_first_update(tmp_path):
    seen = []
    trainer = make_trainer(tmp_path, stop=(2, 'iteration'))
    assert trainer.is_before_training
    trainer.extend(lambda tr: seen.append((tr.updater.iteration, tr.is_before_training)),
                   call_before_training=True)
    trainer.run()
    assert seen == [(0, True), (1, False), (2, False)] and not trainer.is_before_training


@pytest.mark.parametrize('show, printed', [(True, True), (False, False)])
def test_run_shows_the_loop_exception_unless_asked_not_to(tmp_path, capsys, show, printed):
    trainer = make_trainer(tmp_path)
    trainer.extend(raiser(3))
    with pytest.raises(Boom):
        trainer.run(show_loop_exception_msg=show)
    err = capsys.readouterr().err
    assert ('Exception in main training loop: boom at 3' in err) is printed
    assert ('Will finalize trainer extensions and updater' in err) is printed


def test_as_extension_refuses_what_is_not_callable():
    with pytest.raises(TypeError, match='callable taking the trainer'):
        as_extension(3)
    assert training.make_extension is make_extension
