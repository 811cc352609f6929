"""Snapshot safety: only the template's own files, ordered by iteration; incompatible snapshots
refused before anything changes; damage named without inviting unsafe loads; templates checked
early; files written with the user's umask."""
import io
import os
import pickle
import shutil

import pytest
import torch

import extensions as E
from trainerlib import Classifier, Trainer
from trainerlib.datasets import TupleDataset
from trainerlib.errors import ConfigError, SnapshotError, SnapshotMismatchError
from trainerlib.extension import FunctionExtension
from trainerlib.iterators import SerialIterator
from trainerlib.serialization import (atomic_open, load_snapshot, load_state, read_header,
                                      save_state)
from trainerlib.updaters import StandardUpdater

EVERY = 3


def build(out, iterations=6, opt='sgd', hidden=3, layers=2, groups=1, started=None,
          **snapshot_kwargs):
    """A tiny run that snapshots every 3 iterations; ``started`` gets the iteration it
    starts from (after autoload)."""
    torch.manual_seed(0)
    x = torch.randn(40, 4)
    modules = [torch.nn.Linear(4, 2)] if layers == 1 else \
        [torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2)]
    model = Classifier(torch.nn.Sequential(*modules))
    params = list(model.parameters())
    if groups == 2:
        params = [{'params': params[:2]}, {'params': params[2:], 'lr': 0.01}]
    optimizer = (torch.optim.SGD(params, lr=0.1, momentum=0.9) if opt == 'sgd'
                 else torch.optim.Adam(params, lr=0.01))
    iterator = SerialIterator(TupleDataset(x, (x[:, 0] > 0).long()), 8, seed=0)
    trainer = Trainer(StandardUpdater(iterator, optimizer, model), (iterations, 'iteration'),
                      out=str(out))
    snapshot_kwargs.setdefault('autoload', True)
    trainer.extend(E.snapshot(**snapshot_kwargs), trigger=(EVERY, 'iteration'))
    if started is not None:
        trainer.extend(FunctionExtension(lambda tr: None, trigger=(1, 'iteration'),
                                         initializer=lambda tr: started.append(
                                             tr.updater.iteration)), name='started')
    return trainer


def files_in(out):
    """Every file in ``out``: name -> (size, mtime_ns, content)."""
    return {name: (os.stat(out / name).st_size, os.stat(out / name).st_mtime_ns,
                   (out / name).read_bytes()) for name in sorted(os.listdir(out))}


def one_line(error):
    message = str(error)
    assert '\n' not in message and 'weights_only' not in message, message
    return message


# -- only the template's own files, newest by iteration ---------------------------------

STRAYS = ['snapshot_iter_4.bak', 'snapshot_iter_9.tmp', 'snapshot_iter_8 (copy)',
          'snapshot_iter_x', 'snapshot_iter_08', 'snapshot_iter_', 'snapshot_iter_-9',
          'copy of snapshot_iter_12', 'snapshot_iter_12.1', '.snapshot_iter_12']


@pytest.fixture(scope='module')
def later_snapshot(tmp_path_factory):
    """A valid snapshot of the same run at iteration 12: a stray that would win if read."""
    out = tmp_path_factory.mktemp('later')
    build(out, iterations=12).run()
    return (out / 'snapshot_iter_12').read_bytes()


@pytest.mark.parametrize('stray', STRAYS)
def test_strays_are_never_loaded_nor_deleted(tmp_path, later_snapshot, stray):
    build(tmp_path, iterations=6).run()
    (tmp_path / stray).write_bytes(later_snapshot)
    # copied without keeping times: the older snapshot and the stray are newest by mtime
    os.utime(tmp_path / 'snapshot_iter_6', ns=(1_000_000_000, 1_000_000_000))
    os.utime(tmp_path / 'snapshot_iter_3', ns=(3_000_000_000, 3_000_000_000))
    os.utime(tmp_path / stray, ns=(5_000_000_000, 5_000_000_000))
    before = files_in(tmp_path)[stray]
    started = []
    build(tmp_path, iterations=9, started=started, n_retains=2).run()
    assert started == [6]                        # the highest iteration, not the newest mtime
    assert files_in(tmp_path)[stray] == before   # untouched
    # retention kept the newest two by iteration (by mtime it would have kept 3)
    assert sorted(set(os.listdir(tmp_path)) - {stray}) == ['snapshot_iter_6', 'snapshot_iter_9']


