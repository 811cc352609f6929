"""``chainer.training``'s import path: ``from trainerlib import training``.

A porting user renames ``from chainer import training`` to ``from trainerlib import
training`` (and ``from chainer.training import extensions, triggers, updaters`` to
``from trainerlib.training import …``). Every name here is the object trainerlib
defines elsewhere, not a copy.

``training.extensions`` is the top-level ``extensions`` package. trainerlib never
imports ``extensions`` (DESIGN §2); this facade is the one place that refers to it,
and only when ``training.extensions`` is first accessed or imported (PEP 562
``__getattr__`` and the alias module ``trainerlib/training/extensions.py``).
"""
from __future__ import annotations

import importlib
import sys
from types import ModuleType

from trainerlib import extension, trainer, triggers, updaters
from trainerlib.extension import (PRIORITY_EDITOR, PRIORITY_READER, PRIORITY_SNAPSHOT,
                                  PRIORITY_WRITER, Extension, make_extension)
from trainerlib.trainer import Trainer
from trainerlib.training import util
from trainerlib.triggers import IntervalTrigger, get_trigger
from trainerlib.updaters import StandardUpdater, Updater

# ``import trainerlib.training.triggers`` / ``from trainerlib.training.updaters import …``
for _name, _module in (('extension', extension), ('trainer', trainer),
                       ('triggers', triggers), ('updaters', updaters)):
    sys.modules.setdefault(f'{__name__}.{_name}', _module)


def __getattr__(name: str) -> ModuleType:
    if name == 'extensions':   # imports the top-level package, once
        return importlib.import_module(f'{__name__}.extensions')
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = ['Extension', 'IntervalTrigger', 'PRIORITY_EDITOR', 'PRIORITY_READER',
           'PRIORITY_SNAPSHOT', 'PRIORITY_WRITER', 'StandardUpdater', 'Trainer', 'Updater',
           'extension', 'extensions', 'get_trigger', 'make_extension', 'trainer', 'triggers',
           'updaters', 'util']
