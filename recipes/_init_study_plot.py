"""The comparison figure of the init_study recipe (matplotlib, headless Agg canvas)."""
from __future__ import annotations

from typing import Any, Dict

from trainerlib.extensions.plot_report import new_figure, require_matplotlib, save_png

COLORS = {'glorot': 'tab:blue', 'he': 'tab:red'}


def plot_study(runs: Dict[str, Dict[str, Any]], chance_loss: float, path: str) -> None:
    """Three panels written to ``path`` (PNG, atomically).

    Left: training loss (mean minibatch cross-entropy per log interval) vs iteration for
    every run, log scale, with the chance level ``chance_loss`` (ln 10) dashed. Middle:
    std of each layer's output at initialisation (post-ReLU, last point: logits). Right:
    std of each weight matrix's gradient at initialisation. Deep runs are solid lines,
    shallower ones dotted; colours tell the initialisation.

    Args:
        runs: ``{name: run}`` with ``init``, ``depth``, ``curve`` ([[iteration, loss], ...])
            and ``init_stats`` (``act_std``, ``grad_std``), as ``init_study.run_one`` returns.
        chance_loss: the loss of a uniform prediction, drawn as a reference line.
        path: output PNG file.
    """
    require_matplotlib('init_study')
    figure = new_figure(figsize=(15, 4.5))
    loss_ax, act_ax, grad_ax = figure.subplots(1, 3)
    deepest = max(r['depth'] for r in runs.values())
    for name, r in runs.items():
        style = dict(color=COLORS.get(r['init'], 'k'),
                     linestyle='-' if r['depth'] == deepest else ':',
                     label=f"{r['init']}, {r['depth']} layers")
        its, losses = zip(*r['curve']) if r['curve'] else ((), ())
        loss_ax.plot(its, losses, **style)
        stats = r['init_stats']
        act_ax.plot(range(1, len(stats['act_std']) + 1), stats['act_std'], **style)
        grad_ax.plot(range(1, len(stats['grad_std']) + 1), stats['grad_std'], **style)
    loss_ax.axhline(chance_loss, color='gray', linestyle='--', linewidth=1,
                    label=f'ln(10) = {chance_loss:.3f} (chance)')
    loss_ax.set(xlabel='iteration', ylabel='training cross-entropy (mean per log interval)',
                yscale='log', title='Training loss')
    act_ax.set(xlabel='layer (last: logits)', ylabel='std of the layer output', yscale='log',
               title='Forward signal at initialisation')
    grad_ax.set(xlabel='layer', ylabel='std of dLoss/dW', yscale='log',
                title='Weight gradients at initialisation')
    for ax in (loss_ax, act_ax, grad_ax):
        ax.grid(True, which='both', alpha=0.3)
    loss_ax.legend(fontsize='small')
    figure.tight_layout()
    save_png(figure, path, dpi=100)
