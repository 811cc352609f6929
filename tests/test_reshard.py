"""Partial sums of the saved ranks merged on rank 0 when the world size changes."""
import math

import pytest
import torch

import extensions as E
from trainerlib.summary import DictSummary, Summary
from trainerlib.summary_reduce import (merge_dict_summary_states, merge_summary_states,
                                       reshard_summary_state)


def summary_state(values, weights=None):
    s = Summary()
    for i, v in enumerate(values):
        s.add(v, 1 if weights is None else weights[i])
    return s.state_dict()


def loaded(state, cls=Summary):
    s = cls()
    s.load_state_dict(state)
    return s


@pytest.mark.parametrize('parts, weights', [
    ([[1.0, 2.0], [3.0], []], None),
    ([[torch.tensor(1.5)], [2.5, 4.0]], None),
    ([[1.0, 5.0], [2.0]], [[1, 3], [2]]),
    ([[], []], None),
])
def test_merged_summary_equals_one_summary_of_every_value(parts, weights):
    states = [summary_state(p, None if weights is None else weights[i])
              for i, p in enumerate(parts)]
    merged = loaded(merge_summary_states(states))
    whole = Summary()
    for i, p in enumerate(parts):
        for j, v in enumerate(p):
            whole.add(v, 1 if weights is None else weights[i][j])
    if not len(whole):
        assert not len(merged)
        return
    assert merged.make_statistics() == pytest.approx(whole.make_statistics(), rel=1e-12)


def test_merged_dict_summary_takes_the_union_of_keys():
    a, b = DictSummary(), DictSummary()
    a.add({'loss': 1.0, 'acc': 0.5})
    b.add({'loss': 3.0})
    b.add({'loss': 5.0, 'lr': 0.1})
    merged = loaded(merge_dict_summary_states([a.state_dict(), b.state_dict()]), DictSummary)
    assert merged.compute_mean() == pytest.approx({'loss': 3.0, 'acc': 0.5, 'lr': 0.1})
    assert merge_dict_summary_states([]) == {}


@pytest.mark.parametrize('rank, mean', [(0, 2.0), (1, None), (2, None)])
def test_reshard_summary_state_merges_on_rank_0_only(rank, mean):
    a, b = DictSummary(), DictSummary()
    a.add({'loss': 1.0})
    b.add({'loss': 3.0})
    states = [{'log': [1], 'summary': a.state_dict()}, {'log': [2], 'summary': b.state_dict()}]
    state = reshard_summary_state(states if rank == 0 else states[:1], rank)
    assert state['log'] == [1]                       # the replicated parts: rank 0's
    summary = loaded(state['summary'], DictSummary)
    assert (summary.compute_mean() if mean is not None else len(summary)) == \
        ({'loss': mean} if mean is not None else 0)


@pytest.mark.parametrize('rank, expected', [(0, (7, 10)), (1, (0, 0))])
def test_micro_average_reshards_its_sums(rank, expected):
    ext = E.MicroAverage('main/correct', 'main/total', 'main/accuracy')
    states = [dict(ext.state_dict(), numerator=3, denominator=4),
              dict(ext.state_dict(), numerator=torch.tensor(4), denominator=6)]
    state = ext.reshard_state(states if rank == 0 else states[:1], rank)
    assert (int(state['numerator']), int(state['denominator'])) == expected
    ext.load_state_dict(state)                       # loads: save -> new object -> load


@pytest.mark.parametrize('name', ['LogReport', 'PlotReport'])
def test_summary_extensions_reshard_and_load(name, tmp_path):
    make = {'LogReport': lambda: E.LogReport(),
            'PlotReport': lambda: E.PlotReport(['main/loss'])}[name]
    saved = []
    for values in ([1.0, 2.0], [6.0]):
        ext = make()
        for v in values:
            ext._summary.add({'main/loss': v})
        saved.append(ext.state_dict())
    fresh = make()
    fresh.load_state_dict(fresh.reshard_state(saved, 0))
    assert fresh._summary.compute_mean() == {'main/loss': 3.0}
    other = make()
    other.load_state_dict(other.reshard_state(saved[:1], 1))
    assert len(other._summary) == 0
    assert math.isfinite(fresh._summary.make_statistics()['main/loss.std'])


def test_monitoring_lr_scheduler_reshards_its_partial_mean():
    def make():
        model = torch.nn.Linear(2, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        return E.LRScheduler(torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer),
                             monitor='validation/main/loss')
    saved = []
    for values in ([1.0, 2.0], [3.0, 6.0]):
        ext = make()
        for v in values:
            ext._summary.add(v)
        saved.append(ext.state_dict())
    fresh = make()
    fresh.load_state_dict(fresh.reshard_state(saved, 0))
    assert fresh._summary.compute_mean() == 3.0
    other = make()
    other.load_state_dict(other.reshard_state(saved[:1], 1))
    assert len(other._summary) == 0
