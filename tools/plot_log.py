"""Plot keys of one or several Chainer-format ``log`` files to one PNG (e.g. to compare runs).

    python tools/plot_log.py result_a/log result_b/log --keys main/loss validation/main/loss \\
        [--x iteration|epoch|elapsed_time] [--out plot.png] [--labels a b]

The same as ``trainerlib plot …``: the code is :mod:`trainerlib.commands.plot` (installed
with the package); this file keeps the checkout's old command line working.
"""
from __future__ import annotations

import sys

from trainerlib.commands.plot import main, parse_args, plot_logs, read_log, run

__all__ = ['main', 'parse_args', 'plot_logs', 'read_log', 'run']

if __name__ == '__main__':
    sys.exit(main())
