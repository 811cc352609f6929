"""``trainerlib.training.extensions``: the extension library, ``trainerlib.extensions``.

Importing this module registers that package under this name in ``sys.modules`` (the
import system then returns it), so ``import trainerlib.training.extensions`` and
``from trainerlib.training.extensions import LogReport`` give the same objects as
``import trainerlib.extensions`` (and, in the checkout, ``import extensions``). Only the
``trainerlib.training`` facade refers to the extension library.
"""
import importlib
import sys

sys.modules[__name__] = importlib.import_module('trainerlib.extensions')
