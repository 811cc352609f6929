"""tools/plot_log.py and tools/inspect_snapshot.py on files made by real (tiny) runs."""
import importlib.util
import random
import os
import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image

import extensions as E
from trainerlib import Classifier, Trainer
from trainerlib.iterators import SerialIterator
from trainerlib.serialization import load_state
from trainerlib.updaters import StandardUpdater

TOOLS = Path(__file__).resolve().parents[1] / 'tools'


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f'tool_{name}', TOOLS / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


plot_log = load_tool('plot_log')
inspect_snapshot = load_tool('inspect_snapshot')


def train(out, lr):
    torch.manual_seed(0)
    x = torch.randn(20, 4, generator=torch.Generator().manual_seed(1))
    dataset = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
    model = Classifier(torch.nn.Linear(4, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    updater = StandardUpdater(SerialIterator(dataset, 8), optimizer, model)  # 2.5 it/epoch
    trainer = Trainer(updater, (3, 'epoch'), out=str(out))
    trainer.extend(E.LogReport(trigger=(1, 'epoch')))
    trainer.extend(E.snapshot(), trigger=(1, 'epoch'))
    trainer.extend(E.snapshot_object(model.predictor, 'net.pt'), trigger=(1, 'epoch'))
    trainer.run()
    return trainer


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('runs')
    return [train(root / name, lr) for name, lr in (('a', 0.1), ('b', 0.01))]


def one_error_line(capsys):
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1 and 'Traceback' not in err
    return err


@pytest.mark.parametrize('x', ['iteration', 'epoch'])
def test_plot_log_compares_two_runs(tmp_path, runs, capsys, x):
    logs = [os.path.join(r.out, 'log') for r in runs]
    out = tmp_path / 'cmp.png'
    assert plot_log.main(logs + ['--keys', 'main/loss', 'main/accuracy', '--x', x,
                                 '--labels', 'a', 'b', '--out', str(out)]) == 0
    assert f'4 lines -> {out}' in capsys.readouterr().out
    with Image.open(out) as image:
        assert image.format == 'PNG' and image.size[0] > image.size[1] > 200
        image.load()
    assert plot_log.read_log(logs[0]) == runs[0].get_extension('LogReport').log


@pytest.mark.parametrize('args, message', [
    (['missing/log'], "log file 'missing/log' does not exist"),
    (['{a}', '--keys', 'main/lost'], "key 'main/lost' is in none of the logs; available keys: "
                                     'elapsed_time, epoch, iteration, main/accuracy, main/loss'),
    (['{bad}'], 'is not a LogReport log: expected a JSON list of dicts'),
    (['{a}', '{a}'], 'labels must be distinct'),
])
def test_plot_log_errors_are_one_line(tmp_path, runs, capsys, args, message):
    bad = tmp_path / 'bad.json'
    bad.write_text('{"main/loss": 1}')
    args = [a.format(a=os.path.join(runs[0].out, 'log'), bad=bad) for a in args]
    if '--keys' not in args:
        args += ['--keys', 'main/loss']
    assert plot_log.main(args + ['--out', str(tmp_path / 'p.png')]) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / 'p.png').exists()
    with pytest.raises(Exception):
        plot_log.main(args + ['--debug'])


def test_plot_log_help(capsys):
    with pytest.raises(SystemExit) as info:
        plot_log.main(['--help'])
    assert info.value.code == 0 and '--keys' in capsys.readouterr().out


def test_inspect_trainer_snapshot(runs, capsys):
    trainer = runs[0]
    path = os.path.join(trainer.out, 'snapshot_iter_8')   # end of epoch 3 (2.5 it/epoch)
    assert inspect_snapshot.main([path]) == 0
    out = capsys.readouterr().out
    for line in ['trainerlib version: 0.1.0', 'kind: trainer snapshot', 'iteration: 8',
                 "epoch: 3 (iterator 'main', position 4/20)",
                 '  main: 15 values in 2 tensors, 60 B',
                 '  main: 1 param group (lr 0.1); state: momentum_buffer',
                 'extensions: LogReport, snapshot, snapshot_object',
                 '  snapshot: previous=3.2, unit=epoch']:
        assert line in out.splitlines(), line
    assert f"elapsed time: {load_state(path)['elapsed_time']:.1f} s" in out
    assert inspect_snapshot.main([path, '--tensors']) == 0
    out = capsys.readouterr().out
    assert '  updater.models.main.predictor.weight: (3, 4) float32 48 B' in out.splitlines()


def test_inspect_snapshot_object(runs, capsys):
    assert inspect_snapshot.main([os.path.join(runs[0].out, 'net.pt')]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert 'kind: module state_dict' in lines
    assert lines[-2:] == ['  weight: (3, 4) float32 48 B', '  bias: (3,) float32 12 B']


class Payload:
    def __reduce__(self):
        return (print, ('this must never run',))


@pytest.mark.parametrize('make, message', [
    (None, 'does not exist'),
    (lambda path, src: path.write_bytes(random.Random(0).randbytes(300)), 'cannot be loaded safely'),
    (lambda path, src: path.write_bytes(src.read_bytes()[:400]), 'cannot be loaded safely'),
    (lambda path, src: torch.save({'weight': torch.ones(2)}, path), 'not a trainerlib snapshot'),
    (lambda path, src: path.write_bytes(pickle.dumps(Payload(), protocol=2)),
     'cannot be loaded safely'),
    (lambda path, src: torch.save({'format': 'trainerlib', 'version': '0', 'state': Payload()},
                                  path), 'cannot be loaded safely'),
], ids=['missing', 'garbage', 'truncated', 'no header', 'pickle', 'code in state'])
def test_inspect_refuses_bad_files(tmp_path, runs, capsys, make, message):
    path = tmp_path / 'snap'
    if make is not None:
        make(path, Path(runs[0].out) / 'snapshot_iter_8')
    assert inspect_snapshot.main([str(path)]) == 2
    err = one_error_line(capsys)
    assert message in err and 'this must never run' not in err