def test_damaged_snapshot_under_a_snapshot_name_is_skipped_and_kept(tmp_path):
    build(tmp_path, iterations=6).run()
    (tmp_path / 'snapshot_iter_7').write_bytes(b'not a snapshot')
    started = []
    with pytest.warns(UserWarning, match='autoload skipped .*snapshot_iter_7'):
        build(tmp_path, iterations=9, started=started, n_retains=2).run()
    assert started == [6]
    assert sorted(os.listdir(tmp_path)) == ['snapshot_iter_6', 'snapshot_iter_7',
                                            'snapshot_iter_9']
    assert (tmp_path / 'snapshot_iter_7').read_bytes() == b'not a snapshot'


def test_partial_files_are_removed_only_for_snapshot_names(tmp_path):
    build(tmp_path, iterations=3).run()
    for name in ('.snapshot_iter_6.a1b2.tmp', '.snapshot_iter_6.bak.a1b2.tmp', '.other.x.tmp'):
        (tmp_path / name).write_bytes(b'partial')
    build(tmp_path, iterations=3).run()
    assert sorted(os.listdir(tmp_path)) == ['.other.x.tmp', '.snapshot_iter_6.bak.a1b2.tmp',
                                            'snapshot_iter_3']


def test_header_records_the_iteration(tmp_path):
    trainer = build(tmp_path, iterations=6)
    net = trainer.updater.get_model('main').predictor
    trainer.extend(E.snapshot_object(net, 'net_{.updater.epoch}'), trigger=(2, 'iteration'))
    trainer.run()
    assert read_header(str(tmp_path / 'snapshot_iter_3'))['iteration'] == 3
    assert read_header(str(tmp_path / 'net_1'))['iteration'] == 6
    # a snapshot written before the header had it: read from the updater's state
    legacy = tmp_path / 'legacy'
    torch.save({'format': 'trainerlib', 'version': '0',
                'state': load_state(str(tmp_path / 'snapshot_iter_6'))}, str(legacy))
    assert read_header(str(legacy))['iteration'] == 6


# -- incompatible snapshots: refused before anything changes -----------------------------

INCOMPATIBLE = {  # id: (saved with, resumed with, what the message names)
    'Adam to SGD': ({'opt': 'adam'}, {'opt': 'sgd'},
                    ["was made with Adam for optimizer 'main', this run uses SGD",
                     "param groups lack dampening, momentum, nesterov"]),
    'SGD to Adam': ({'opt': 'sgd'}, {'opt': 'adam'},
                    ["was made with SGD for optimizer 'main', this run uses Adam",
                     "param groups lack amsgrad, betas, eps"]),
    'second param group': ({}, {'groups': 2},
                           ["has 1 param group for optimizer 'main', this run has 2"] * 2),
    'layer size': ({}, {'hidden': 5},
                   ['predictor.0.weight: saved (3, 4), expected (5, 4)'] * 2),
    'missing layer': ({'layers': 1}, {}, ['missing predictor.2.weight'] * 2),
    'extra layer': ({}, {'layers': 1}, ['unexpected predictor.2.weight'] * 2),
}


def strip_records(out):
    """Rewrite the snapshots in ``out`` as older trainerlib wrote them (no class records)."""
    for path in out.glob('snapshot_iter_*'):
        state = load_state(str(path))
        del state['updater']['optimizer_records']
        torch.save({'format': 'trainerlib', 'version': '0', 'state': state}, str(path))


@pytest.mark.parametrize('recorded', [True, False], ids=['recorded', 'older snapshot'])
@pytest.mark.parametrize('case', INCOMPATIBLE)
def test_incompatible_snapshot_is_refused_before_anything_changes(tmp_path, case, recorded):
    saved_with, resumed_with, fragments = INCOMPATIBLE[case]
    build(tmp_path, iterations=6, **saved_with).run()
    if not recorded:
        strip_records(tmp_path)
    before = files_in(tmp_path)
    trainer = build(tmp_path, iterations=9, n_retains=1, snapshot_on_error=True,
                    **resumed_with)
    with pytest.raises(SnapshotMismatchError) as info:
        trainer.run()
    message = one_line(info.value)
    assert message.startswith(f'autoload: {tmp_path / "snapshot_iter_6"} '), message
    assert fragments[0 if recorded else 1] in message, message
    assert message.endswith('or choose another output directory'), message
    assert trainer.updater.iteration == 0
    assert files_in(tmp_path) == before  # nothing written, renamed or deleted
    started = []
    build(tmp_path, iterations=9, started=started, **saved_with).run()  # the matching setup
    assert started == [6]


