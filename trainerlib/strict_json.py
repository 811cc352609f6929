"""Strict JSON: NaN and infinities become ``null`` plus a field that says why.

``json.dumps`` writes ``NaN`` / ``Infinity`` by default, which is not JSON (most
readers refuse it). :func:`strict` replaces every non-finite float with ``None`` and
returns where each one was, so a file can say so in a ``non_finite`` field::

    >>> strict({'loss': float('nan'), 'acc': [0.5, float('inf')]})
    ({'loss': None, 'acc': [0.5, None]}, {'loss': 'nan', 'acc.1': 'inf'})
"""
from __future__ import annotations

import math
from typing import Any, Dict, Tuple

NON_FINITE_KEY = 'non_finite'
"""The field that lists, for each value written as ``null``, what it was."""


def _name(value: float) -> str:
    return 'nan' if math.isnan(value) else 'inf' if value > 0 else '-inf'


def strict(obj: Any, sep: str = '.') -> Tuple[Any, Dict[str, str]]:
    """``(copy of obj with non-finite floats as None, {path: 'nan' | 'inf' | '-inf'})``.

    Paths join dict keys and list indices with ``sep``. Containers are copied only
    where they hold a non-finite value; everything else is returned as is.
    """
    found: Dict[str, str] = {}
    return _clean(obj, '', sep, found), found


def _clean(obj: Any, path: str, sep: str, found: Dict[str, str]) -> Any:
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        found[path] = _name(obj)
        return None
    if isinstance(obj, dict):
        return {k: _clean(v, f'{path}{sep}{k}' if path else str(k), sep, found)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v, f'{path}{sep}{i}' if path else str(i), sep, found)
                for i, v in enumerate(obj)]
    return obj


def strict_record(record: Dict[str, Any], sep: str = '.') -> Dict[str, Any]:
    """``record`` with non-finite floats as ``None`` and, if there were any, a
    ``non_finite`` field mapping each one's path to ``'nan'``, ``'inf'`` or ``'-inf'``."""
    clean, found = strict(record, sep)
    if found:
        clean[NON_FINITE_KEY] = found
    return clean
