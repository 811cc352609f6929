"""Chainer's snapshot writers and ``snapshot(writer=, savefun=)``, from Chainer's documented
behaviour; the files stay atomic and ``weights_only``-loadable whatever the writer."""
import os
import threading

import pytest
import torch

import extensions as E
from extensions import _writer, snapshot_writers
from trainerlib import Classifier, Trainer, serialization
from trainerlib.datasets import TupleDataset
from trainerlib.errors import ConfigError, OutputDirError
from trainerlib.iterators import SerialIterator
from trainerlib.updaters import StandardUpdater

W = snapshot_writers


class SaveLater(W.Writer):
    """A user-written writer (Chainer's pattern): saves from a thread of its own."""

    def __init__(self):
        super().__init__()
        self.threads = []

    def __call__(self, filename, outdir, target):
        thread = threading.Thread(target=self.save, args=(filename, outdir, target))
        thread.start()
        self.threads.append(thread)

    def wait(self):
        for thread in self.threads:
            thread.join()


class SaveACopy(W.Writer):
    """A user-written writer that saves a copy of the bytes, in the training thread."""

    def __call__(self, filename, outdir, target):
        self.save(filename, outdir, bytes(target))


WRITERS = {
    'default': lambda: None,
    'SimpleWriter': W.SimpleWriter,
    'ThreadWriter': W.ThreadWriter,
    'ThreadQueueWriter': W.ThreadQueueWriter,
    'QueueWriter(task=SimpleWriter())': lambda: W.ThreadQueueWriter(task=W.SimpleWriter()),
    'user Writer subclass': SaveLater,
    'user Writer saving a copy': SaveACopy,
    'savefun=torch.save': lambda: W.ThreadWriter(savefun=torch.save),
}