def test_an_incompatible_snapshot_is_refused_even_if_an_older_one_would_load(tmp_path):
    build(tmp_path, iterations=3).run()
    newer = tmp_path / 'newer'
    build(newer, iterations=6, opt='adam').run()
    shutil.copy(newer / 'snapshot_iter_6', tmp_path / 'snapshot_iter_6')
    (tmp_path / 'snapshot_iter_9').write_bytes(b'damaged')  # damage is skipped, as before
    with pytest.warns(UserWarning, match='snapshot_iter_9'):
        with pytest.raises(SnapshotMismatchError, match='snapshot_iter_6 was made with Adam'):
            build(tmp_path, iterations=9).run()


@pytest.mark.parametrize('make, load_into, fragment', [
    (lambda: torch.optim.SGD(torch.nn.Linear(4, 2).parameters(), lr=0.1, momentum=0.9),
     lambda: torch.optim.Adam(torch.nn.Linear(4, 2).parameters()),
     'was made with SGD for the optimizer, this run uses Adam; resume with the same optimizer'),
    (lambda: torch.optim.SGD(torch.nn.Linear(4, 2).parameters(), lr=0.1),
     lambda: torch.optim.SGD(torch.nn.Linear(4, 3).parameters(), lr=0.1),
     'has a parameter of shape (2, 4) at param group 0, index 0 of the optimizer, this run '
     'has (3, 4)'),
    (lambda: torch.optim.SGD(torch.nn.Linear(4, 2).parameters(), lr=0.1),
     lambda: torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1),
     'has 2 parameters in param group 0 of the optimizer, this run has 1'),
    (lambda: torch.nn.Linear(4, 2), lambda: torch.nn.Linear(4, 3),
     'does not match the Linear module (2 mismatches: weight: saved (2, 4), expected (3, 4)'),
    (lambda: torch.nn.Linear(4, 2), lambda: torch.nn.Sequential(torch.nn.Linear(4, 2)),
     'missing 0.weight'),
], ids=['optimizer class', 'optimizer shapes', 'params per group', 'layer size', 'structure'])
def test_load_snapshot_names_what_differs(tmp_path, make, load_into, fragment):
    path = tmp_path / 'obj'
    trainer = build(tmp_path, iterations=3)
    trainer.extend(E.snapshot_object(make(), 'obj'), trigger=(3, 'iteration'))
    trainer.run()
    target = load_into()
    before = {k: v.clone() for k, v in target.state_dict().items()} \
        if isinstance(target, torch.nn.Module) else None
    with pytest.raises(SnapshotMismatchError) as info:
        load_snapshot(str(path), target)
    message = one_line(info.value)
    assert message.startswith(f'snapshot {path} ') and fragment in message, message
    if before is not None:
        assert all(torch.equal(v, target.state_dict()[k]) for k, v in before.items())


def test_a_trainer_snapshot_is_not_loaded_into_a_model(tmp_path):
    build(tmp_path, iterations=3).run()
    with pytest.raises(SnapshotMismatchError, match='is a whole-trainer snapshot, not the '
                       'state of a Linear; load it into the Trainer'):
        load_snapshot(str(tmp_path / 'snapshot_iter_3'), torch.nn.Linear(4, 3))


# -- damaged snapshots: what is wrong and what to do, never "weights_only=False" --------

class Payload:
    def __reduce__(self):
        return (print, ('this must never run',))


