"""Settings that silently degenerate warn once, with the fix; LogReport's file is strict JSON."""
import io
import json
import math
import warnings

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import extensions as E
from extensions.log_report import _encode
from trainerlib import Classifier, Trainer, reporter
from trainerlib.extension import PRIORITY_WRITER
from trainerlib.iterators import DataLoaderIterator, SerialIterator
from trainerlib.strict_json import strict_record
from trainerlib.updaters import StandardUpdater

NAN, INF = float('nan'), float('inf')


def dataset(n):
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(n))
    return TensorDataset(x, (x[:, 0] > 0).long())


def make_trainer(tmp_path, stop, *extensions):
    torch.manual_seed(0)
    model = Classifier(torch.nn.Linear(4, 2))
    updater = StandardUpdater(SerialIterator(dataset(20), 5, seed=0),
                              torch.optim.SGD(model.parameters(), lr=0.1), model)
    trainer = Trainer(updater, stop, out=str(tmp_path))
    for ext in extensions:
        trainer.extend(ext)
    return trainer


def run(tmp_path, *extensions, stop=(2, 'iteration')):
    trainer = make_trainer(tmp_path, stop, *extensions)
    trainer.run()
    return trainer


def every_iteration(**kwargs):
    return E.LogReport(trigger=(1, 'iteration'), **kwargs)


def quiet_print(entries, **kwargs):
    return E.PrintReport(entries, out=io.StringIO(), **kwargs)


# (what, setting(tmp_path), match): each setting warns exactly once
DEGENERATE = [
    ('one example', lambda p: SerialIterator(dataset(1), 1),
     r'SerialIterator: the dataset has a single example, so every batch is that example'),
    ('one example, larger batch', lambda p: SerialIterator(dataset(1), 4, shuffle=False),
     r'single example'),
    ('batch larger than the dataset', lambda p: SerialIterator(dataset(10), 25),
     r"batch_size=25 is larger than the dataset \(10 examples per epoch\): each iteration "
     r"counts 2\.5 epochs .*\(N, 'epoch'\) .*batch_size <= 10"),
    ('loader of one example', lambda p: DataLoaderIterator(DataLoader(dataset(1))),
     r'DataLoaderIterator: the dataset has a single example'),
    ('loader batch larger than the dataset',
     lambda p: DataLoaderIterator(DataLoader(dataset(3), batch_size=8, shuffle=True)),
     r'batch_size=8 is larger than the dataset \(3 examples.*each iteration is a whole epoch'),
    ('two LogReports, one file', lambda p: run(p, E.LogReport(), E.LogReport()),
     r"LogReport 'LogReport_1' and LogReport 'LogReport' both write .*log'.*filename="),
    ('an owned LogReport on the same file',
     lambda p: run(p, E.LogReport(), quiet_print(['epoch'], log_report=E.LogReport())),
     r"the LogReport owned by 'PrintReport' and LogReport 'LogReport' both write"),
    ('same explicit filename', lambda p: run(p, E.LogReport(filename='a.json'),
                                             E.LogReport(trigger=(1, 'iteration'),
                                                         filename='a.json')),
     r"a\.json"),
    ('a column never reported',
     lambda p: run(p, every_iteration(), quiet_print(['epoch', 'main/acc', 'main/loss'])),
     r"PrintReport: 'main/acc' \(did you mean 'main/accuracy'\?\) never appeared in the 2 "
     r"log entries.*'main/loss'"),
    ('a column the LogReport filters out',
     lambda p: run(p, every_iteration(keys=['main/loss']),
                   quiet_print(['main/loss', 'main/accuracy'])),
     r"'main/accuracy'.*never appeared.*its column stays blank"),
    ('two columns never reported',
     lambda p: run(p, every_iteration(), quiet_print(['main/los', 'validation/main/loss'])),
     r"'main/los' \(did you mean 'main/loss'\?\), 'validation/main/loss' .*never appeared"
     r".*their columns stay blank"),
    ('an owned LogReport\'s column',
     lambda p: run(p, quiet_print(['nothing'], log_report=every_iteration())),
     r"PrintReport: 'nothing' never appeared"),
]

# settings that must not warn
NORMAL = [
    ('batch equal to the dataset', lambda p: SerialIterator(dataset(10), 10)),
    ('one example, evaluation', lambda p: SerialIterator(dataset(1), 4, repeat=False)),
    ('large batch, evaluation', lambda p: SerialIterator(dataset(10), 25, repeat=False)),
    ('loader', lambda p: DataLoaderIterator(DataLoader(dataset(10), batch_size=4))),
    ('loader of one example, evaluation',
     lambda p: DataLoaderIterator(DataLoader(dataset(1)), repeat=False)),
    ('loader drawing more samples than the dataset',
     lambda p: DataLoaderIterator(DataLoader(dataset(3), batch_size=8, sampler=torch.utils.data
                                             .RandomSampler(dataset(3), True, 16)))),
    ('two LogReports, two files',
     lambda p: run(p, E.LogReport(), E.LogReport(filename='log_by_iteration'))),
    ('two in-memory LogReports',
     lambda p: run(p, E.LogReport(filename=None), E.LogReport(filename=None))),
    ('an owned in-memory LogReport',
     lambda p: run(p, E.LogReport(), quiet_print(['epoch'],
                                                 log_report=E.LogReport(filename=None)))),
    ('every column reported', lambda p: run(p, every_iteration(), quiet_print(
        ['epoch', 'iteration', 'elapsed_time', 'main/loss', 'main/accuracy']))),
    ('no entry emitted yet',
     lambda p: run(p, E.LogReport(trigger=(10, 'iteration')), quiet_print(['main/acc']))),
]