def build(out, iterations, writer=None, n_retains=2, **kwargs):
    torch.manual_seed(0)
    x = torch.randn(48, 6)
    t = (x[:, :2].sum(1) > 0).long()
    model = Classifier(torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Dropout(0.3),
                                           torch.nn.Linear(8, 2)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    updater = StandardUpdater(SerialIterator(TupleDataset(x, t), 8, seed=3), optimizer, model)
    trainer = Trainer(updater, (iterations, 'iteration'), out=str(out))
    trainer.extend(E.ExponentialShift('lr', 0.9), trigger=(1, 'iteration'))
    trainer.extend(E.LogReport(trigger=(2, 'iteration')))
    trainer.extend(E.snapshot(writer=writer, n_retains=n_retains, autoload=True, **kwargs),
                   trigger=(3, 'iteration'))
    return trainer


def params(trainer):
    return trainer.updater.get_model('main').state_dict()


def log_without_time(trainer):
    return [{k: v for k, v in e.items() if k != 'elapsed_time'}
            for e in trainer.get_extension('LogReport').log]


@pytest.mark.parametrize('make', WRITERS.values(), ids=list(WRITERS))
def test_each_writer_saves_files_that_resume_bit_identically(tmp_path, make):
    reference = build(tmp_path / 'ref', 12, writer=W.SimpleWriter())
    reference.run()
    build(tmp_path / 'run', 7, writer=make()).run()          # stops after iteration 7
    names = sorted(os.listdir(tmp_path / 'run'))
    assert names == ['log', 'snapshot_iter_3', 'snapshot_iter_6'], names   # no temp file
    for name in names[1:]:   # plain data: loads without trainerlib, weights_only
        content = torch.load(tmp_path / 'run' / name, weights_only=True)
        assert content['format'] == 'trainerlib' and content['iteration'] == int(name[-1])
    resumed = build(tmp_path / 'run', 12, writer=make())
    resumed.run()
    assert resumed.updater.iteration == 12
    for key, value in params(reference).items():
        assert torch.equal(params(resumed)[key], value), key
    assert log_without_time(resumed) == log_without_time(reference)
    assert sorted(os.listdir(tmp_path / 'run'))[1:] == ['snapshot_iter_12', 'snapshot_iter_9']


@pytest.mark.parametrize('kwargs, kind', [
    ({}, W.ThreadWriter),                          # a deliberate difference from Chainer
    ({'background': True}, W.ThreadWriter),
    ({'background': False}, W.SimpleWriter),
    ({'savefun': torch.save}, W.ThreadWriter),
    ({'savefun': serialization.save_state}, W.ThreadWriter),
])
def test_the_writer_the_arguments_choose(kwargs, kind):
    assert type(E.snapshot(**kwargs).writer) is kind
    assert type(E.snapshot_object(torch.nn.Linear(1, 1), 'net', **kwargs).writer) is kind


def test_snapshot_object_takes_savefun_third_as_in_chainer(tmp_path):
    net = torch.nn.Linear(2, 2)
    ext = E.snapshot_object(net, 'net_{.updater.iteration}', torch.save)
    trainer = build(tmp_path, 3)
    trainer.extend(ext, trigger=(3, 'iteration'))
    trainer.run()
    other = torch.nn.Linear(2, 2)
    serialization.load_snapshot(str(tmp_path / 'net_3'), other)
    assert torch.equal(other.weight, net.weight)


@pytest.mark.parametrize('kwargs, error', [
    ({'savefun': torch.save, 'writer': W.SimpleWriter()}, TypeError),   # as in Chainer
    ({'background': False, 'writer': W.SimpleWriter()}, TypeError),
    ({'writer': 'a path'}, TypeError),
])
def test_arguments_that_cannot_go_together(kwargs, error):
    with pytest.raises(error):
        E.snapshot(**kwargs)
    with pytest.raises(error):
        E.snapshot_object(torch.nn.Linear(1, 1), 'net', **kwargs)


def pickling_savefun(path, target):
    torch.save({'code': print}, path)   # would write pickled objects


REFUSED = {
    'snapshot(savefun=f)': lambda: E.snapshot(savefun=pickling_savefun),
    'snapshot_object(.., f)': lambda: E.snapshot_object(torch.nn.Linear(1, 1), 'n',
                                                        pickling_savefun),
    'SimpleWriter(f)': lambda: W.SimpleWriter(pickling_savefun),
    'ThreadWriter(f)': lambda: W.ThreadWriter(savefun=pickling_savefun),
    'ThreadQueueWriter(f)': lambda: W.ThreadQueueWriter(savefun=pickling_savefun),
    'SimpleWriter(compression)': lambda: W.SimpleWriter(compression=True),
    'Writer.save(savefun=f)': lambda: W.SimpleWriter().save('x', '/nonexistent', b'',
                                                            pickling_savefun),
}


@pytest.mark.parametrize('make', REFUSED.values(), ids=list(REFUSED))
def test_a_savefun_of_its_own_is_refused_naming_the_fix(make):
    with pytest.raises(ConfigError) as info:
        make()
    message = str(info.value)
    assert 'not supported' in message and 'weights_only' in message
    assert 'drop it' in message and 'writer=' in message


@pytest.mark.parametrize('make, fix', [
    (W.ProcessWriter, 'ThreadWriter()'),
    (W.ProcessQueueWriter, 'ThreadQueueWriter()'),
    (lambda: E.ProcessWriter(savefun=torch.save), 'ThreadWriter()'),
])
def test_process_writers_are_refused_naming_the_thread_writer(make, fix):
    with pytest.raises(ConfigError, match='not available') as info:
        make()
    assert fix in str(info.value)


def test_writer_names_are_importable_as_in_chainer():
    for name in ('SimpleWriter', 'ThreadWriter', 'ThreadQueueWriter', 'QueueWriter',
                 'ProcessWriter', 'ProcessQueueWriter'):
        assert getattr(E, name) is getattr(E.snapshot_writers, name)
    assert E.snapshot_writers.Snapshot is E.Snapshot
    assert E.snapshot_writers.snapshot is E.snapshot
    assert issubclass(W.ThreadWriter, W.StandardWriter) and issubclass(W.SimpleWriter, W.Writer)


def test_condition_is_asked_each_time_and_the_writer_called_when_true(tmp_path):
    calls, answers = [], iter([True, False, True])
    ext = E.snapshot_object(torch.nn.Linear(1, 1), 'net_{.updater.iteration}',
                            writer=lambda *args: calls.append(args),
                            condition=lambda: next(answers))
    trainer = build(tmp_path, 3)
    for _ in range(3):
        ext(trainer)
    assert [(name, out) for name, out, _ in calls] == [('net_0', str(tmp_path))] * 2


def test_a_plain_callable_gets_the_files_read_only_bytes(tmp_path):
    got = []
    trainer = build(tmp_path, 3, writer=lambda *args: got.append(args), n_retains=-1)
    trainer.run()
    (filename, outdir, target), = got
    assert (filename, outdir) == ('snapshot_iter_3', str(tmp_path))
    assert target.readonly
    with pytest.raises(TypeError):
        target[0] = 0
    (tmp_path / 'copy').write_bytes(target)
    assert serialization.load_state(str(tmp_path / 'copy'))['updater']['iteration'] == 3


def test_a_plain_callable_cannot_promise_retention():
    with pytest.raises(ConfigError, match='n_retains=2 needs a writer'):
        E.snapshot(writer=lambda *args: None, n_retains=2)


def test_a_writer_that_leaves_a_partial_file_never_gets_it_loaded(tmp_path):
    class Careless(W.Writer):   # writes in place, and is cut short at iteration 6
        def __call__(self, filename, outdir, target):
            data = target if filename != 'snapshot_iter_6' else target[:len(target) // 2]
            with open(os.path.join(outdir, filename), 'wb') as f:
                f.write(data)

    build(tmp_path, 7, writer=Careless(), n_retains=-1).run()
    resumed = build(tmp_path, 7, writer=W.SimpleWriter())
    with pytest.warns(UserWarning, match='autoload skipped .*snapshot_iter_6.*truncated'):
        resumed.run()
    assert resumed.updater.iteration == 7     # went on from snapshot_iter_3


@pytest.mark.parametrize('make', [W.SimpleWriter, W.ThreadWriter, W.ThreadQueueWriter])
def test_a_failed_write_is_raised_and_keeps_the_older_files(tmp_path, monkeypatch, make):
    write_file = _writer.write_file

    def full_disk_at_6(data, path):
        if path.endswith('snapshot_iter_6'):
            raise OSError(28, os.strerror(28))
        write_file(data, path)
    monkeypatch.setattr(_writer, 'write_file', full_disk_at_6)
    with pytest.raises(OutputDirError, match='snapshot_iter_6.*previous snapshots are intact'):
        build(tmp_path, 30, writer=make(), n_retains=1).run()
    files = [n for n in os.listdir(tmp_path) if n.startswith(('snapshot', '.'))]
    assert 'snapshot_iter_6' not in files and not [n for n in files if n.endswith('.tmp')]
    assert serialization.read_header(str(tmp_path / files[0]))['iteration'] % 3 == 0


def test_one_queue_writer_shared_by_two_snapshots_keeps_their_retention_apart(tmp_path):
    writer = W.ThreadQueueWriter()
    trainer = build(tmp_path, 12, writer=writer, n_retains=1)
    net = trainer.updater.get_model('main')
    trainer.extend(E.snapshot_object(net, 'net_{.updater.iteration}', writer=writer,
                                     n_retains=2), trigger=(3, 'iteration'))
    trainer.run()
    names = sorted(n for n in os.listdir(tmp_path) if n != 'log')
    assert names == ['net_12', 'net_9', 'snapshot_iter_12']


def test_snapshot_on_error_writes_through_the_writer(tmp_path):
    class Boom(Exception):
        pass

    def explode(trainer):
        if trainer.updater.iteration == 2:
            raise Boom
    trainer = build(tmp_path, 10, writer=W.ThreadQueueWriter(), snapshot_on_error=True)
    trainer.extend(explode, trigger=(1, 'iteration'))
    with pytest.raises(Boom):
        trainer.run()
    assert serialization.read_header(str(tmp_path / 'snapshot_iter_2'))['iteration'] == 2


class Worker:
    def __init__(self, log):
        self.log = log

    def start(self):
        self.log.append('start')

    def join(self):
        self.log.append('join')


def test_standard_writer_starts_a_worker_per_call_and_joins_the_previous():
    log = []

    class Recording(W.StandardWriter):
        def create_worker(self, filename, outdir, target, **kwds):
            log.append(filename)
            return Worker(log)
    writer = Recording()
    writer('a', '.', b'')
    writer('b', '.', b'')
    writer.finalize()
    assert log == ['a', 'start', 'join', 'b', 'start', 'join']
    assert isinstance(W.ThreadWriter().create_worker('a', '.', b''), threading.Thread)


def test_queue_writer_puts_each_snapshot_and_a_stop_then_joins():
    log, puts = [], []

    class Queue:
        def put(self, item):
            puts.append(item)

        def join(self):
            log.append('queue.join')

    class Recording(W.QueueWriter):
        def create_queue(self):
            return Queue()

        def create_consumer(self, q):
            return Worker(log)
    writer = Recording()
    writer('a', '.', b'1')
    writer('b', '.', b'2')
    writer.finalize()
    assert [p if p is None else p[1:] for p in puts] == [['a', '.', b'1'], ['b', '.', b'2'], None]
    assert log == ['start', 'queue.join', 'join']


def test_queue_writer_consumes_until_none_and_keeps_the_first_error():
    done, calls = [], []

    class Queue:
        def __init__(self, items):
            self.items = list(items)

        def get(self):
            return self.items.pop(0)

        def task_done(self):
            done.append(1)

    def task(*args):
        calls.append(args)
        if len(calls) == 1:
            raise OSError('first')
    writer = W.ThreadQueueWriter()
    writer.consume(Queue([[task, 'a', '.', b''], [task, 'b', '.', b''], None]))
    assert [c[0] for c in calls] == ['a', 'b'] and len(done) == 3
    with pytest.raises(OSError, match='first'):
        writer.wait()
    writer.wait()      # raised once
