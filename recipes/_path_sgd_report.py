"""The Path-SGD grid's comparison: one PNG of curves, a table (text, Markdown, CSV)."""
from __future__ import annotations

import csv
import io
import math
from typing import Any, Dict, List, Optional, Sequence

from trainerlib.extensions.plot_report import new_figure, require_matplotlib, save_png
from trainerlib.serialization import atomic_open

COLORS = {'sgd': 'tab:blue', 'adagrad': 'tab:orange', 'path_sgd': 'tab:green'}
STYLES = {'balanced': '-', 'unbalanced': '--'}
LABELS = {'sgd': 'SGD', 'adagrad': 'AdaGrad', 'path_sgd': 'Path-SGD'}
COLUMNS = ('init', 'optimizer', 'lr', 'status', 'epochs', 'train_loss', 'test_accuracy',
           'diverged_at_iteration')


def curves(final: Dict[str, Any]) -> Dict[str, List[float]]:
    """``{'epoch': [...], 'train_loss': [...], 'test_error': [...]}`` of one cell.

    Epoch 0 is the network before training; later points are the full-train-set
    cross-entropy and the test error measured at the end of each epoch.
    """
    points = [(0, final['initial']['train_loss'], 1 - final['initial']['test_accuracy'])]
    points += [(e['epoch'], e['train/main/loss'], 1 - e['validation/main/accuracy'])
               for e in final['log'] if 'train/main/loss' in e]
    epochs, losses, errors = zip(*points)
    return {'epoch': list(epochs), 'train_loss': list(losses), 'test_error': list(errors)}


def _positive(values: Sequence[float]) -> List[float]:
    """Values for a log axis: NaN (not drawn) for non-finite ones, 0 clipped to 1e-6."""
    return [max(v, 1e-6) if math.isfinite(v) else math.nan for v in values]


def plot(cells: Dict[str, Dict[str, Any]], path: str, title: str) -> None:
    """Training loss and test error against epochs, one curve per cell, log y axes.

    Colour = optimizer, line style = initialization (solid balanced, dashed
    unbalanced); a diverged cell ends with a cross and says where it diverged.
    Written atomically with the Agg canvas.
    """
    require_matplotlib('the path_sgd recipe')
    figure = new_figure(figsize=(11, 4.2))
    loss_ax, err_ax = figure.add_subplot(121), figure.add_subplot(122)
    for final in cells.values():
        c = curves(final)
        label = f"{LABELS[final['optimizer']]}, {final['init']} (lr {final['lr']:g})"
        if final['status'] == 'diverged':
            label += f", diverged at it. {final['diverged_at_iteration']}"
        style = dict(color=COLORS[final['optimizer']], linestyle=STYLES[final['init']],
                     marker='o', markersize=3)
        loss_ax.plot(c['epoch'], _positive(c['train_loss']), label=label, **style)
        err_ax.plot(c['epoch'], _positive(c['test_error']), **style)
        if final['status'] == 'diverged':
            for ax, key in ((loss_ax, 'train_loss'), (err_ax, 'test_error')):
                ax.plot(c['epoch'][-1:], _positive(c[key][-1:]), marker='x', markersize=12,
                        color=style['color'], linestyle='none')
    from matplotlib.ticker import NullFormatter
    figure.subplots_adjust(wspace=0.3)
    for ax, what in ((loss_ax, 'training loss (cross-entropy, full train set)'),
                     (err_ax, 'test error')):
        ax.set_yscale('log')
        ax.yaxis.set_minor_formatter(NullFormatter())   # no overlapping minor labels
        ax.set_xlabel('epoch')
        ax.set_ylabel(what)
        ax.grid(True, which='both', alpha=0.3)
    from matplotlib.ticker import FixedLocator, FormatStrFormatter
    err_ax.yaxis.set_major_locator(FixedLocator([0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]))
    err_ax.yaxis.set_major_formatter(FormatStrFormatter('%g'))
    figure.suptitle(title)
    legend = figure.legend(loc='lower center', ncol=3, fontsize='small',
                           bbox_to_anchor=(0.5, -0.12))
    save_png(figure, path, bbox_extra_artists=(legend,), bbox_inches='tight', dpi=110)


def rows(cells: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per cell with the :data:`COLUMNS` (None where a value does not exist)."""
    return [{k: final.get(k) for k in COLUMNS} for final in cells.values()]


def _fmt(value: Any, key: str) -> str:
    if value is None:
        return '-'
    if key == 'train_loss':
        return f'{value:.4g}'
    if key == 'test_accuracy':
        return f'{value:.4f}'
    return f'{value:g}' if isinstance(value, float) else str(value)


def text_table(table: List[Dict[str, Any]]) -> str:
    """Fixed-width table for the terminal."""
    cells = [[_fmt(row[k], k) for k in COLUMNS] for row in table]
    widths = [max(len(k), *(len(r[i]) for r in cells)) for i, k in enumerate(COLUMNS)]
    lines = ['  '.join(k.ljust(w) for k, w in zip(COLUMNS, widths))]
    lines += ['  '.join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return '\n'.join(lines)


def markdown_table(table: List[Dict[str, Any]], note: Optional[str] = None) -> str:
    """GitHub-flavoured Markdown table (plus an optional note below it)."""
    lines = ['| ' + ' | '.join(COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]
    lines += ['| ' + ' | '.join(_fmt(row[k], k) for k in COLUMNS) + ' |' for row in table]
    return '\n'.join(lines) + ('\n\n' + note if note else '') + '\n'


def write_tables(table: List[Dict[str, Any]], md_path: str, csv_path: str,
                 note: Optional[str] = None) -> None:
    """Write the Markdown and CSV tables atomically (CSV keeps full precision; '' = none)."""
    with atomic_open(md_path, 'w', durable=False) as f:
        f.write(markdown_table(table, note))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator='\n')
    writer.writeheader()
    writer.writerows({k: '' if row[k] is None else row[k] for k in COLUMNS} for row in table)
    with atomic_open(csv_path, 'w', durable=False) as f:
        f.write(buffer.getvalue())