def _torch_bytes(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _flipped(data):
    data = bytearray(data)
    for i in range(64, 160):  # the pickled index, right after the first zip entry's header
        data[i] ^= 0xff
    return bytes(data)


DAMAGED = [
    ('empty', lambda good: b'', 'it is empty'),
    ('random bytes', lambda good: bytes(range(256)) * 3, 'it is not a trainerlib snapshot'),
    ('truncated', lambda good: good[:len(good) // 2], 'it is truncated'),
    ('corrupt index', _flipped, 'it is corrupt'),
    ('pickled code', lambda good: _torch_bytes({'format': 'trainerlib', 'state': Payload()}),
     'it contains pickled Python objects, not plain data'),
    ('bare pickle', lambda good: pickle.dumps(Payload(), protocol=2),
     'it contains pickled Python objects, not plain data'),
    ('no header', lambda good: _torch_bytes({'weight': torch.ones(2)}),
     'is not a trainerlib snapshot (no trainerlib header)'),
]


@pytest.mark.parametrize('make, fragment', [d[1:] for d in DAMAGED], ids=[d[0] for d in DAMAGED])
def test_damaged_snapshot_message_says_what_and_what_to_do(tmp_path, capsys, make, fragment):
    build(tmp_path, iterations=3).run()
    path = tmp_path / 'snapshot_iter_3'
    path.write_bytes(make(path.read_bytes()))
    for load in (lambda: load_state(str(path)), lambda: read_header(str(path)),
                 lambda: load_snapshot(str(path), torch.nn.Linear(4, 2))):
        with pytest.raises(SnapshotError) as info:
            load()
        message = one_line(info.value)
        assert fragment in message and str(path) in message, message
        if 'header' not in fragment:
            assert message.endswith('delete or move it, or point at another snapshot'), message
    with pytest.warns(UserWarning) as warned:  # autoload: skipped, then refuses to start over
        with pytest.raises(SnapshotError, match='none of the snapshots .* could be loaded'):
            build(tmp_path, iterations=6).run()
    assert any(fragment in str(w.message) for w in warned)
    assert not any('weights_only' in str(w.message) for w in warned)
    assert 'this must never run' not in capsys.readouterr().out


# -- the filename template, checked before anything is written ---------------------------

@pytest.mark.parametrize('template, fragment', [
    ('snap_{', "Single '{' encountered"),
    ('snap_}', "Single '}' encountered"),
    ('{0}', 'field {0} is the trainer itself'),
    ('snap_{}', 'field {} is the trainer itself'),
    ('{iteration}', 'field {iteration} is not an attribute of the trainer'),
    ('{1.updater.iteration}', 'is not an attribute of the trainer'),
    ('s_{.updater.iteration:{width}}', 'nested fields'),
    ('s_{.updater.epoch}_{.updater.iteration}', 'has several fields: number each'),
    ('', 'non-empty'),
])
@pytest.mark.parametrize('make', [E.snapshot, lambda filename: E.snapshot_object(
    torch.nn.Linear(1, 1), filename)], ids=['snapshot', 'snapshot_object'])
def test_template_syntax_is_checked_when_built(template, fragment, make):
    with pytest.raises(ConfigError) as info:
        make(filename=template)
    message = one_line(info.value)
    assert repr(template) in message and fragment in message, message
    assert 'e.g. {.updater.iteration}' in message


@pytest.mark.parametrize('template, fragment', [
    ('snap_{.updater.nonexistent}', "field {.updater.nonexistent} cannot be read from the "
                                    "trainer (AttributeError"),
    ('snap_{.updater.epoch_detail}', 'is 0.0, not a non-negative integer'),
    ('snap_{.out}', 'not a non-negative integer'),
    ('snap_{.updater.iteration:>4}', "gives 'snap_   0'"),
    ('snap_{.updater.iteration!x}', 'cannot be formatted'),
])
def test_template_fields_are_checked_before_the_first_iteration(tmp_path, template, fragment):
    trainer = build(tmp_path, iterations=6, filename=template)
    with pytest.raises(ConfigError) as info:
        trainer.run()
    message = one_line(info.value)
    assert repr(template) in message and fragment in message, message
    assert trainer.updater.iteration == 0 and os.listdir(tmp_path) == []


@pytest.mark.parametrize('template, names', [
    ('snapshot', ['snapshot']),      # no field: one file, rewritten; autoload loads it
    ('snap_{0.updater.epoch}_{0.updater.iteration:06d}', ['snap_0_000003', 'snap_1_000006']),
    ('it{.updater.iteration}.pt', ['it3.pt', 'it6.pt']),
])
def test_valid_templates_write_and_resume(tmp_path, template, names):
    build(tmp_path, iterations=6, filename=template).run()
    assert sorted(os.listdir(tmp_path)) == names
    started = []
    build(tmp_path, iterations=9, filename=template, started=started).run()
    assert started == [6]


# -- permissions: the user's umask, not mkstemp's 0600 ------------------------------------

@pytest.mark.parametrize('umask, mode', [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_umask_permissions(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        build(tmp_path, iterations=3).run()
        save_state({'w': torch.zeros(1)}, str(tmp_path / 'state'))
        with atomic_open(str(tmp_path / 'text'), 'w') as f:
            f.write('x')
    finally:
        os.umask(previous)
    for name in ('snapshot_iter_3', 'state', 'text'):
        assert os.stat(tmp_path / name).st_mode & 0o777 == mode, name
