"""Plot keys of one or several Chainer-format ``log`` files to one PNG (e.g. to compare runs).

    python tools/plot_log.py result_a/log result_b/log --keys main/loss validation/main/loss \\
        [--x iteration|epoch|elapsed_time] [--out plot.png] [--labels a b]

Draws one line per (file, key). A user error (missing file, not a JSON list of
dicts, a key that is in none of the logs) prints ``error: ...`` and exits with 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Optional, Sequence

from trainerlib.cli import run_cli
from trainerlib.errors import TrainerlibError

from extensions.plot_report import new_figure, require_matplotlib, save_png

Log = List[Dict[str, Any]]


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


def plot_logs(logs: Dict[str, Log], keys: Sequence[str], x_key: str, out: str) -> int:
    """Draw every (label, key) present onto one figure saved at ``out``; returns the line count."""
    available = sorted({k for log in logs.values() for entry in log for k in entry})
    missing = [k for k in keys if k not in available]
    if missing:
        raise TrainerlibError(f'key {missing[0]!r} is in none of the logs; available keys: '
                              f'{", ".join(available)}')
    figure = new_figure()
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
    axes.grid()
    legend = axes.legend(bbox_to_anchor=(1.05, 1), loc='upper left', borderaxespad=0.)
    save_png(figure, out, bbox_extra_artists=(legend,), bbox_inches='tight')
    return lines


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Plot keys of one or several LogReport log files (JSON list of dicts) '
                    'to one PNG, one line per (file, key).')
    parser.add_argument('logs', nargs='+', metavar='LOG', help='log files, e.g. result/log')
    parser.add_argument('--keys', nargs='+', required=True, metavar='KEY',
                        help='keys to plot, e.g. main/loss validation/main/loss')
    parser.add_argument('--x', default='iteration',
                        choices=('iteration', 'epoch', 'elapsed_time'),
                        help='x axis (default: iteration)')
    parser.add_argument('--out', default='plot.png', help='output PNG (default: plot.png)')
    parser.add_argument('--labels', nargs='+', metavar='LABEL',
                        help='one name per log for the legend (default: the paths)')
    parser.add_argument('--debug', action='store_true', help='show tracebacks of errors')
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    labels = args.labels or args.logs
    if len(labels) != len(args.logs):
        raise TrainerlibError(f'{len(args.labels)} --labels for {len(args.logs)} logs; '
                              'give one label per log')
    if len(set(labels)) != len(labels):
        raise TrainerlibError(f'labels must be distinct, got {labels}; use --labels')
    require_matplotlib('plot_log')
    logs = {label: read_log(path) for label, path in zip(labels, args.logs)}
    lines = plot_logs(logs, args.keys, args.x, args.out)
    print(f'{lines} lines -> {args.out}')
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = parse_args(argv)
    return run_cli(lambda: run(args), args.debug)


if __name__ == '__main__':
    sys.exit(main())
