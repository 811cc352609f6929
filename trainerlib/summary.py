"""Weighted running statistics of reported values, reduced lazily.

``add`` only appends (tensors stay on their device, no sync); the values are
reduced in float64 when :meth:`Summary.compute_mean` is asked for, typically
once per log line. Every ``FOLD_EVERY`` values the pending list is folded into
device-side running sums (one kernel, still no sync) to bound memory.

Across ranks (data-parallel training) the state is additive: each rank keeps its own
(Σw·x, Σw·x², Σw) and :func:`trainerlib.summary_reduce.allreduce_summaries` (``DictSummary.allreduce``,
``Summary.allreduce``) sums them in one packed float64 all-reduce when a result is
needed, so every rank computes the mean a single process would over the union of all
ranks' values. With one process these return at once and nothing changes.
"""
from __future__ import annotations

import collections
import math
import numbers
import operator
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch

FOLD_EVERY = 1024


def _as_tensor(value: Any, like: Optional[torch.Tensor]) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value if like is None else value.to(like.device)
    # float64 directly: a Python float must not pass through float32 on the way
    return torch.as_tensor(value, dtype=torch.float64,
                           device=None if like is None else like.device)


def _stack(values: List[Any]) -> torch.Tensor:
    try:  # the usual case, tensors on one device: a single kernel
        stacked = torch.stack(values)
    except (TypeError, RuntimeError):  # numbers, or tensors on several devices
        like = next((v for v in values if isinstance(v, torch.Tensor)), None)
        stacked = torch.stack([_as_tensor(v, like) for v in values])
    return stacked.to(torch.float64)


def _stack_sum(values: List[Any]) -> torch.Tensor:
    """``_stack(values).sum(0)``: the float64 sum of the values, the cast done inside the
    sum (one kernel fewer, the same bits: the sum runs over the cast values either way)."""
    try:
        return torch.stack(values).sum(0, dtype=torch.float64)
    except (TypeError, RuntimeError):
        return _stack(values).sum(0)


def _is_scalar(value: Any) -> bool:
    if type(value) is torch.Tensor:  # the usual case first: it runs for every report
        return value.ndim == 0 and value.dtype is not torch.bool
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        return value.ndim == 0 and (value.dtype != torch.bool if isinstance(value, torch.Tensor)
                                    else value.dtype.kind in 'iuf')
    return isinstance(value, numbers.Real)


_NDIM, _DTYPE = operator.attrgetter('ndim'), operator.attrgetter('dtype')
_IS_CPU = operator.attrgetter('is_cpu')
_TENSORS, _FLOATS, _NUMBERS = {torch.Tensor}, {float}, {float, int}


def _host_scalar_sum(values: List[Any]) -> Optional[float]:
    """The float64 sum of ``values``, correctly rounded (``math.fsum``), when they are all
    0-d CPU tensors or all Python numbers: reading them waits for no device, and a
    log line's mean then costs no tensor operation. None otherwise (tensors on an
    accelerator, mixed kinds): the caller reduces them on their device."""
    types = set(map(type, values))
    if types == _TENSORS:
        if not all(map(_IS_CPU, values)) or any(map(_NDIM, values)):
            return None
    elif not types <= _NUMBERS:
        return None
    return math.fsum(map(float, values))


def _all_plain_scalars(values: List[Any]) -> bool:
    """Whether ``values`` are all floats or all 0-d non-boolean tensors (scalars that
    need no further check), checked with loops that run in C."""
    types = set(map(type, values))
    if types == _TENSORS:
        return not any(map(_NDIM, values)) and torch.bool not in set(map(_DTYPE, values))
    return types == _FLOATS


