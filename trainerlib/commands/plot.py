"""``trainerlib plot``: keys of one or several Chainer-format ``log`` files on one PNG.

    trainerlib plot result_a/log result_b/log --keys main/loss validation/main/loss \\
        [--x iteration|epoch|elapsed_time] [--out plot.png] [--labels a b]

Draws one line per (file, key). A user error (missing file, not a JSON list of
dicts, a key that is in none of the logs) prints ``error: ...`` and exits with 2.
``tools/plot_log.py`` is this command under its old name. The figure helpers are
small copies of those of ``extensions.plot_report`` (trainerlib never imports extensions).
"""
from __future__ import annotations

import argparse
import importlib
import json
from typing import Any, Dict, List, Optional, Sequence

from trainerlib.cli import run_cli
from trainerlib.errors import TrainerlibError
from trainerlib.serialization import atomic_open

Log = List[Dict[str, Any]]
X_KEYS = ('iteration', 'epoch', 'elapsed_time')


def require_matplotlib(what: str) -> None:
    """Raise a one-line ImportError if matplotlib (the ``plot`` extra) is missing."""
    try:
        importlib.import_module('matplotlib')
    except ImportError:
        raise ImportError(f'{what} needs matplotlib: pip install trainerlib[plot]') from None


def _new_figure() -> Any:
    """A matplotlib ``Figure`` on the headless Agg canvas (the pyplot backend is untouched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure()
    FigureCanvasAgg(figure)
    return figure


def read_log(path: str) -> Log:
    """The entries of a ``log`` file written by LogReport (a JSON list of dicts)."""
    try:
        with open(path, encoding='utf-8') as f:
            log = json.load(f)
    except FileNotFoundError:
        raise TrainerlibError(f'log file {path!r} does not exist; check the path') from None
    except (OSError, UnicodeDecodeError) as e:
        raise TrainerlibError(f'cannot read {path!r}: {e}') from None
    except json.JSONDecodeError as e:
        raise TrainerlibError(f'{path!r} is not a JSON log ({e}); give a LogReport '
                              '"log" file') from None
    if not isinstance(log, list) or not all(isinstance(entry, dict) for entry in log):
        raise TrainerlibError(f'{path!r} is not a LogReport log: expected a JSON list of dicts')
    return log


def plot_logs(logs: Dict[str, Log], keys: Sequence[str], x_key: str, out: str,
              title: Optional[str] = None) -> int:
    """Draw every (label, key) present onto one figure saved at ``out`` (atomically).

    Args:
        logs: ``{label: log entries}``; with one log the legend shows the keys only.
        keys: the reported keys to draw, e.g. ``['validation/main/accuracy']``.
        x_key: the x axis, one of ``X_KEYS``.
        out: the PNG file to write.
        title: an optional title above the axes.

    Returns:
        The number of lines drawn.

    Raises:
        TrainerlibError: a key is in none of the logs, or no entry has ``x_key`` and a key.
    """
    available = sorted({k for log in logs.values() for entry in log for k in entry})
    missing = [k for k in keys if k not in available]
    if missing:
        raise TrainerlibError(f'key {missing[0]!r} is in none of the logs; available keys: '
                              f'{", ".join(available)}')
    figure = _new_figure()
    axes = figure.add_subplot(111)
    lines = 0
    for label, log in logs.items():
        for key in keys:
            points = [(e[x_key], e[key]) for e in log if x_key in e and key in e]
            if points:
                xs, ys = zip(*points)
                axes.plot(xs, ys, marker='x', label=key if len(logs) == 1 else f'{label}: {key}')
                lines += 1
    if not lines:
        raise TrainerlibError(f'no log entry has both {x_key!r} and one of the keys; '
                              'choose another --x')
    axes.set_xlabel(x_key)
    if title:
        axes.set_title(title)
    axes.grid()
    legend = axes.legend(bbox_to_anchor=(1.05, 1), loc='upper left', borderaxespad=0.)
    with atomic_open(out, 'wb', durable=False) as f:
        figure.savefig(f, format='png', bbox_extra_artists=(legend,), bbox_inches='tight')
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``trainerlib plot`` (and of ``tools/plot_log.py``)."""
    parser.add_argument('logs', nargs='+', metavar='LOG', help='log files, e.g. result/log')
    parser.add_argument('--keys', nargs='+', required=True, metavar='KEY',
                        help='keys to plot, e.g. main/loss validation/main/loss')
    parser.add_argument('--x', default='iteration', choices=X_KEYS,
                        help='x axis (default: iteration)')
    parser.add_argument('--out', default='plot.png', help='output PNG (default: plot.png)')
    parser.add_argument('--labels', nargs='+', metavar='LABEL',
                        help='one name per log for the legend (default: the paths)')
    parser.add_argument('--debug', action='store_true', help='show tracebacks of errors')


DESCRIPTION = ('Plot keys of one or several LogReport log files (JSON list of dicts) '
               'to one PNG, one line per (file, key).')


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parse the command line of the stand-alone form (``tools/plot_log.py``)."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    add_arguments(parser)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    """Read the logs, draw them to ``args.out``, print ``N lines -> OUT``; returns 0."""
    labels = args.labels or args.logs
    if len(labels) != len(args.logs):
        raise TrainerlibError(f'{len(args.labels)} --labels for {len(args.logs)} logs; '
                              'give one label per log')
    if len(set(labels)) != len(labels):
        raise TrainerlibError(f'labels must be distinct, got {labels}; use --labels')
    require_matplotlib('trainerlib plot')
    logs = {label: read_log(path) for label, path in zip(labels, args.logs)}
    lines = plot_logs(logs, args.keys, args.x, args.out)
    print(f'{lines} lines -> {args.out}')
    return 0


def execute(args: argparse.Namespace) -> int:
    """:func:`run` with user errors as one line and exit status 2."""
    return run_cli(lambda: run(args), args.debug)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Stand-alone entry point; returns the exit status."""
    return execute(parse_args(argv))
