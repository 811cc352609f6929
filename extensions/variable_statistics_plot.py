"""VariableStatisticsPlot: plot percentiles, mean and std of parameters and their gradients."""
from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from trainerlib.extension import PRIORITY_READER, Extension, TriggerLike

from trainerlib.extensions.plot_report import new_figure, require_matplotlib, save_png

Targets = Union[torch.nn.Module, torch.Tensor, Sequence[Union[torch.nn.Module, torch.Tensor]]]
_COLOR = (0.122, 0.467, 0.706)  # matplotlib's C0, as Chainer
_LIGHT = _COLOR + (0.2,)


def _unpack(targets: Targets) -> List[torch.Tensor]:
    if isinstance(targets, torch.nn.Module):
        return [p for p in targets.parameters() if not torch.nn.parameter.is_lazy(p)]
    if isinstance(targets, torch.Tensor):
        return [targets]
    if isinstance(targets, (list, tuple)):
        return [t for target in targets for t in _unpack(target)]
    raise TypeError('VariableStatisticsPlot targets must be an nn.Module, a tensor, or a list '
                    f'of them; got {type(targets).__name__}')


def sample_values(tensors: Sequence[torch.Tensor], size: int,
                  generator: torch.Generator) -> torch.Tensor:
    """Elements of the concatenated ``tensors`` as a float64 CPU vector.

    All of them if there are at most ``size``; else ``size`` drawn uniformly
    (with replacement) by ``generator``, gathered on each tensor's device.
    """
    sizes = [t.numel() for t in tensors]
    total = sum(sizes)
    if total <= size:
        return torch.cat([t.detach().reshape(-1).to('cpu', torch.float64) for t in tensors])
    index = torch.randint(total, (size,), generator=generator).sort().values
    bounds = torch.tensor(np.cumsum([0] + sizes)[:-1])
    starts = torch.searchsorted(index, bounds).tolist() + [size]
    parts = []
    for t, offset, lo, hi in zip(tensors, bounds.tolist(), starts[:-1], starts[1:]):
        if hi > lo:
            local = (index[lo:hi] - offset).to(t.device)
            parts.append(t.detach().reshape(-1)[local].to('cpu', torch.float64))
    return torch.cat(parts)