class Summary:
    """Weighted mean and standard deviation of a stream of scalars (or same-shape tensors)."""

    def __init__(self) -> None:
        self._values: List[Any] = []
        self._weights: List[Any] = []
        self._unit_weights = True
        self._x: Optional[torch.Tensor] = None    # folded sum(w * x), float64
        self._x2: Optional[torch.Tensor] = None   # folded sum(w * x * x)
        self._n: Optional[torch.Tensor] = None    # folded sum(w)

    def add(self, value: Any, weight: Any = 1) -> None:
        """Add ``value`` with ``weight`` (a number or a tensor). Cheap: appends only."""
        self._values.append(value)
        self._weights.append(weight)
        if self._unit_weights and (type(weight) is not int or weight != 1):
            self._unit_weights = False  # (a tensor weight is never compared: no sync)
        if len(self._values) >= FOLD_EVERY:
            self._fold()

    def extend(self, values: List[Any]) -> None:
        """Add ``values``, each with weight 1: as many :meth:`add` calls, folded at the
        same counts (so the sums are the same however the values were grouped)."""
        while values:
            room = FOLD_EVERY - len(self._values)
            head, values = values[:room], values[room:]
            self._values.extend(head)
            self._weights.extend([1] * len(head))
            if len(self._values) >= FOLD_EVERY:
                self._fold()

    def _pending(self, squares: bool = True) -> Tuple[torch.Tensor, Any, Any]:
        """``(sum w*x, sum w*x*x, sum w)`` of the pending values (the second only if
        ``squares``; the third a Python number for unit weights)."""
        if self._unit_weights and not squares:   # a log line's mean: the sum only
            return _stack_sum(self._values), None, float(len(self._values))
        x = _stack(self._values)
        if self._unit_weights:  # no weight tensor, no multiplications
            return x.sum(0), ((x * x).sum(0) if squares else None), float(len(self._values))
        w = _stack(self._weights).to(x.device)
        w = w.reshape((-1,) + (1,) * (x.dim() - 1))
        wx = w * x
        return wx.sum(0), ((wx * x).sum(0) if squares else None), w.sum(0)

    def _fold(self) -> None:
        x, x2, n = self._pending()
        if self._x is None:
            self._x, self._x2, self._n = x, x2, n
        else:
            dev = self._x.device
            self._x, self._x2, self._n = self._x + x.to(dev), self._x2 + x2.to(dev), \
                self._n + _to(n, dev)
        self._values, self._weights, self._unit_weights = [], [], True

    def _totals(self) -> Tuple[Any, Any, Any]:
        """``(sum w*x, sum w*x*x, sum w)`` of everything added, pending values included,
        without changing the summary (None for an empty one)."""
        if not self._values:
            return self._x, self._x2, self._n
        x, x2, n = self._pending()
        if self._x is not None:
            dev = self._x.device
            x, x2, n = self._x + x.to(dev), self._x2 + x2.to(dev), self._n + _to(n, dev)
        return x, x2, n

    @classmethod
    def _of_totals(cls, x: float, x2: float, n: float) -> 'Summary':
        summary = cls()
        summary._x, summary._x2, summary._n = (torch.tensor(v, dtype=torch.float64)
                                               for v in (x, x2, n))
        return summary

    def allreduce(self, comm: Any) -> 'Summary':
        """The summary of every rank's values together (scalars only): one all-reduce.

        Every rank must call it at the same point; a rank with nothing added takes
        part with zeros. The result is the same on every rank (empty when no rank added
        anything). With one process (``comm`` None or of size 1) it is ``self``.
        """
        if comm is None or getattr(comm, 'size', 1) <= 1:
            return self
        from trainerlib.summary_reduce import allreduce_summaries
        reduced, _ = allreduce_summaries({'': self}, comm, keys=('',))
        return reduced.get('', Summary())

    def _check_not_empty(self) -> None:
        if self._x is None and not self._values:
            raise ValueError('the summary is empty: nothing was added')

    def compute_mean(self) -> Any:
        """Weighted mean: a float for scalars, a float64 CPU tensor otherwise.

        Pending values are reduced without squaring them (a log line needs only
        the mean); the summary itself is left unchanged. Unit-weighted scalars not yet
        folded that are all on the CPU (or numbers) are summed on the host, exactly
        rounded (``math.fsum``); others in float64 on their device.
        """
        self._check_not_empty()
        if not self._values:
            return _to_python(self._x / self._n)
        if self._x is None and self._unit_weights:   # the usual log line
            total = _host_scalar_sum(self._values)
            if total is not None:
                return total / len(self._values)
        x, _, n = self._pending(squares=False)
        if self._x is not None:
            x, n = self._x + x.to(self._x.device), self._n + _to(n, self._x.device)
        if x.ndim == 0 and not isinstance(n, torch.Tensor):   # unit weights: n is a number
            return x.item() / n   # the same float64 division, without a device op
        return _to_python(x / n)

    def make_statistics(self) -> Tuple[Any, Any]:
        """``(mean, std)``, weighted, population standard deviation."""
        self._check_not_empty()
        if self._values:
            self._fold()
        x, x2, n = self._x, self._x2, self._n
        mean = x / n
        var = (x2 / n - mean * mean).clamp_min(0)
        return _to_python(mean), _to_python(var.sqrt())

    def __len__(self) -> int:
        return len(self._values) + (0 if self._x is None else 1)

    def state_dict(self) -> Dict[str, Any]:
        """Folded totals and the pending values as they are, so that a resumed
        run reduces exactly the same numbers in the same order."""
        pending = bool(self._values)
        return {'x': _cpu(self._x), 'x2': _cpu(self._x2), 'n': _cpu(self._n),
                'values': _stack(self._values).cpu() if pending else None,
                'weights': _stack(self._weights).cpu() if pending and not self._unit_weights
                else None}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self._x, self._x2, self._n = state['x'], state['x2'], state['n']
        values, weights = state.get('values'), state.get('weights')
        self._values = [] if values is None else list(values.unbind(0))
        self._unit_weights = weights is None
        self._weights = [1] * len(self._values) if weights is None else list(weights.unbind(0))


