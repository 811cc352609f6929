"""Extensions and the figure of the ``sbn`` recipe: held-out bound, gradient variance, plot.

Both extensions draw their random units from fixed seeds, apart from the training
stream (the held-out bound from its own ``torch.Generator``, the variance under a
forked global RNG), so a resumed run logs the same numbers and trains the same.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Any, Dict, Iterator, Optional, Tuple

import torch

from trainerlib.extensions.plot_report import new_figure, require_matplotlib, save_png
from trainerlib.recipes._sbn_model import SBN, held_out
from trainerlib import reporter
from trainerlib.extension import PRIORITY_READER, PRIORITY_WRITER, make_extension

COLORS = {'none': 'tab:red', 'moving_average': 'tab:blue', 'learned': 'tab:green'}
NELBO = 'validation/main/nelbo'
GRAD_VAR = 'variance/grad_var'
GRAD_MEAN_SQ = 'variance/grad_mean_sq'


@contextlib.contextmanager
def fixed_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block with the global RNG (CPU, and ``device`` if CUDA) seeded with
    ``seed``; the previous states are restored afterwards."""
    cuda = device.type == 'cuda'
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def held_out_extension(model: SBN, x: torch.Tensor, seed: int, samples: int) -> Any:
    """Reports ``validation/main/nelbo``: the held-out −ELBO (nats per image) each epoch."""
    @make_extension(trigger=(1, 'epoch'), priority=PRIORITY_WRITER, default_name='held_out')
    def held_out_bound(trainer: Any) -> None:
        reporter.report({NELBO: held_out(model, x, seed, samples)['nelbo']})
    return held_out_bound


def variance_extension(updater: Any, model: SBN, batch: Tuple[torch.Tensor, ...],
                       draws: int, seed: int, device: torch.device) -> Any:
    """Reports the likelihood-ratio gradient's variance on a fixed training batch.

    ``variance/grad_var``: the mean over the inference net's parameters of the variance
    of ``draws`` independent estimates (each as one training step computes it: the
    batch, ``samples`` draws, this variant's baseline in its current state);
    ``variance/grad_mean_sq``: the mean of the squared mean estimate (the signal)."""
    @make_extension(trigger=(1, 'epoch'), priority=PRIORITY_WRITER, default_name='variance')
    def gradient_variance(trainer: Any) -> None:
        with fixed_rng(seed, device), reporter.report_scope({}):   # the model's own reports
            g = updater.gradient_estimates(batch, draws, model.inference_parameters())
        reporter.report({GRAD_VAR: g.var(0).mean().item(),
                         GRAD_MEAN_SQ: (g.mean(0) ** 2).mean().item()})
    return gradient_variance


def progress_extension(log_report: Any, trigger: Any) -> Any:
    """Prints the newest log entry (epoch, train loss, held-out −ELBO, variance)."""
    @make_extension(trigger=trigger, priority=PRIORITY_READER - 1, default_name='progress')
    def progress(trainer: Any) -> None:
        if not log_report.log:
            return
        e = log_report.log[-1]
        var = f"{e[GRAD_VAR]:10.3g}" if GRAD_VAR in e else f"{'':>10}"
        print(f"{e['epoch']:>6} {e.get('main/loss', float('nan')):>12.2f} "
              f"{e.get(NELBO, float('nan')):>11.2f} {var} {e['elapsed_time']:>8.1f}",
              file=sys.stdout, flush=True)
    return progress


PROGRESS_HEADER = f"{'epoch':>6}{'train -ELBO':>13}{'held-out':>12}{'grad var':>11}{'time s':>9}"


def plot(variants: Dict[str, Dict[str, Any]], reference: float, path: str,
         title: Optional[str] = None) -> None:
    """Held-out −ELBO per epoch (left) and the gradient variance (right, log scale)."""
    require_matplotlib('sbn')
    figure = new_figure(figsize=(12, 4.5))
    bound_ax, var_ax = figure.subplots(1, 2)
    for name, v in variants.items():
        color = COLORS.get(name, 'k')
        if v['curve']:
            epochs, values = zip(*v['curve'])
            bound_ax.plot(epochs, values, color=color, label=f"{name} ({values[-1]:.1f})")
        positive = [c for c in v['variance_curve'] if c[1] > 0]   # log scale
        if positive:
            epochs, values = zip(*positive)
            var_ax.plot(epochs, values, color=color, marker='o', label=name)
    bound_ax.axhline(reference, color='gray', linestyle='--', linewidth=1,
                     label=f'independent Bernoulli ({reference:.1f})')
    low = min([reference] + [c[1] for v in variants.values() for c in v['curve']])
    bound_ax.set(xlabel='epoch', ylabel='held-out -ELBO (nats per image)',
                 ylim=(low - 5, reference + 25), title='Held-out bound (lower is better)')
    var_ax.set(xlabel='epoch', ylabel='mean variance of the gradient estimate',
               yscale='log', title='Inference-net gradient variance (fixed batch)')
    for ax in (bound_ax, var_ax):
        ax.grid(True, which='both', alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize='small')
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    save_png(figure, path, dpi=100)
