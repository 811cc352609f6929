"""Trainer semantics: priorities, lifecycle, errors, state."""
import os

import pytest
import torch

import extensions as E
from trainerlib import (PRIORITY_EDITOR, PRIORITY_READER, PRIORITY_SNAPSHOT, PRIORITY_WRITER,
                        Classifier, Extension, NonFiniteError, OutputDirError, Trainer,
                        make_extension)
from trainerlib.iterators import SerialIterator
from trainerlib.updaters import StandardUpdater


def make_trainer(tmp_path, stop=(6, 'iteration'), n=12, batch=4):
    torch.manual_seed(0)
    x = torch.randn(n, 3)
    ds = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
    model = Classifier(torch.nn.Linear(3, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    updater = StandardUpdater(SerialIterator(ds, batch), opt, model)
    return Trainer(updater, stop, out=str(tmp_path / 'out'))


class Recorder(Extension):
    def __init__(self, calls, tag, priority=PRIORITY_READER, trigger=(1, 'iteration')):
        self.calls, self.tag, self.priority, self.trigger = calls, tag, priority, trigger

    def __call__(self, trainer):
        self.calls.append((trainer.updater.iteration, self.tag))

    def initialize(self, trainer):
        self.calls.append(('init', self.tag))

    def finalize(self, trainer=None):
        self.calls.append(('final', self.tag))


@pytest.mark.parametrize('priorities, expected', [
    ([PRIORITY_READER, PRIORITY_WRITER, PRIORITY_EDITOR], ['b', 'c', 'a']),
    ([PRIORITY_READER, PRIORITY_READER, PRIORITY_READER], ['a', 'b', 'c']),  # stable
    ([PRIORITY_SNAPSHOT, PRIORITY_READER, PRIORITY_SNAPSHOT], ['b', 'a', 'c']),
    ([50, 50, 400], ['c', 'a', 'b']),
])
def test_priority_order_is_descending_and_stable(tmp_path, priorities, expected):
    calls = []
    trainer = make_trainer(tmp_path, stop=(1, 'iteration'))
    for tag, p in zip('abc', priorities):
        trainer.extend(Recorder(calls, tag, p))
    trainer.run()
    assert [tag for it, tag in calls if it == 1] == expected


def test_lifecycle_initialize_call_before_training_finalize(tmp_path):
    calls = []
    trainer = make_trainer(tmp_path, stop=(2, 'iteration'))
    trainer.extend(Recorder(calls, 'a', trigger=(2, 'iteration')), call_before_training=True)
    trainer.run()
    assert calls == [('init', 'a'), (0, 'a'), (2, 'a'), ('final', 'a')]
    with pytest.raises(RuntimeError, match='only once'):
        trainer.run()


def test_snapshot_priority_runs_after_every_trigger_was_evaluated(tmp_path):
    """A snapshot taken at iteration k holds the triggers' states *after* k."""
    seen = []
    trainer = make_trainer(tmp_path, stop=(4, 'iteration'))

    @make_extension(trigger=(1, 'iteration'), priority=PRIORITY_SNAPSHOT)
    def grab(tr):
        seen.append(tr.state_dict()['triggers'])

    trainer.extend(grab)
    trainer.extend(E.snapshot_object(torch.nn.Linear(1, 1), 'x.pt'), trigger=(2, 'iteration'))
    trainer.run()
    # the snapshot_object trigger (registered after grab) was already evaluated at 2 and 4
    # (and, scheduled, asked only there)
    assert [s['snapshot_object']['previous'] for s in seen] == [0, 2, 2, 4]


def test_on_error_runs_for_all_and_finalize_always(tmp_path, capsys):
    calls = []

    class Boom(Recorder):
        def __call__(self, trainer):
            raise ZeroDivisionError('boom')

        def on_error(self, trainer, exc, tb):
            calls.append(('error', self.tag, type(exc).__name__))

    class BadOnError(Recorder):
        def on_error(self, trainer, exc, tb):
            raise RuntimeError('on_error itself fails')

    trainer = make_trainer(tmp_path)
    trainer.extend(BadOnError(calls, 'x'))
    trainer.extend(Boom(calls, 'b'))
    with pytest.raises(ZeroDivisionError, match='boom'):
        trainer.run()
    assert ('error', 'b', 'ZeroDivisionError') in calls
    assert ('final', 'x') in calls and ('final', 'b') in calls
    assert 'on_error itself fails' in capsys.readouterr().err


def fail_with(error):
    def fail(trainer=None):
        raise error
    return fail


@pytest.mark.parametrize('hook, error, printed', [
    ('call', ZeroDivisionError('boom'), True),             # Chainer's message and traceback
    ('call', NonFiniteError('diverged'), False),           # a user error: the CLI's one line
    ('initializer', ZeroDivisionError('boom'), False),     # not the loop (Chainer: the same)
])
def test_loop_exception_message(tmp_path, capsys, hook, error, printed):
    trainer = make_trainer(tmp_path)
    call = fail_with(error) if hook == 'call' else (lambda tr: None)
    trainer.extend(make_extension(initializer=fail_with(error) if hook != 'call' else None)(call))
    with pytest.raises(type(error)):
        trainer.run()
    err = capsys.readouterr().err
    assert (f'Exception in main training loop: {error}' in err) is printed
    assert ('Traceback (most recent call last)' in err) is printed


def test_names_clash_and_get_extension(tmp_path):
    trainer = make_trainer(tmp_path)
    a, b = E.LogReport(), E.LogReport()
    trainer.extend(a)
    trainer.extend(b)
    assert trainer.get_extension('LogReport') is a
    assert trainer.get_extension('LogReport_1') is b
    trainer.extend(lambda t: None, name='mine')
    with pytest.raises(ValueError, match="'mine' is already registered"):
        trainer.extend(lambda t: None, name='mine')
    with pytest.raises(ValueError, match='no extension named'):
        trainer.get_extension('nope')


def test_plain_callable_and_make_extension_defaults(tmp_path):
    calls = []
    trainer = make_trainer(tmp_path, stop=(6, 'iteration'))

    @make_extension(trigger=(3, 'iteration'), default_name='every3')
    def every3(tr):
        calls.append(tr.updater.iteration)

    trainer.extend(every3)
    trainer.extend(lambda tr: calls.append(-tr.updater.iteration), trigger=(2, 'iteration'))
    trainer.run()
    assert sorted(c for c in calls if c > 0) == [3, 6]
    assert sorted(-c for c in calls if c < 0) == [2, 4, 6]
    assert 'every3' in trainer.extensions


def test_epoch_stop_trigger_stops_after_the_update_ending_the_epoch(tmp_path):
    trainer = make_trainer(tmp_path, stop=(2, 'epoch'), n=10, batch=3)
    trainer.run()
    u = trainer.updater
    assert (u.epoch, u.iteration) == (2, 7)  # 10 examples, batch 3: epoch 2 ends in batch 7


def test_elapsed_time_survives_resume(tmp_path):
    trainer = make_trainer(tmp_path, stop=(2, 'iteration'))
    trainer.run()
    state = trainer.state_dict()
    state['elapsed_time'] = 1000.0
    resumed = make_trainer(tmp_path, stop=(4, 'iteration'))
    resumed.load_state_dict(state)
    assert resumed.elapsed_time == 1000.0
    resumed.run()
    assert 1000.0 < resumed.elapsed_time < 1100.0
    assert resumed.updater.iteration == 4


def test_unwritable_output_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('not a directory')
    trainer = make_trainer(tmp_path)
    trainer.out = str(blocker / 'sub')
    with pytest.raises(OutputDirError, match='cannot create the output directory'):
        trainer.run()
    if os.geteuid() != 0:  # root can write anywhere
        ro = tmp_path / 'ro'
        ro.mkdir(mode=0o500)
        trainer2 = make_trainer(tmp_path)
        trainer2.out = str(ro)
        with pytest.raises(OutputDirError, match='not writable'):
            trainer2.run()


def test_reports_are_prefixed_by_the_model_name(tmp_path):
    trainer = make_trainer(tmp_path, stop=(1, 'iteration'))
    trainer.run()
    assert set(trainer.observation) == {'main/loss', 'main/accuracy'}
    assert not trainer.observation['main/loss'].requires_grad


def test_custom_updater_without_super_init_works(tmp_path):
    """A Chainer-style custom updater that sets _iterators/_optimizers itself."""
    from trainerlib.convert import concat_examples
    from trainerlib.updaters import Updater

    class MyUpdater(Updater):
        def __init__(self, iterator, model, optimizer):
            self._iterators = {'main': iterator}
            self._optimizers = {'main': optimizer}
            self._models = {'main': model}
            self.model = model
            self.iteration = 0

        def update_core(self):
            x, t = concat_examples(self._iterators['main'].next())
            self._optimizers['main'].zero_grad()
            self.model(x, t).backward()
            self._optimizers['main'].step()

    base = make_trainer(tmp_path)
    it = base.updater.get_iterator('main')
    model = base.updater.get_model('main')
    trainer = Trainer(MyUpdater(it, model, base.updater.get_optimizer('main')), (2, 'epoch'),
                      out=str(tmp_path / 'o'))
    log = E.LogReport()
    trainer.extend(log)
    trainer.run()
    assert [e['epoch'] for e in log.log] == [1, 2]
    assert 'main/loss' in log.log[0]


class CountingTrigger:
    """Fires every ``period`` iterations and counts how often it was asked."""

    def __init__(self, period, every_iteration):
        self.period, self.fires_every_iteration, self.asked = period, every_iteration, 0

    def __call__(self, trainer):
        self.asked += 1
        return trainer.updater.iteration % self.period == 0


@pytest.mark.parametrize('trigger, expected', [
    ((1, 'iteration'), [1, 2, 3, 4, 5, 6]),
    ((2, 'iteration'), [2, 4, 6]),
    ((1, 'epoch'), [3, 6]),                 # 4 examples of 12 per iteration
])
def test_extension_runs_exactly_when_its_trigger_fires(tmp_path, trigger, expected):
    calls = []
    trainer = make_trainer(tmp_path)
    trainer.extend(Recorder(calls, 'a', trigger=trigger))
    trainer.run()
    assert [it for it, _ in calls if isinstance(it, int)] == expected


@pytest.mark.parametrize('every_iteration, asked', [(True, 0), (False, 6)])
def test_trigger_that_fires_every_iteration_is_not_asked(tmp_path, every_iteration, asked):
    calls, trigger = [], CountingTrigger(3, every_iteration)
    trainer = make_trainer(tmp_path)
    trainer.extend(Recorder(calls, 'a'), trigger=trigger)
    trainer.run()
    assert trigger.asked == asked
    fired = [1, 2, 3, 4, 5, 6] if every_iteration else [3, 6]
    assert [it for it, _ in calls if isinstance(it, int)] == fired


def test_stop_trigger_none_needs_another_stop(tmp_path):
    trainer = make_trainer(tmp_path, stop=None)

    @make_extension(trigger=(5, 'iteration'))
    def stopper(tr):
        raise KeyboardInterrupt

    trainer.extend(stopper)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert trainer.updater.iteration == 5


def test_trainer_observation_is_fresh_each_iteration(tmp_path):
    seen = []
    trainer = make_trainer(tmp_path, stop=(2, 'iteration'))
    trainer.extend(lambda tr: seen.append(id(tr.observation)))
    trainer.run()
    assert len(set(seen)) == 2


def test_namespace_updater_attributes(tmp_path):
    trainer = make_trainer(tmp_path, stop=(3, 'iteration'), n=12, batch=4)
    trainer.run()
    u = trainer.updater
    assert (u.epoch, u.epoch_detail, u.previous_epoch_detail, u.is_new_epoch) == \
        (1, 1.0, pytest.approx(2 / 3), True)
    assert isinstance(u.get_all_optimizers()['main'], torch.optim.SGD)
    with pytest.raises(KeyError, match="no optimizer named 'x'"):
        u.get_optimizer('x')


def test_call_before_training_reports_are_observed(tmp_path):
    trainer = make_trainer(tmp_path, stop=(1, 'iteration'))
    seen = []

    @make_extension(trigger=(1, 'iteration'), priority=PRIORITY_WRITER)
    def reporter_ext(tr):
        tr.reporter.report({'before': float(tr.updater.iteration)})
        seen.append(dict(tr.observation))

    trainer.extend(reporter_ext, call_before_training=True)
    trainer.run()
    assert seen[0] == {'before': 0.0}


@pytest.mark.parametrize('resume_at, expected', [
    (None, [0, 2, 4]),      # a fresh run: before training, then at its trigger
    (2, [4]),               # resumed at 2: not called again before the resumed training
])
def test_call_before_training_only_before_the_first_iteration(tmp_path, resume_at, expected):
    calls = []
    trainer = make_trainer(tmp_path, stop=(4, 'iteration'))
    trainer.extend(Recorder(calls, 'a', trigger=(2, 'iteration')), call_before_training=True)
    if resume_at is not None:
        first = make_trainer(tmp_path, stop=(resume_at, 'iteration'))
        first.extend(Recorder([], 'a', trigger=(2, 'iteration')), call_before_training=True)
        first.run()
        trainer.load_state_dict(first.state_dict())
    trainer.run()
    assert [it for it, tag in calls if it not in ('init', 'final')] == expected


class ScheduledTrigger:
    """Fires at multiples of ``period``, says so through ``next_fire``, records when asked."""

    def __init__(self, period):
        self.period, self.asked = period, []

    def __call__(self, trainer):
        iteration = trainer.updater.iteration
        self.asked.append(iteration)
        return iteration > 0 and iteration % self.period == 0

    def next_fire(self, iteration):
        return (iteration // self.period + 1) * self.period


def test_scheduled_trigger_is_asked_only_when_it_can_fire(tmp_path):
    calls, trigger = [], ScheduledTrigger(4)
    trainer = make_trainer(tmp_path, stop=(9, 'iteration'))
    trainer.extend(Recorder(calls, 'a'), trigger=trigger)
    trainer.run()
    assert trigger.asked == [4, 8]
    assert [it for it, _ in calls if isinstance(it, int)] == [4, 8]


def test_stop_trigger_is_asked_at_the_start_and_when_due(tmp_path):
    stop = ScheduledTrigger(5)
    trainer = make_trainer(tmp_path, stop=stop)
    trainer.run()
    assert stop.asked == [0, 5] and trainer.updater.iteration == 5


@pytest.mark.parametrize('triggers', [
    # (a, b, c): always, scheduled, polled; all fire at 4 and must run in priority order
    [(1, 'iteration'), ScheduledTrigger(4), CountingTrigger(4, False)],
    [CountingTrigger(4, False), (4, 'iteration'), (1, 'iteration')],
    [ScheduledTrigger(2), CountingTrigger(2, False), ScheduledTrigger(4)],
])
def test_scheduled_polled_and_always_triggers_keep_priority_order(tmp_path, triggers):
    calls = []
    trainer = make_trainer(tmp_path, stop=(4, 'iteration'))
    for tag, priority, trigger in zip('abc', [PRIORITY_READER, PRIORITY_WRITER, PRIORITY_EDITOR],
                                      triggers):
        trainer.extend(Recorder(calls, tag, priority), trigger=trigger)
    trainer.run()
    assert [tag for it, tag in calls if it == 4] == ['b', 'c', 'a']


def test_resumed_run_asks_scheduled_triggers_at_the_same_iterations(tmp_path):
    """Trigger states after a resume from any iteration equal the uninterrupted run's."""
    def run(stop, state=None):
        trainer = make_trainer(tmp_path, stop=(stop, 'iteration'))
        trainer.extend(E.LogReport(trigger=(3, 'iteration'), filename=None))
        trainer.extend(Recorder([], 'a'), trigger=(4, 'iteration'))
        trainer.extend(Recorder([], 'b', PRIORITY_SNAPSHOT), trigger=(5, 'iteration'))
        if state is not None:
            trainer.load_state_dict(state)
        trainer.run()
        return trainer.state_dict()

    for k, stop in [(1, 10), (3, 5), (4, 6), (5, 7), (7, 10)]:   # stops between due points
        whole, resumed = run(stop), run(stop, run(k))
        assert resumed['triggers'] == whole['triggers']
        assert resumed['stop_trigger'] == whole['stop_trigger']
        assert resumed['extensions']['LogReport']['trigger'] == \
            whole['extensions']['LogReport']['trigger']