@pytest.mark.parametrize('what, setting, match', DEGENERATE, ids=[d[0] for d in DEGENERATE])
def test_degenerate_setting_warns_once(tmp_path, what, setting, match):
    with pytest.warns(UserWarning, match=match) as record:
        setting(tmp_path)
    ours = [w for w in record if issubclass(w.category, UserWarning)]
    assert len(ours) == 1, [str(w.message) for w in ours]
    assert '\n' not in str(ours[0].message)   # one line


@pytest.mark.parametrize('what, setting', NORMAL, ids=[n[0] for n in NORMAL])
def test_normal_setting_does_not_warn(tmp_path, what, setting):
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        setting(tmp_path)


def test_iterator_warns_at_construction_only(tmp_path):
    with pytest.warns(UserWarning, match='single example'):
        it = SerialIterator(dataset(1), 1)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        for _ in range(3):
            next(it)
        it.reset()
        it.load_state_dict(it.state_dict())


def test_key_reported_before_a_resume_counts_as_reported(tmp_path):
    """PrintReport keeps no 'keys seen' state: it reads them from the restored log."""
    def report_extra(trainer):
        reporter.report({'extra': 1.0})

    first = make_trainer(tmp_path / 'a', (2, 'iteration'), every_iteration())
    first.extend(report_extra, priority=PRIORITY_WRITER)
    first.run()
    resumed = make_trainer(tmp_path / 'b', (4, 'iteration'), every_iteration(),
                           quiet_print(['extra']))
    resumed.extend(lambda trainer: None, name='report_extra')   # same names as the first run
    resumed.load_state_dict(first.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        resumed.run()
    assert [('extra' in e) for e in resumed.get_extension('LogReport').log] == \
        [True, True, False, False]


def strict_loads(text):
    def refuse(constant):
        raise ValueError(f'not JSON: {constant}')
    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize('entry, on_disk', [
    ({'main/loss': NAN, 'epoch': 0}, {'main/loss': None, 'epoch': 0,
                                      'non_finite': {'main/loss': 'nan'}}),
    ({'a': INF, 'b': -INF, 'c': 1.5}, {'a': None, 'b': None, 'c': 1.5,
                                        'non_finite': {'a': 'inf', 'b': '-inf'}}),
    ({'main/loss': 0.25, 'iteration': 3}, {'main/loss': 0.25, 'iteration': 3}),
])
def test_encoded_entry_is_strict_json(entry, on_disk):
    text = _encode(entry)
    assert strict_loads(text) == on_disk
    assert text == '    ' + json.dumps(on_disk, indent=4).replace('\n', '\n    ')


@pytest.mark.parametrize('entry', [
    {'main/loss': 0.1 + 0.2, 'epoch': 3, 'iteration': 150, 'elapsed_time': 12.000001},
    {'x': 1e-300, 'y': -2.5e17, 'z': 0.0, 'w': -0.0, 'big': 10 ** 30},
    {'flag': True, 'off': False, 'none': None, 'note': 'warm "up"\n\u00e9\u4e2d'},
    {'ke\u00ff/\\y': 1},
    {},                                       # the json module's own writer from here on
    {1: 2.0},
    {'nested': {'a': 1.0}, 'list': [1, 2]},
    {'a': 1.0, 'b': NAN},
])
def test_encoded_entry_is_what_json_writes(entry):
    """Every entry is written as json.dumps(strict_record(entry), indent=4) writes it,
    the usual flat ones included (they skip the json module's indenting encoder)."""
    expected = json.dumps(strict_record(entry, '/'), indent=4, allow_nan=False)
    assert _encode(entry) == '    ' + expected.replace('\n', '\n    ')


def test_log_file_with_non_finite_values_is_strict_json(tmp_path):
    values = iter([1.0, NAN, INF, -INF])

    def report_values(trainer):
        reporter.report({'value': next(values)})

    log_report = every_iteration(write_interval=0.0)
    trainer = make_trainer(tmp_path, (4, 'iteration'), log_report)
    trainer.extend(report_values, priority=PRIORITY_WRITER)
    trainer.run()
    text = (tmp_path / 'log').read_text()
    on_disk = strict_loads(text)
    assert [e['value'] for e in on_disk] == [1.0, None, None, None]
    assert [e.get('non_finite') for e in on_disk] == \
        [None, {'value': 'nan'}, {'value': 'inf'}, {'value': '-inf'}]
    # the file is the whole strict log as json.dump(log, f, indent=4) writes it
    assert text == json.dumps([strict_record(e, '/') for e in log_report.log], indent=4)
    # the log in memory keeps the floats (PrintReport prints nan)
    memory = [e['value'] for e in log_report.log]
    assert memory[0] == 1.0 and math.isnan(memory[1]) and memory[2:] == [INF, -INF]
    assert all('non_finite' not in e for e in log_report.log)