def _cpu(t: Any) -> Any:
    return t.detach().cpu() if isinstance(t, torch.Tensor) else t


def _to(n: Any, device: torch.device) -> Any:
    return n.to(device) if isinstance(n, torch.Tensor) else n


def _to_python(t: torch.Tensor) -> Any:
    t = t.cpu()
    return t.item() if t.dim() == 0 else t


def _columns(rows: List[Dict[str, Any]]) -> Dict[str, List[Any]]:
    """Key -> the values of ``rows`` under it, in row order; keys in first-seen order."""
    first = rows[0]
    size = len(first)
    if all(len(row) == size for row in rows):   # the usual case: every row has the same keys
        try:
            return {key: [row[key] for row in rows] for key in first}
        except KeyError:   # as many keys, not the same ones
            pass
    columns: Dict[str, List[Any]] = collections.defaultdict(list)
    for row in rows:
        for key, value in row.items():
            columns[key].append(value)
    return columns


class DictSummary:
    """A :class:`Summary` per key of added dicts; non-scalar values are skipped.

    A value may be given as ``(value, weight)`` to weight it. :meth:`add` only
    keeps a shallow copy of the dict; the dicts are sorted into the per-key
    summaries in batches of ``BATCH`` (or when a result or the state is asked for),
    so a non-scalar value is held at most that long.
    """

    BATCH = 32

    def __init__(self) -> None:
        self._summaries: Dict[str, Summary] = {}
        self._added: List[Dict[str, Any]] = []

    def add(self, d: Dict[str, Any]) -> None:
        added = self._added
        added.append(dict(d))
        if len(added) >= self.BATCH:
            self._absorb()

    def _absorb(self) -> None:
        added, self._added = self._added, []
        if not added:
            return
        columns = _columns(added)
        summaries = self._summaries
        for key, values in columns.items():
            if _all_plain_scalars(values):   # the usual case: no weights, no checks
                summary = summaries.get(key)
                if summary is None:
                    summary = summaries[key] = Summary()
                summary.extend(values)
                continue
            for value in values:
                weight = 1
                if isinstance(value, tuple):
                    value, weight = value
                if _is_scalar(value):
                    summary = summaries.get(key)
                    if summary is None:
                        summary = summaries[key] = Summary()
                    summary.add(value, weight)

    def compute_mean(self) -> Dict[str, Any]:
        self._absorb()
        return {k: s.compute_mean() for k, s in self._summaries.items()}

    def make_statistics(self) -> Dict[str, Any]:
        self._absorb()
        stats = {}
        for key, summary in self._summaries.items():
            mean, std = summary.make_statistics()
            stats[key] = mean
            stats[key + '.std'] = std
        return stats

    def __len__(self) -> int:
        self._absorb()
        return len(self._summaries)

    def allreduce(self, comm: Any, keys: Optional[Iterable[str]] = None) -> 'DictSummary':
        """A summary of every rank's values together, the same on every rank.

        Every rank must call it at the same point (it is a collective). ``keys``: the
        keys the caller reads, when it knows them (one all-reduce, keys that no rank
        reported are left out); else the union of the ranks' keys (an all-reduce of a
        small header, then one of the payload; an all-gather of the key lists only when
        they differ). With one process (``comm`` None or of size 1) it is ``self``: no
        work at all. See :func:`allreduce_summaries`.
        """
        if comm is None or getattr(comm, 'size', 1) <= 1:
            return self
        from trainerlib.summary_reduce import allreduce_dict_summary
        reduced, _ = allreduce_dict_summary(self, comm, keys)
        return reduced

    def state_dict(self) -> Dict[str, Any]:
        self._absorb()
        return {k: s.state_dict() for k, s in self._summaries.items()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self._summaries, self._added = {}, []
        for key, sub in state.items():
            self._summaries[key] = Summary()
            self._summaries[key].load_state_dict(sub)

