"""Every RNG a run uses is captured and restored, through a snapshot file."""
import random

import numpy as np
import pytest
import torch

from trainerlib.rng import get_rng_state, set_rng_state
from trainerlib.serialization import load_state, save_state


def draws():
    return (torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)],
            random.gauss(0, 1))


@pytest.mark.parametrize('legacy_python_state', [False, True])
def test_rng_state_roundtrip_through_a_snapshot(tmp_path, legacy_python_state):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    random.gauss(0, 1)                         # leaves a cached gauss value in the state
    state = get_rng_state()
    if legacy_python_state:                    # snapshots made before the tensor format
        state['python']['internal'] = state['python']['internal'].tolist()
    save_state(state, str(tmp_path / 's'))
    expected = draws()
    draws()                                    # move every generator on
    set_rng_state(load_state(str(tmp_path / 's')))
    assert draws() == expected


def test_python_state_is_one_tensor():
    internal = get_rng_state()['python']['internal']
    assert isinstance(internal, torch.Tensor) and internal.dtype == torch.int64
    assert tuple(internal.tolist()) == random.getstate()[1]
