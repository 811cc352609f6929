"""One step of a net with sampling inside: k draws, a likelihood-ratio surrogate, baselines."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch

from trainerlib import reporter
from trainerlib.convert import DeviceLike, concat_examples
from trainerlib.stochastic.baselines import MovingAverageBaseline
from trainerlib.stochastic.score_function import Sampled, score_function_surrogate
from trainerlib.updaters.standard_updater import StandardUpdater, call_with

BASELINES = ('none', 'moving_average', 'learned')


class StochasticUpdater(StandardUpdater):
    """Trains a model that samples: its step is ``E_z[f(z)]`` estimated from ``samples`` draws.

    The model is called on the batch repeated ``samples`` times (each row one draw)
    and returns :class:`~trainerlib.stochastic.Sampled`: the per-row loss ``f(z)``
    and, for units the gradient cannot pass, ``log q(z | x)``. The updater then
    minimises the mean of

    * ``f(z)`` when every sample is reparameterized (``log_prob`` None): the
      pathwise gradient;
    * ``f(z) + (f(z) − b) · log q(z)`` otherwise (:func:`score_function_surrogate`),
      with ``b`` the baseline: ``'none'`` (0), ``'moving_average'`` (of earlier
      steps' losses, saved in snapshots) or ``'learned'``: the moving average plus
      ``baseline_net(x)``, a net fitted to the remaining signal by squared error in
      the same step (NVIL, Mnih & Gregor 2014).

    Why this shape: a stochastic model only has to say what it sampled and what it
    cost; the estimator, the baseline and its state are the updater's, so the same
    model trains with either estimator and every variant resumes exactly. AMP,
    gradient accumulation, clipping and DDP come from :class:`StandardUpdater`.

    Reports (prefixed ``main/``): ``loss`` (mean ``f``), ``baseline`` (mean ``b``) and
    ``baseline_loss`` (the learned baseline's squared error), besides what the model
    reports itself (e.g. ``elbo``). :meth:`gradient_estimates` gives the estimator's
    draws on a fixed batch, for its mean and variance.

    Args:
        iterator, optimizer, converter, device: as :class:`StandardUpdater`.
        model: the stochastic model (trained, and its reports prefixed ``main/``).
        samples: draws per example per step (default 1).
        baseline: ``'none'``, ``'moving_average'`` (default) or ``'learned'``.
        baseline_net: for ``'learned'``: ``net(*inputs) -> (N,)``, e.g. an MLP on the
            input; its parameters must be in ``optimizer`` (e.g. a submodule of
            ``model``).
        decay: the moving average's decay (default 0.9).
        **kwargs: ``accumulate``, ``clip_grad_norm``, ``clip_grad_value``, ``amp``.
    """

    def __init__(self, iterator: Any, optimizer: Any, model: torch.nn.Module,
                 converter: Callable[..., Any] = concat_examples, device: DeviceLike = None, *,
                 samples: int = 1, baseline: str = 'moving_average',
                 baseline_net: Optional[Callable[..., torch.Tensor]] = None,
                 decay: float = 0.9, **kwargs: Any) -> None:
        if baseline not in BASELINES:
            raise ValueError(f'baseline must be one of {", ".join(BASELINES)}, got {baseline!r}')
        if (baseline == 'learned') != (baseline_net is not None):
            raise ValueError("baseline='learned' needs baseline_net= (and only it uses one)")
        if not isinstance(samples, int) or samples < 1:
            raise ValueError(f'samples must be an integer >= 1, got {samples!r}')
        super().__init__(iterator, optimizer, model, converter, device, **kwargs)
        self.samples = samples
        self.baseline = baseline
        self.baseline_net = baseline_net
        self.moving_average = MovingAverageBaseline(decay) if baseline != 'none' else None

    def _loss(self, batch: Any) -> torch.Tensor:
        inputs = _repeat(self.converter(batch, self.device), self.samples)
        surrogate, values = self.surrogate(inputs)
        reporter.report(values, self._models['main'])
        return surrogate

    def surrogate(self, inputs: Any, update_baseline: bool = True):
        """The scalar to minimise on ``inputs`` (already repeated) and what to report.

        Moves the moving average when ``update_baseline`` (the study of a fixed state
        passes False)."""
        out = call_with(self.ddp('main'), inputs)
        if not isinstance(out, Sampled):
            raise TypeError(f'a StochasticUpdater model must return trainerlib.stochastic.'
                            f'Sampled(loss, log_prob), got {type(out).__name__}')
        values: Dict[str, Any] = {'loss': out.loss.detach().mean()}
        if out.log_prob is None:             # all reparameterized: the pathwise gradient
            return out.loss.mean(), values
        signal = out.loss.detach()
        average = self.moving_average() if self.moving_average is not None else None
        baseline, extra = average, 0.0
        if self.baseline_net is not None:
            predicted = call_with(self.baseline_net, inputs).reshape(signal.shape)
            fitted = ((signal - average - predicted) ** 2).mean()
            baseline, extra = average + predicted.detach(), fitted
            values['baseline_loss'] = fitted.detach()
        if baseline is not None:
            values['baseline'] = baseline.mean()
        if update_baseline and self.moving_average is not None:
            self.moving_average.update(signal)
        return score_function_surrogate(out.loss, out.log_prob, baseline).mean() + extra, values

    def gradient_estimates(self, batch: Any, draws: int,
                           parameters: Optional[Any] = None) -> torch.Tensor:
        """``(draws, P)``: the flattened gradient estimate of ``draws`` independent steps
        on one fixed ``batch`` (``samples`` draws each), without stepping the optimizer
        or moving the baseline; the model's gradients are left cleared.

        Args:
            batch: a list of examples (as the iterator yields) or converted inputs.
            draws: the number of estimates.
            parameters: which parameters (default: all of the main model's).
        """
        inputs = _repeat(self.converter(batch, self.device) if isinstance(batch, list)
                         else batch, self.samples)
        params = [p for p in (parameters if parameters is not None
                              else self._models['main'].parameters()) if p.requires_grad]
        rows = []
        for _ in range(draws):
            surrogate, _ = self.surrogate(inputs, update_baseline=False)
            grads = torch.autograd.grad(surrogate, params, allow_unused=True)
            rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                                   for g, p in zip(grads, params)]))
        return torch.stack(rows)

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.moving_average is not None:
            state['baseline'] = self.moving_average.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self.moving_average is not None and 'baseline' in state:
            self.moving_average.load_state_dict(state['baseline'])


def _repeat(inputs: Any, samples: int) -> Any:
    """Each tensor of ``inputs`` repeated ``samples`` times along dim 0 (draw-major)."""
    if samples == 1:
        return inputs

    def rep(x: Any) -> Any:
        return x.repeat(samples, *([1] * (x.ndim - 1))) if isinstance(x, torch.Tensor) else x
    if isinstance(inputs, tuple):
        return tuple(rep(x) for x in inputs)
    if isinstance(inputs, dict):
        return {k: rep(v) for k, v in inputs.items()}
    return rep(inputs)
