"""``trainerlib.training.extensions``: the top-level ``extensions`` package itself.

Importing this module registers ``extensions`` under this name in ``sys.modules`` (the
import system then returns it), so ``import trainerlib.training.extensions`` and
``from trainerlib.training.extensions import LogReport`` give the same objects as
``import extensions``. Only the ``trainerlib.training`` facade refers to ``extensions``.
"""
import importlib
import sys

sys.modules[__name__] = importlib.import_module('extensions')
