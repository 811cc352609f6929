"""``trainerlib.training`` mirrors ``chainer.training`` with the very same objects."""
import importlib
import json
import os
import subprocess
import sys

import pytest

import extensions
import trainerlib
from trainerlib import training
from trainerlib.extension import PRIORITY_EDITOR, PRIORITY_READER, PRIORITY_WRITER

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('facade, original', [
    ('Trainer', trainerlib.Trainer),
    ('StandardUpdater', trainerlib.updaters.StandardUpdater),
    ('Updater', trainerlib.updaters.Updater),
    ('Extension', trainerlib.Extension),
    ('make_extension', trainerlib.make_extension),
    ('get_trigger', trainerlib.triggers.get_trigger),
    ('IntervalTrigger', trainerlib.triggers.IntervalTrigger),
    ('PRIORITY_WRITER', PRIORITY_WRITER),
    ('PRIORITY_EDITOR', PRIORITY_EDITOR),
    ('PRIORITY_READER', PRIORITY_READER),
    ('triggers', trainerlib.triggers),
    ('updaters', trainerlib.updaters),
    ('extensions', extensions),
])
def test_names_are_the_same_objects(facade, original):
    assert getattr(training, facade) is original
    assert trainerlib.training is training


def test_util_get_trigger_is_the_trigger_factory():
    assert training.util.get_trigger is trainerlib.triggers.get_trigger
    assert training.extension.Extension is trainerlib.Extension


def run_python(code):
    proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize('statement, name, expected', [
    ('from trainerlib.training import extensions as E', 'E', 'extensions'),
    ('import trainerlib.training.extensions', 'trainerlib.training.extensions', 'extensions'),
    ('from trainerlib.training.extensions import LogReport', 'LogReport',
     'extensions.LogReport'),
])
def test_extensions_is_imported_on_first_use_in_every_form(statement, name, expected):
    """Each form a ported script may use, first in its process: ``extensions`` is not
    imported before, and is the top-level package (registered under the new name) after."""
    out = run_python('import sys\nimport trainerlib.training\n'
                     'before = "extensions" in sys.modules\n'
                     f'{statement}\nimport extensions\n'
                     f'print(before, {name} is {expected}, '
                     'sys.modules["trainerlib.training.extensions"] is extensions)')
    assert out.split() == ['False', 'True', 'True']


@pytest.mark.parametrize('module, original', [
    ('trainerlib.training.triggers', trainerlib.triggers),
    ('trainerlib.training.updaters', trainerlib.updaters),
    ('trainerlib.training.util', training.util),
])
def test_submodule_import_paths(module, original):
    assert importlib.import_module(module) is original
    from trainerlib.training.triggers import IntervalTrigger
    assert IntervalTrigger is trainerlib.triggers.IntervalTrigger


def test_no_trainerlib_module_imports_extensions():
    """DESIGN §2: the core never imports the extension library or the recipes (installed
    as trainerlib.extensions and trainerlib.recipes, ``extensions`` and ``recipes`` in the
    checkout); only trainerlib.training refers to it, and only when ``training.extensions``
    is used."""
    out = run_python(
        'import importlib, json, pkgutil, sys\n'
        'import trainerlib\n'
        'skip = ("trainerlib.training.extensions", "trainerlib.extensions", "trainerlib.recipes")\n'
        'names = [m.name for m in pkgutil.walk_packages(trainerlib.__path__, "trainerlib.")\n'
        '         if not m.name.startswith(skip)]\n'
        'for name in names:\n'
        '    importlib.import_module(name)\n'
        'import trainerlib.training\n'
        'loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("extensions", "recipes")\n'
        '                or m.startswith(skip[1:]))\n'
        'print(json.dumps({"modules": len(names), "loaded": loaded}))\n')
    result = json.loads(out)
    assert result['modules'] > 20 and result['loaded'] == []


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match='no attribute'):
        training.nope
