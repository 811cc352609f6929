"""ParameterStatistics: statistics of parameters and gradients, computed on the device."""
from __future__ import annotations

import functools
import math
from types import MappingProxyType
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from trainerlib import reporter
from trainerlib._state import guess_previous, load_into, state_of
from trainerlib.extension import PRIORITY_WRITER, Extension, TriggerLike
from trainerlib.triggers import get_trigger

Statistic = Callable[[torch.Tensor], Any]   # a tensor, a float, a NumPy value …
Modules = Union[torch.nn.Module, Sequence[torch.nn.Module], Mapping[str, torch.nn.Module]]

PERCENTILES = (0.13, 2.28, 15.87, 50.0, 84.13, 97.72, 99.87)
"""Chainer's percentiles: the median and the ±1, 2, 3 sigma points of a normal law."""


@functools.lru_cache(maxsize=256)
def _interpolation(n: int, qs: Tuple[float, ...], device: torch.device):
    pos = torch.tensor(qs, dtype=torch.float64) * ((n - 1) / 100)
    lo = pos.floor()
    return lo.long().to(device), pos.ceil().long().to(device), (pos - lo).to(device)


def percentile(x: torch.Tensor, qs: Sequence[float] = PERCENTILES) -> torch.Tensor:
    """Percentiles ``qs`` (in %) of a 1-D tensor, as ``numpy.percentile`` (linear); no sync."""
    lo, hi, frac = _interpolation(x.numel(), tuple(qs), x.device)
    ordered = x.sort().values
    low = ordered[lo]
    return low + (ordered[hi] - low) * frac


DEFAULT_STATISTICS: Mapping[str, Statistic] = MappingProxyType({
    'mean': torch.mean,
    'std': functools.partial(torch.std, correction=0),   # population std, as numpy
    'min': torch.amin,
    'max': torch.amax,
    'zeros': lambda x: (x == 0).sum(),
    'percentile': percentile,
})


def named_parameters(modules: Modules, trainer) -> List[Tuple[str, torch.nn.Parameter]]:
    """``('main/predictor/0/weight', parameter)`` pairs of ``modules``.

    A module is named by its dict key, else by its name in the updater's models
    (``'main'``, or ``'main/predictor'`` for a submodule), else by its class.
    """
    names: Dict[int, str] = {}
    for name, model in trainer.updater.get_all_models().items():
        for sub, module in model.named_modules():
            names.setdefault(id(module), f"{name}/{sub.replace('.', '/')}" if sub else name)
    if isinstance(modules, torch.nn.Module):
        modules = [modules]
    pairs = modules.items() if isinstance(modules, Mapping) else [(None, m) for m in modules]
    return [(f"{name or names.get(id(m)) or type(m).__name__}/{p_name.replace('.', '/')}", p)
            for name, m in pairs for p_name, p in m.named_parameters()]