class VariableStatisticsPlot(Extension):
    """Plots statistics of parameters (``data``) and gradients (``grad``) over training.

    Chainer's figure: a column per kind, a row of mean ± std, a row of nested
    percentile bands. Unlike Chainer (statistics of every iteration, reservoir
    sampled), they are computed only when the trigger fires, from at most
    ``max_sample_size`` elements of all targets together drawn by a seeded
    generator (saved in snapshots with the history). Gradients are read from
    ``param.grad`` after the update; a missing gradient gives NaN.
    Needs matplotlib (``[plot]`` extra).

    Args:
        targets: an ``nn.Module`` (its parameters), a tensor, or a list of them.
        max_sample_size: elements sampled per kind at each trigger, default 1000.
        report_data, report_grad: plot the parameters / the gradients, default True.
        plot_mean, plot_std: plot the mean / the (population) std, default True.
        percentile_sigmas: percentiles in [0, 100] to plot (Chainer's default:
            the ±0, 1, 2, 3 sigma points of a normal distribution).
        trigger: when to compute and redraw, default ``(1, 'epoch')``.
        filename: PNG file name in ``trainer.out``, default ``'statistics.png'``.
        figsize: figure size in inches (None: matplotlib's default).
        marker: matplotlib marker of the lines (None: none).
        grid: draw a grid, default True.
        seed: seed of the sampling generator, default 0.
    """

    priority = PRIORITY_READER
    rank0_only = True

    def __init__(self, targets: Targets, max_sample_size: int = 1000, report_data: bool = True,
                 report_grad: bool = True, plot_mean: bool = True, plot_std: bool = True,
                 percentile_sigmas: Union[float, Sequence[float]] = (
                     0, 0.13, 2.28, 15.87, 50, 84.13, 97.72, 99.87, 100),
                 trigger: TriggerLike = (1, 'epoch'), filename: str = 'statistics.png',
                 figsize: Optional[Tuple[float, float]] = None, marker: Optional[str] = None,
                 grid: bool = True, *, seed: int = 0) -> None:
        require_matplotlib('VariableStatisticsPlot')
        self._targets = targets
        if not _unpack(targets):
            raise ValueError('VariableStatisticsPlot: the targets hold no tensor to observe')
        if max_sample_size < 1:
            raise ValueError(f'max_sample_size must be >= 1, got {max_sample_size}')
        sigmas = [percentile_sigmas] if np.isscalar(percentile_sigmas) else percentile_sigmas
        self._sigmas = [float(s) for s in sigmas]
        self._stats = ['mean'] * plot_mean + ['std'] * plot_std + ['percentile'] * bool(sigmas)
        self._keys = ['data'] * report_data + ['grad'] * report_grad
        if not self._stats or not self._keys:
            raise ValueError('VariableStatisticsPlot has nothing to plot: enable report_data or '
                             'report_grad, and plot_mean, plot_std or percentile_sigmas')
        self.trigger = trigger
        self._size = max_sample_size
        self._filename = filename
        self._figsize = figsize
        self._marker = marker
        self._grid = grid
        self._generator = torch.Generator().manual_seed(seed)
        self._records: List[Dict[str, Any]] = []  # per trigger: iteration, 'data/mean', ...

    @property
    def history(self) -> Dict[str, Any]:
        """The statistics so far as arrays, one row per trigger.

        ``{'iteration': (T,), 'data': {'mean': (T,), 'std': (T,), 'percentile': (T, P)},
        'grad': {...}}`` for the kinds and statistics enabled; a statistic not
        recorded (e.g. enabled after a resume) is NaN.
        """
        n, p = len(self._records), len(self._sigmas)
        out: Dict[str, Any] = {'iteration': np.array([r['iteration'] for r in self._records])}
        for key in self._keys:
            out[key] = {}
            for stat in self._stats:
                blank = [math.nan] * p if stat == 'percentile' else math.nan
                values = [r.get(f'{key}/{stat}', blank) for r in self._records]
                out[key][stat] = np.array(values, dtype=np.float64).reshape(
                    (n, p) if stat == 'percentile' else (n,))
        return out

    def __call__(self, trainer) -> None:
        params = _unpack(self._targets)
        grads = [p.grad for p in params]
        record: Dict[str, Any] = {'iteration': trainer.updater.iteration}
        for key, tensors in (('data', params), ('grad', [g for g in grads if g is not None])):
            if key in self._keys:
                x = sample_values(tensors, self._size, self._generator).numpy() if tensors \
                    else np.full(1, math.nan)
                every = {'mean': lambda: float(x.mean()), 'std': lambda: float(x.std()),
                         'percentile': lambda: np.percentile(x, self._sigmas).tolist()}
                record.update({f'{key}/{stat}': every[stat]() for stat in self._stats})
        self._records.append(record)
        self._draw(os.path.join(trainer.out, self._filename))

    def _draw(self, path: str) -> None:
        history, stats = self.history, self._stats
        top = 'mean' in stats or 'std' in stats
        rows = int(top) + int('percentile' in stats)
        figure = new_figure(self._figsize)
        axes = figure.subplots(rows, len(self._keys), sharex=True, squeeze=False)
        x = history['iteration']
        for col, key in enumerate(self._keys):
            values = history[key]
            axes[0, col].set_title(key)
            if 'mean' in stats and 'std' in stats:
                axes[0, col].errorbar(x, values['mean'], values['std'], color=_COLOR,
                                      ecolor=_LIGHT, label='mean, std', marker=self._marker)
            elif top:
                stat = 'mean' if 'mean' in stats else 'std'
                axes[0, col].plot(x, values[stat], color=_COLOR, label=stat, marker=self._marker)
            if 'percentile' in stats:
                self._draw_percentiles(axes[-1, col], x, values['percentile'])
            axes[-1, col].set_xlabel('iteration')
        for ax in axes.ravel():
            ax.legend()
            if self._grid:
                ax.grid()
                ax.set_axisbelow(True)
        save_png(figure, path)

    def _draw_percentiles(self, ax: Any, x: np.ndarray, p: np.ndarray) -> None:
        """Nested bands between the i-th lowest and highest percentiles; the median as a line."""
        n = p.shape[1]
        for i in range(n // 2):
            ax.fill_between(x, p[:, i], p[:, n - 1 - i], color=_LIGHT, linewidth=0,
                            label='percentile' if i == 0 else '_nolegend_')
        if n % 2:
            ax.plot(x, p[:, n // 2], color=_COLOR, marker=self._marker,
                    label='percentile' if n == 1 else '_nolegend_')

    def state_dict(self) -> dict:
        return {'records': [dict(r) for r in self._records],
                'generator': self._generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self._records = [dict(r) for r in state['records']]
        self._generator.set_state(state['generator'])
