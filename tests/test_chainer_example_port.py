"""Chainer's examples/mnist/train_mnist.py, rewritten by ``sed`` on its import lines alone,
trains on the shipped MNIST data and resumes exactly (from ``--resume`` and ``--autoload``).

The example does not seed its RNGs; to compare two runs, each process seeds torch's
global RNG before it runs the script (``runpy``), which the script never sees.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainerlib.serialization import load_state

EXAMPLE = Path(__file__).parent / 'data' / 'chainer_examples' / 'train_mnist.py'
SED = [
    r's/^import chainer$/import trainerlib.chainer_compat as chainer/',
    r's/^import chainer\.functions as F$/import trainerlib.chainer_compat.functions as F/',
    r's/^import chainer\.links as L$/import trainerlib.chainer_compat.links as L/',
    r's/^from chainer import training$/from trainerlib import training/',
    r's/^from chainer\.training import extensions$/from trainerlib.training import extensions/',
    r's/^import chainerx$/import trainerlib.chainer_compat.chainerx as chainerx/',
]
SEEDED = ('import runpy, sys, torch; torch.manual_seed(0); sys.argv = sys.argv[1:]; '
          "runpy.run_path(sys.argv[0], run_name='__main__')")
ARGS = ['--unit', '100', '--batchsize', '100']     # 8,000 training images: 80 iterations/epoch
TIMEOUT = 600   # seconds for one run of the script (about 10 s on 2 quiet cores)


@pytest.fixture(scope='module')
def ported(tmp_path_factory):
    if shutil.which('sed') is None:
        pytest.skip('needs sed')
    script = tmp_path_factory.mktemp('port') / 'train_mnist.py'
    args = ['sed'] + [a for expr in SED for a in ('-e', expr)] + [str(EXAMPLE)]
    script.write_text(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
    return script


def train(script, out, *args):
    done = subprocess.run([sys.executable, '-c', SEEDED, str(script), '--out', str(out)]
                          + ARGS + list(args), capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=script.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def final_model(out, iteration):
    return load_state(str(out / f'snapshot_iter_{iteration}'))['updater']['models']['main']


def log_without_time(out):
    return [{k: v for k, v in e.items() if k != 'elapsed_time'}
            for e in json.loads((out / 'log').read_text())]


def test_sed_changes_import_lines_only(ported):
    before = EXAMPLE.read_text().splitlines()
    after = ported.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(before) == len(after) and len(changed) == 6
    assert all(a.startswith(('import ', 'from ')) for a, _ in changed)


@pytest.mark.slow
def test_ported_example_trains_and_resumes_exactly(ported, tmp_path):
    full = tmp_path / 'full'
    printed = train(ported, full, '--epoch', '2', '--frequency', '1')
    assert 'validation/main/accuracy' in printed
    log = log_without_time(full)
    assert [e['epoch'] for e in log] == [1, 2]
    assert log[-1]['validation/main/accuracy'] > 0.85      # it learns real digits
    for name in ('loss.png', 'accuracy.png', 'cg.dot'):
        assert (full / name).stat().st_size > 0, name
    graph = (full / 'cg.dot').read_text()
    assert 'main/loss' in graph and 'main/predictor/l1/weight' in graph

    first = tmp_path / 'first'
    train(ported, first, '--epoch', '1')                   # snapshot_iter_80, then stop
    resumed = tmp_path / 'resumed'
    train(ported, resumed, '--epoch', '2', '--resume', str(first / 'snapshot_iter_80'))
    autoloaded = tmp_path / 'autoloaded'
    shutil.copytree(first, autoloaded)
    train(ported, autoloaded, '--epoch', '2', '--autoload')

    want = final_model(full, 160)
    for out in (resumed, autoloaded):
        got = final_model(out, 160)
        assert all(torch.equal(got[k], want[k]) for k in want), out.name
        assert log_without_time(out) == log, out.name