class ParameterStatistics(Extension):
    """Reports statistics of parameters (``data``) and gradients (``grad``), as Chainer's.

    Each call computes every statistic of every parameter on its device and adds
    it to running sums (no host-device sync, nothing converted); when ``trigger``
    fires, the means over the calls are reported as 0-d tensors, converted by the
    LogReport only when it writes an entry. Keys are
    ``<prefix>/<module path>/<param>/<data|grad>/<statistic>``, e.g.
    ``main/predictor/0/weight/data/mean``; multi-valued statistics get ``/0``,
    ``/1`` … (``percentile/0`` … ``percentile/6``). The extension runs every
    iteration by default: give ``extend`` a sparser trigger to sample less often.

    With ``skip_nan_params``, a call on a tensor holding a NaN counts, as in
    Chainer, as one NaN under each statistic's plain key (``…/data/percentile``,
    no ``/0`` … ``/6``); the other calls of the period give the usual keys, their
    means over those calls only. A single-valued statistic's mean is then NaN.
    The statistics are still computed on the device (their values discarded), so
    that no call syncs; the report syncs once (the NaN counts) when some statistic
    is multi-valued, as the keys depend on them.

    Gradients are read from ``param.grad`` after the update (the standard
    updater clears them before the forward, so they are this iteration's).

    Args:
        links: an ``nn.Module``, a list of them, or a dict ``name -> module``.
        statistics: ``'default'`` (mean, std, min, max, zeros (count), percentile)
            or a dict ``name -> fn(1-D tensor)`` returning a tensor or a number
            (a Python float syncs inside ``fn``; a tensor does not).
        report_params: report statistics of the parameter values (default True).
        report_grads: report statistics of the gradients (default True).
        prefix: optional first component of every key.
        trigger: when to report the means, default ``(1, 'epoch')``.
        skip_nan_params: report a NaN for every statistic of a tensor holding a
            NaN (see above), default False.
    """

    default_name = 'parameter_statistics'
    priority = PRIORITY_WRITER

    def __init__(self, links: Modules, statistics: Union[str, Mapping[str, Statistic]] = 'default',
                 report_params: bool = True, report_grads: bool = True,
                 prefix: Optional[str] = None, trigger: TriggerLike = (1, 'epoch'),
                 skip_nan_params: bool = False) -> None:
        self._links = links
        self._statistics = dict(DEFAULT_STATISTICS if statistics == 'default' else statistics or {})
        self._attrs = [a for a, on in (('data', report_params), ('grad', report_grads)) if on]
        self._prefix = prefix + '/' if prefix else ''
        self._trigger = get_trigger(trigger)
        self._skip_nan = skip_nan_params
        self._plan: Optional[List[Tuple[str, torch.nn.Parameter, str]]] = None
        self._sums: Dict[str, torch.Tensor] = {}      # group -> sum of the statistics vectors
        self._counts: Dict[str, int] = {}
        self._nans: Dict[str, torch.Tensor] = {}      # group -> calls on a NaN tensor (device)
        self._layout: Dict[str, List[Tuple[str, int]]] = {}   # group -> (statistic, size)

    def register_statistics(self, name: str, function: Statistic) -> None:
        """Add a statistic ``function(1-D tensor)`` (resets the running sums)."""
        self._statistics[name] = function
        self._sums, self._counts, self._nans, self._layout = {}, {}, {}, {}

    def initialize(self, trainer) -> None:
        if self._plan is None:
            self._setup(trainer)

    def _setup(self, trainer) -> None:
        pairs = [(path, p) for path, p in named_parameters(self._links, trainer) if p.numel()]
        self._plan = [(f'{self._prefix}{path}/{attr}', p, attr)
                      for path, p in pairs for attr in self._attrs]

    @torch.no_grad()
    def __call__(self, trainer) -> None:
        if self._plan is None:
            self._setup(trainer)
        sums, counts, nans = self._sums, self._counts, self._nans
        for group, param, attr in self._plan:
            x = param if attr == 'data' else param.grad
            if x is None:
                continue
            x = x.reshape(-1)
            values = self._compute(group, x)
            if self._skip_nan:
                bad = x.isnan().any()
                values = values.masked_fill(bad, 0.0)
                nans[group] = bad.double() if group not in nans else nans[group] + bad
            total = sums.get(group)
            sums[group] = values if total is None else total.to(values.device) + values
            counts[group] = counts.get(group, 0) + 1
        if self._trigger(trainer):
            report = self._means()
            self._sums, self._counts, self._nans = {}, {}, {}
            reporter.report(report)

    def _compute(self, group: str, x: torch.Tensor) -> torch.Tensor:
        """The statistics of ``x`` as one float64 vector (on ``x``'s device)."""
        if not x.is_floating_point() or x.element_size() < 4:
            x = x.float()
        outs = [torch.as_tensor(fn(x), dtype=torch.float64, device=x.device).reshape(-1)
                for fn in self._statistics.values()]
        if group not in self._layout:   # built once: no per-iteration string formatting
            self._layout[group] = [(name, out.numel()) for name, out in zip(self._statistics, outs)]
        return torch.cat(outs)

    def _means(self) -> Dict[str, torch.Tensor]:
        """The report of the period: ``key -> 0-d tensor``, keys as Chainer's."""
        nan_calls: Dict[str, float] = {}
        if self._nans and any(n > 1 for g in self._nans for _, n in self._layout[g]):
            groups = list(self._nans)   # one sync: the keys depend on these counts
            device = self._nans[groups[0]].device
            nan_calls = dict(zip(groups, torch.stack([self._nans[g].to(device)
                                                      for g in groups]).tolist()))
        report: Dict[str, torch.Tensor] = {}
        for group, total in self._sums.items():
            count, bad = self._counts[group], self._nans.get(group)
            means = (total / count if bad is None
                     else total / (count - bad.to(total.device)).clamp_min(1))
            parts = means.split([n for _, n in self._layout[group]])
            for (name, n), part in zip(self._layout[group], parts):
                key = f'{group}/{name}'
                if n == 1:
                    report[key] = part[0] if bad is None else part[0].where(bad == 0, math.nan)
                    continue
                if nan_calls.get(group, 0):
                    report[key] = torch.tensor(math.nan, dtype=torch.float64)
                if nan_calls.get(group, 0) < count:
                    report.update((f'{key}/{i}', v) for i, v in enumerate(part.unbind()))
        return report

    def _keys(self, group: str) -> List[str]:
        return [f'{group}/{name}' if n == 1 else f'{group}/{name}/{i}'
                for name, n in self._layout[group] for i in range(n)]

    def guess_previous(self) -> None:
        """Its trigger guesses its previous position (the snapshot being resumed has
        no state for this extension: see IntervalTrigger.guess_previous)."""
        guess_previous(self._trigger)

    def state_dict(self) -> dict:
        state = {'sums': {g: t.cpu() for g, t in self._sums.items()},
                 'counts': dict(self._counts),
                 'keys': {g: self._keys(g) for g in self._sums},
                 'trigger': state_of(self._trigger)}
        if self._nans:
            state['nans'] = {g: t.cpu() for g, t in self._nans.items()}
        return state

    def load_state_dict(self, state: dict) -> None:
        self._sums, self._counts = dict(state['sums']), dict(state['counts'])
        self._nans = dict(state.get('nans', {}))
        for group, keys in state['keys'].items():   # the layout, back from the key list
            keys = set(keys)
            self._layout[group] = [
                (name, 1 if f'{group}/{name}' in keys else
                 sum(1 for k in keys if k.rpartition('/')[0] == f'{group}/{name}'))
                for name in self._statistics]
        load_into(self._trigger, state['trigger'])
