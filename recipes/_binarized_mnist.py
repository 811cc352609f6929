"""Binarized digit images for the stochastic-network recipes (``vae``, ``sbn``).

The recipes' split convention (as ``recipes.classify``): the shipped MNIST test set,
``test_fraction`` 0.2 held out with ``split_seed`` 0, i.e. 8,000 / 2,000 images. Pixels
are binarized by a fixed threshold (deterministic: a resumed run sees the same data).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch

from trainerlib.datasets import TupleDataset, get_dataset, split_dataset_random
from trainerlib.errors import TrainerlibError

DATA_DEFAULTS: Dict[str, Any] = {
    'root': None,          # folder holding mnist/ files; None: the copy shipped with trainerlib
    'test_fraction': 0.2,  # 8000 train / 2000 held out
    'split_seed': 0,
    'threshold': 0.5,      # a pixel is 1 when its intensity exceeds this
}


def binarized_split(name: str = 'mnist-test', root: Optional[str] = None,
                    test_fraction: float = 0.2, split_seed: int = 0,
                    threshold: float = 0.5) -> Tuple[TupleDataset, TupleDataset]:
    """``(train, test)`` of ``(x, label)``: ``x`` float32 ``(784,)`` of 0/1, label int64.

    Raises:
        TrainerlibError: the data cannot be loaded (the file and the fix are named).
    """
    try:
        dataset = get_dataset(name, root=root, flatten=True)
    except (ImportError, ValueError) as e:
        raise TrainerlibError(f'dataset {name!r}: {e}') from None
    n_test = max(1, round(len(dataset) * test_fraction))
    parts = split_dataset_random(dataset, len(dataset) - n_test, seed=split_seed)
    out = []
    for what, part in zip(('training', 'held-out'), parts):
        if len(part) == 0:
            raise TrainerlibError(f"config key 'data.test_fraction' ({test_fraction}) leaves no "
                                  f'{what} image of the {len(dataset)} in {name!r}; use a value '
                                  'in (0, 1) such as 0.2')
        x, y = zip(*(part[i] for i in range(len(part))))
        x = (torch.stack(x) > threshold).to(torch.float32)
        out.append(TupleDataset(x, torch.stack([torch.as_tensor(t) for t in y])))
    return out[0], out[1]


def independent_bernoulli_nats(train_x: torch.Tensor, test_x: torch.Tensor,
                               prior: float = 1.0) -> float:
    """Held-out −log-likelihood (nats per image) of the per-pixel independent Bernoulli
    model fitted on ``train_x`` (with ``prior`` pseudo-counts of 0 and of 1): the
    reference every latent-variable model must beat."""
    n = len(train_x)
    p = (train_x.sum(0) + prior) / (n + 2 * prior)
    log_lik = test_x * torch.log(p) + (1 - test_x) * torch.log1p(-p)
    return float(-log_lik.sum(1).mean())

