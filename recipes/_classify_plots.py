"""The pictures of the classify recipe: each model's curves and the two models compared.

* ``out/<model>/loss.png`` and ``out/<model>/accuracy.png``: train (``main/…``) and
  validation (``validation/main/…``) per epoch, drawn by :class:`extensions.PlotReport`
  as the run goes (its points are saved in the snapshots: a resumed run continues them);
* ``out/comparison.png`` (``model=both``): the validation accuracy of the two models per
  epoch, drawn from their logs by :func:`trainerlib.commands.plot.plot_logs`, the code of
  ``trainerlib plot``.

Without matplotlib (``pip install trainerlib[plot]``) the recipe trains as before and
says that it draws nothing.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import trainerlib.extensions as E
from trainerlib.commands.plot import plot_logs, read_log

CURVES = ('loss', 'accuracy')
COMPARED_KEY = 'validation/main/accuracy'
MISSING = 'no plots: matplotlib is not installed (pip install trainerlib[plot])'


def add_curves(trainer: Any, name: str) -> bool:
    """Extend ``trainer`` (of model ``name``) with a PlotReport per curve of ``CURVES``.

    Returns:
        False (after saying so) when matplotlib is missing and nothing will be drawn.
    """
    if not E.PlotReport.available():
        print(f'{name}: {MISSING}')
        return False
    for what in CURVES:
        trainer.extend(E.PlotReport([f'main/{what}', f'validation/main/{what}'], x_key='epoch',
                                    filename=f'{what}.png'), name=f'PlotReport_{what}')
    return True


def plot_comparison(out: str, names: Sequence[str], dataset: str) -> Optional[str]:
    """Draw ``out/comparison.png``: ``COMPARED_KEY`` per epoch of each model's ``out/<name>/log``.

    Returns:
        The path written, or None when matplotlib is missing.
    """
    if not E.PlotReport.available():
        return None
    logs = {name: read_log(os.path.join(out, name, 'log')) for name in names}
    path = os.path.join(out, 'comparison.png')
    plot_logs(logs, [COMPARED_KEY], 'epoch', path,
              title=f'{dataset}: test accuracy per epoch ({" vs ".join(names)})')
    return path
