"""Packaging: the installed package claims no generic top-level name, and works from a wheel.

``extensions/`` and ``recipes/`` install as ``trainerlib.extensions`` and
``trainerlib.recipes``; in the checkout the short names are the same modules.
"""
import configparser
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

setuptools = pytest.importorskip('setuptools')   # builds the wheel (no isolation: offline)

REPO = Path(__file__).resolve().parents[1]
MAPPED = {'extensions': 'trainerlib.extensions', 'recipes': 'trainerlib.recipes'}


def packages_on_disk():
    """Every package (a folder with __init__.py, or a data folder of package_data) by its
    installed name."""
    found = set()
    for top in ('trainerlib', 'extensions', 'recipes'):
        for folder in (REPO / top).rglob('*'):
            if folder.is_dir() and '__pycache__' not in folder.parts and (
                    (folder / '__init__.py').is_file() or any(folder.glob('*.yaml'))
                    or any(folder.glob('*.gz')) or any(folder.glob('*.npz'))
                    or any(folder.glob('README.md'))):
                found.add('.'.join(folder.relative_to(REPO).parts))
        found.add(top)
    return {MAPPED.get(n.split('.')[0], n.split('.')[0]) + n[len(n.split('.')[0]):]
            for n in found}


def test_setup_cfg_lists_every_package_under_trainerlib():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / 'setup.cfg')
    listed = set(cfg['options']['packages'].split())
    assert listed == packages_on_disk()
    assert all(name.split('.')[0] == 'trainerlib' for name in listed)
    mapping = dict(line.split(' = ') for line in cfg['options']['package_dir'].strip().splitlines())
    assert mapping == {'trainerlib.extensions': 'extensions', 'trainerlib.recipes': 'recipes'}


@pytest.mark.parametrize('short, long, sub', [('extensions', 'trainerlib.extensions', 'evaluator'),
                                              ('recipes', 'trainerlib.recipes', 'launcher')])
def test_the_checkout_names_are_the_installed_modules(short, long, sub):
    code = (f'import {short}, {long}, {short}.{sub}, {long}.{sub}, sys\n'
            f'print(sys.modules["{short}"] is sys.modules["{long}"], '
            f'sys.modules["{short}.{sub}"] is sys.modules["{long}.{sub}"])')
    done = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.split() == ['True', 'True'], done.stderr


@pytest.mark.slow
def test_a_wheel_in_a_fresh_venv_runs_a_recipe_and_plots(tmp_path):
    """pip wheel → a new venv (torch & co. from this environment, read-only, through a .pth
    line; not the checkout) → ``trainerlib run classify`` and ``trainerlib plot``."""
    wheels = tmp_path / 'wheels'
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation',
                    '-q', '-w', str(wheels), str(REPO)], check=True, timeout=600,
                   capture_output=True)
    wheel, = wheels.glob('trainerlib-*.whl')
    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True, timeout=300)
    python = venv / 'bin' / 'python'
    site = subprocess.run([str(python), '-c', 'import sysconfig; print(sysconfig.get_paths()'
                           '["purelib"])'], check=True, capture_output=True, text=True).stdout
    Path(site.strip(), 'deps.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    subprocess.run([str(python), '-m', 'pip', 'install', '--no-deps', '--no-index', '-q',
                    str(wheel)], check=True, timeout=300, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME')}
    env['OMP_NUM_THREADS'] = '1'
    work = tmp_path / 'work'    # not the checkout: nothing of it is on sys.path
    work.mkdir()

    def command(*args):
        done = subprocess.run([str(venv / 'bin' / 'trainerlib'), *args], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    command('run', 'classify', '--set', 'dataset=digits', '--set', 'train.epochs=1',
            '--out', str(work / 'run'))
    assert (work / 'run' / 'summary.json').is_file()
    command('plot', str(work / 'run' / 'mlp' / 'log'), str(work / 'run' / 'cnn' / 'log'),
            '--keys', 'main/loss', '--out', str(work / 'loss.png'))
    assert (work / 'loss.png').stat().st_size > 0
    probe = subprocess.run(
        [str(python), '-c', 'import importlib.util, json, trainerlib, trainerlib.extensions\n'
         'print(json.dumps([trainerlib.__file__, [importlib.util.find_spec(n) is None\n'
         '                  for n in ("extensions", "recipes")]]))'],
        cwd=work, env=env, capture_output=True, text=True, timeout=120)
    where, absent = json.loads(probe.stdout)
    assert str(venv) in where and absent == [True, True]     # the wheel, no generic names
