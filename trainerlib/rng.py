"""Capture and restore every random number generator a training run uses.

States are converted to tensors, ints and lists so that they load with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import random
from typing import Any, Dict

import numpy as np
import torch


def get_rng_state() -> Dict[str, Any]:
    """torch (CPU and every CUDA device), numpy's global and Python's ``random`` states."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    return {
        'torch': torch.get_rng_state(),
        'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        'numpy': {'kind': kind, 'keys': torch.from_numpy(keys.astype(np.int64)), 'pos': int(pos),
                  'has_gauss': int(has_gauss), 'gauss': float(gauss)},
        # one int64 tensor, not 625 ints: a snapshot pickles (and checks) it as one object
        'python': {'version': version,
                   'internal': torch.from_numpy(np.array(internal, dtype=np.int64)),
                   'gauss': py_gauss},
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore states captured by :func:`get_rng_state`."""
    torch.set_rng_state(state['torch'])
    if state.get('cuda') and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    n = state['numpy']
    np.random.set_state((n['kind'], n['keys'].numpy().astype(np.uint32), n['pos'],
                         n['has_gauss'], n['gauss']))
    p = state['python']
    internal = p['internal']   # a list of ints in snapshots made before 2026-11-25
    internal = internal.tolist() if isinstance(internal, torch.Tensor) else internal
    random.setstate((p['version'], tuple(internal), p['gauss']))
