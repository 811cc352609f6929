"""Moments of gradient estimates drawn in chunks, and the variance study's figure."""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List

import torch

from trainerlib.serialization import atomic_open


class Moments:
    """Running sum and sum of squares (float64) of ``(draws, P)`` chunks of estimates."""

    def __init__(self) -> None:
        self.n = 0
        self.total = self.squares = None

    def add(self, rows: torch.Tensor) -> None:
        rows = rows.detach().to(torch.float64)
        s, ss = rows.sum(0), (rows * rows).sum(0)
        self.total = s if self.total is None else self.total + s
        self.squares = ss if self.squares is None else self.squares + ss
        self.n += len(rows)

    @property
    def mean(self) -> torch.Tensor:
        return self.total / self.n

    @property
    def total_variance(self) -> float:
        """Σ_p Var(g_p): the trace of the estimate's covariance (unbiased, n − 1)."""
        var = (self.squares - self.total * self.total / self.n) / (self.n - 1)
        return float(var.clamp_min(0).sum())


def draw_moments(estimate: Callable[[int], torch.Tensor], draws: int, chunk: int) -> Moments:
    """The moments of ``draws`` estimates, ``estimate(k)`` giving ``(k, P)`` at a time."""
    moments = Moments()
    while moments.n < draws:
        moments.add(estimate(min(chunk, draws - moments.n)))
    return moments


def compare(moments: Moments, reference: Moments) -> Dict[str, float]:
    """The estimator's variance and its mean against the high-sample reference.

    ``bias_check`` = ‖mean − ref‖² / (tr Σ / n + tr Σ_ref / n_ref): about 1 when both
    estimate the same gradient (the squared distance is then all sampling noise), far
    above 1 for a biased estimator.
    """
    diff = moments.mean - reference.mean
    noise = moments.total_variance / moments.n + reference.total_variance / reference.n
    cosine = torch.nn.functional.cosine_similarity(moments.mean, reference.mean, dim=0)
    return {'draws': moments.n, 'total_variance': moments.total_variance,
            'mean_norm': float(moments.mean.norm()),
            'distance_to_reference': float(diff.norm()),
            'bias_check': float(diff.pow(2).sum() / noise), 'cosine_to_reference': float(cosine)}


def plot(tables: Dict[str, Dict[str, Dict[str, Any]]], path: str) -> None:
    """One panel per model: the total variance of each estimator (log scale)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(tables), figsize=(5.5 * len(tables), 4))
    axes = [axes] if len(tables) == 1 else list(axes)
    for ax, (model, rows) in zip(axes, tables.items()):
        names: List[str] = list(rows)
        values = [rows[n]['total_variance'] for n in names]
        bars = ax.bar(range(len(names)), values, color='#4C72B0')
        ax.set_yscale('log')
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([n.replace('_', '\n') for n in names], fontsize=8)
        ax.set_ylabel('total variance of the gradient estimate')
        ax.set_title(f'{model}: {rows[names[0]]["draws"]} draws each')
        for bar, v in zip(bars, values):
            ax.text(bar.get_x() + bar.get_width() / 2, v, f'{v:.3g}', ha='center',
                    va='bottom', fontsize=8)
        ax.set_ylim(min(values) / 3, max(values) * 3 if math.isfinite(max(values)) else None)
    fig.tight_layout()
    with atomic_open(path, 'wb') as f:
        fig.savefig(f, format='png', dpi=100)
    plt.close(fig)
