"""Summarise a trainerlib snapshot file without building the model.

    python tools/inspect_snapshot.py result/snapshot_iter_1000 [--tensors]

The same as ``trainerlib inspect …``: the code is :mod:`trainerlib.commands.inspect`
(installed with the package); this file keeps the checkout's old command line working.
"""
from __future__ import annotations

import sys

from trainerlib.commands.inspect import describe, main, tensors_in

__all__ = ['describe', 'main', 'tensors_in']

if __name__ == '__main__':
    sys.exit(main())
