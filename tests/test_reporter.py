"""Tests of trainerlib.reporter and trainerlib.summary: prefixes, scopes, weighted statistics,
exact save/load, and no tensor-to-Python conversion before compute_mean."""
import io

import numpy as np
import pytest
import torch

import trainerlib.summary as summary_module
from trainerlib import Classifier, Trainer, reporter
from trainerlib.extension import make_extension
from trainerlib.iterators import SerialIterator
from trainerlib.reporter import Reporter, get_current_reporter, report, report_scope
from trainerlib.summary import FOLD_EVERY, DictSummary, Summary
from trainerlib.updaters import StandardUpdater


def roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def no_sync(monkeypatch):
    """Make every tensor -> Python conversion (a device sync on GPU) raise."""
    def forbidden(name):
        def fail(self, *args, **kwargs):
            raise AssertionError(f'Tensor.{name} called: this would synchronise with the device')
        return fail
    for name in ('item', '__float__', 'tolist', '__int__', '__bool__', 'cpu', 'numpy'):
        monkeypatch.setattr(torch.Tensor, name, forbidden(name))


# ---------------------------------------------------------------- Reporter

class Child(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.sub = torch.nn.Module()
        self.sub.child = Child()
        self.seq = torch.nn.Sequential(torch.nn.ReLU(), Child())


NET = Net()


@pytest.mark.parametrize('observer, key', [
    (NET, 'main/loss'),
    (NET.sub, 'main/sub/loss'),
    (NET.sub.child, 'main/sub/child/loss'),
    (NET.sub.child.lin, 'main/sub/child/lin/loss'),
    (NET.seq[1], 'main/seq/1/loss'),
    (NET.seq[1].lin, 'main/seq/1/lin/loss'),
    (None, 'loss'),
])
def test_add_module_prefixes(observer, key):
    r = Reporter()
    r.add_module('main', NET)
    observation = {}
    with r.scope(observation):
        report({'loss': 1.5}, observer)
    assert observation == {key: 1.5}


@pytest.mark.parametrize('register, key', [
    (lambda r, o: r.add_observer('main', o), 'main/acc'),
    (lambda r, o: r.add_observer('dis', o), 'dis/acc'),
    (lambda r, o: r.add_observers('validation/', [('main', o)]), 'validation/main/acc'),
    (lambda r, o: r.add_module('gen', o), 'gen/acc'),
])
def test_observer_prefixes(register, key):
    r, observer = Reporter(), torch.nn.Linear(1, 1)
    register(r, observer)
    observation = {}
    with r.scope(observation):
        r.report({'acc': 0.25}, observer)
    assert observation == {key: 0.25}


def test_unregistered_observer_is_a_helpful_key_error():
    r = Reporter()
    r.add_module('main', NET)
    with r.scope({}):
        with pytest.raises(KeyError, match=r'Linear.*not registered.*add_observer'):
            report({'loss': 1.0}, torch.nn.Linear(1, 1))


def test_report_outside_any_reporter_is_a_no_op():
    observation = {}
    with Reporter().scope(observation):
        pass
    report({'loss': 1.0})
    report({'loss': 1.0}, object())          # not even the observer is looked up
    assert observation == {}
    with pytest.raises(RuntimeError, match='no reporter is active'):
        get_current_reporter()
    with pytest.raises(RuntimeError, match='no reporter is active'):
        with report_scope({}):
            pass


def test_report_scope_nesting():
    r, other = Reporter(), Reporter()
    outer, inner, innermost, second = {}, {}, {}, {}
    with r.scope(outer):
        report({'a': 1})
        with report_scope(inner):
            report({'b': 2})
            with report_scope(innermost):
                report({'c': 3})
            report({'d': 4})
        with other.scope(second):
            assert get_current_reporter() is other
            report({'e': 5})
        assert get_current_reporter() is r
        report({'f': 6})
    assert (outer, inner, innermost, second) == ({'a': 1, 'f': 6}, {'b': 2, 'd': 4}, {'c': 3},
                                                 {'e': 5})
    assert r.observation == {}     # restored after the scope


def test_report_scope_restores_after_an_exception():
    r, outer = Reporter(), {}
    with r.scope(outer):
        with pytest.raises(ZeroDivisionError):
            with report_scope({}):
                1 / 0
        report({'x': 1})
    assert outer == {'x': 1}
    report({'y': 2})               # nothing active any more
    assert outer == {'x': 1}


def test_tensors_requiring_grad_are_detached_without_copy():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    loss = (w * w).sum()
    plain = torch.tensor(3.0)
    observation = {}
    with Reporter().scope(observation):
        report({'loss': loss, 'plain': plain, 'n': 4})
    assert not observation['loss'].requires_grad
    assert observation['loss'].data_ptr() == loss.data_ptr()
    assert observation['plain'] is plain and observation['n'] == 4
    loss.backward()                # the graph is still usable by the caller
    assert w.grad.tolist() == [2.0, 4.0]


# ---------------------------------------------------------------- Summary / DictSummary

def expected_stats(values, weights):
    x = np.array([float(v) for v in values], dtype=np.float64)
    w = np.array([float(v) for v in weights], dtype=np.float64)
    mean = np.average(x, weights=w)
    return mean, np.sqrt(np.average((x - mean) ** 2, weights=w))


RNG = np.random.RandomState(0)
FLOATS = list(RNG.uniform(-3, 3, 17))


@pytest.mark.parametrize('values, weights', [
    ([0.1, 0.2, 0.7], None),
    ([1 / 3, 2 / 3, 1e-3, 7.25], [1, 0.5, 2, 3]),
    (FLOATS, None),
    ([float(v) for v in FLOATS], list(RNG.uniform(0.1, 2, 17))),
    ([torch.tensor(v, dtype=torch.float32) for v in FLOATS], None),
    ([torch.tensor(v, dtype=torch.float64) for v in FLOATS], None),
    ([torch.tensor(v) for v in FLOATS], [torch.tensor(float(i + 1)) for i in range(17)]),
    ([0.1, torch.tensor(0.2), np.float32(0.3), 4, torch.tensor(5, dtype=torch.int64),
      torch.tensor(0.6, dtype=torch.float64), np.float64(0.7)], None),
    ([0.1, torch.tensor(0.2), np.float32(0.3), 4], [2, torch.tensor(0.5), 1, np.float64(1.5)]),
    ([5.0], None),
    ([2.0, 4.0], [0, 1]),
])
def test_summary_weighted_mean_and_std(values, weights):
    s = Summary()
    for i, v in enumerate(values):
        if weights is None:
            s.add(v)
        else:
            s.add(v, weights[i])
    mean, std = expected_stats(values, weights or [1] * len(values))
    assert isinstance(s.compute_mean(), float)
    assert s.compute_mean() == pytest.approx(mean, abs=1e-12, rel=1e-12)
    got_mean, got_std = s.make_statistics()
    assert got_mean == pytest.approx(mean, abs=1e-12, rel=1e-12)
    assert got_std == pytest.approx(std, abs=1e-12, rel=1e-12)


def test_summary_of_same_shape_tensors():
    s = Summary()
    rows = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    for row, w in zip(rows, [1.0, 2.0, 0.5, 1.0, 3.0]):
        s.add(row, w)
    expected = np.average(rows.double().numpy(), axis=0, weights=[1.0, 2.0, 0.5, 1.0, 3.0])
    mean = s.compute_mean()
    assert mean.dtype == torch.float64
    np.testing.assert_allclose(mean.numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize('weighted', [False, True])
def test_summary_more_values_than_fold_every(weighted):
    n = 2 * FOLD_EVERY + 37
    values = RNG.uniform(-1, 1, n)
    weights = RNG.uniform(0.5, 2, n) if weighted else np.ones(n)
    s = Summary()
    for i, (v, w) in enumerate(zip(values, weights)):
        v = torch.tensor(v, dtype=torch.float64) if i % 2 else float(v)
        s.add(v, float(w)) if weighted else s.add(v)
    mean, std = expected_stats(values, weights)
    assert s.compute_mean() == pytest.approx(mean, abs=1e-12)
    assert s.make_statistics()[1] == pytest.approx(std, abs=1e-12)
    assert len(s) == 1             # everything was folded into the running sums


@pytest.mark.parametrize('make', [Summary, DictSummary])
def test_empty_summary(make):
    s = make()
    if make is Summary:
        with pytest.raises(ValueError, match='empty'):
            s.compute_mean()
        with pytest.raises(ValueError, match='empty'):
            s.make_statistics()
    else:
        assert s.compute_mean() == {} and s.make_statistics() == {}
    assert len(s) == 0


def test_dict_summary_weights_and_non_scalars():
    d = DictSummary()
    d.add({'loss': 1.0, 'acc': (torch.tensor(0.5), 4), 'img': torch.zeros(2, 2),
           'vec': np.zeros(3), 'name': 'x', 'none': None, 'mask': torch.tensor(True)})
    d.add({'loss': torch.tensor(3.0), 'acc': (1.0, torch.tensor(1.0)), 'img': torch.ones(2, 2)})
    d.add({'loss': (np.float32(5.0), 2)})
    mean = d.compute_mean()
    assert set(mean) == {'loss', 'acc'}
    assert mean['loss'] == pytest.approx((1 + 3 + 10) / 4, abs=1e-12)
    assert mean['acc'] == pytest.approx((0.5 * 4 + 1) / 5, abs=1e-12)
    stats = d.make_statistics()
    assert set(stats) == {'loss', 'loss.std', 'acc', 'acc.std'}
    assert stats['loss.std'] == pytest.approx(expected_stats([1, 3, 5], [1, 1, 2])[1], abs=1e-12)


@pytest.mark.parametrize('n', [1, DictSummary.BATCH - 1, DictSummary.BATCH,
                               2 * DictSummary.BATCH + 3])
def test_dict_summary_keeps_what_was_added_not_the_dict(n):
    d, reused = DictSummary(), {}
    for i in range(n):
        reused['x'] = float(i)          # the caller reuses (mutates) one dict
        d.add(reused)
    reused['x'] = 1e9
    reused['late'] = 1.0
    assert d.compute_mean() == {'x': pytest.approx((n - 1) / 2, abs=1e-12)}
    assert len(d) == 1


@pytest.mark.parametrize('chunk', [1, 5, FOLD_EVERY - 1, FOLD_EVERY, FOLD_EVERY + 7, 3 * FOLD_EVERY])
def test_summary_extend_equals_adding_one_by_one(chunk):
    stream = [torch.tensor(float(v)) for v in RNG.uniform(-1, 1, 2 * FOLD_EVERY + 50)]
    one_by_one, extended = Summary(), Summary()
    for v in stream:
        one_by_one.add(v)
    for i in range(0, len(stream), chunk):
        extended.extend(stream[i:i + chunk])
    assert len(extended) == len(one_by_one)        # folded at the same counts
    assert extended.compute_mean() == one_by_one.compute_mean()
    assert extended.make_statistics() == one_by_one.make_statistics()


def test_dict_summary_keeps_the_order_of_plain_and_weighted_values():
    """Within a key, plain scalars, weighted pairs and skipped values are summarized in
    the order they were added (the sums are bit-identical to adding them one by one)."""
    values = [torch.tensor(0.1), (torch.tensor(0.7), 3), 2.5, torch.zeros(2), torch.tensor(1e-8),
              (1.5, 0.5), torch.tensor(3.25, dtype=torch.float64)]
    d = DictSummary()
    for v in values:
        d.add({'x': v})
    reference = Summary()
    for v in values:
        value, weight = v if isinstance(v, tuple) else (v, 1)
        if not (isinstance(value, torch.Tensor) and value.ndim):
            reference.add(value, weight)
    assert d.compute_mean() == {'x': reference.compute_mean()}
    assert d.make_statistics() == {'x': reference.make_statistics()[0],
                                   'x.std': reference.make_statistics()[1]}


@pytest.mark.parametrize('values, plain', [
    ([torch.tensor(1.0), torch.tensor(2.0, dtype=torch.float64)], True),
    ([1.0, 2.5], True),
    ([torch.tensor(1.0), 2.0], False),                  # mixed: checked one by one
    ([torch.tensor(1.0), torch.zeros(2)], False),       # not 0-d
    ([torch.tensor(True)], False),                      # boolean
    ([torch.tensor(3)], True),                          # an integer tensor is a scalar
    ([np.float64(1.0)], False),                         # numpy: checked one by one
    ([torch.nn.Parameter(torch.tensor(1.0))], False),   # a subclass: checked one by one
    ([1], False),                                       # int: checked one by one
])
def test_all_plain_scalars(values, plain):
    assert summary_module._all_plain_scalars(values) is plain
    if plain:   # what the check stands for
        assert all(summary_module._is_scalar(v) for v in values)


@pytest.mark.parametrize('values', [
    [torch.tensor(v, dtype=torch.float64) for v in (1e16, 1.0, -1e16, 3.0)],   # cancellation
    [torch.tensor(v) for v in np.random.RandomState(0).uniform(-3, 3, 50)],    # float32
    [0.1] * 10 + [1e-3, 7],                                                    # numbers
])
def test_log_line_mean_of_host_scalars_is_exactly_rounded(values):
    """0-d CPU tensors (or numbers), unit weights, nothing folded: the mean is the exactly
    rounded sum (math.fsum) over the count, whatever the order of the values."""
    import math
    expected = math.fsum(map(float, values)) / len(values)
    for order in (values, values[::-1]):
        s = Summary()
        for v in order:
            s.add(v)
        assert s.compute_mean() == expected


@pytest.mark.parametrize('values', [
    [torch.tensor(1.0, device='meta')],                    # off the CPU: not read on the host
    [torch.tensor(1.0), 2.0],                              # mixed kinds
    [torch.tensor([1.0])],                                 # not 0-d
    [np.float32(1.0)],
])
def test_host_scalar_sum_leaves_the_others_to_the_device(values):
    assert summary_module._host_scalar_sum(values) is None


def value_stream(kind, n):
    """``n`` (value, weight) pairs of one of several kinds."""
    g = np.random.RandomState(7)
    out = []
    for i in range(n):
        v = float(g.uniform(-2, 2))
        if kind == 'float':
            out.append((v, 1))
        elif kind == 'tensor32':
            out.append((torch.tensor(v), 1))
        elif kind == 'mixed':
            out.append((torch.tensor(v, dtype=torch.float64) if i % 3 else v, 1))
        else:   # weighted, weights switch from unit to non-unit mid-stream
            out.append((torch.tensor(v), 1 if i < n // 2 else float(g.uniform(0.1, 3))))
    return out


@pytest.mark.parametrize('kind', ['float', 'tensor32', 'mixed', 'weighted'])
def test_summary_resume_is_bit_identical(monkeypatch, kind):
    monkeypatch.setattr(summary_module, 'FOLD_EVERY', 8)
    stream = value_stream(kind, 30)

    def fill(s, pairs):
        for v, w in pairs:
            s.add(v, w)
        return s

    full = fill(Summary(), stream)
    for k in range(len(stream) + 1):   # k = 0, pending values, right after a fold (8, 16, 24)...
        first = fill(Summary(), stream[:k])
        resumed = Summary()
        resumed.load_state_dict(roundtrip(first.state_dict()))
        fill(resumed, stream[k:])
        assert resumed.compute_mean() == full.compute_mean(), f'saved after {k} values'
        assert resumed.make_statistics() == full.make_statistics(), f'saved after {k} values'


@pytest.mark.parametrize('save_at', [0, 5, FOLD_EVERY, FOLD_EVERY + 3])
def test_dict_summary_resume_is_bit_identical(save_at):
    g = np.random.RandomState(3)
    stream = [{'main/loss': torch.tensor(float(g.rand())), 'main/acc': (float(g.rand()), i % 4),
               'lr': 0.1 * (i % 5)} for i in range(FOLD_EVERY + 11)]
    full = DictSummary()
    for d in stream:
        full.add(d)
    first = DictSummary()
    for d in stream[:save_at]:
        first.add(d)
    resumed = DictSummary()
    resumed.load_state_dict(roundtrip(first.state_dict()))
    for d in stream[save_at:]:
        resumed.add(d)
    assert resumed.compute_mean() == full.compute_mean()
    assert resumed.make_statistics() == full.make_statistics()


# ---------------------------------------------------------------- no host-device sync

def test_add_and_report_never_convert_tensors(monkeypatch):
    n = FOLD_EVERY + 50                            # includes a fold
    values = torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    weights = torch.rand(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.5
    model = torch.nn.Linear(1, 1)
    s, ws, d, observations = Summary(), Summary(), DictSummary(), []
    r = Reporter()
    r.add_module('main', model)
    no_sync(monkeypatch)
    for i in range(n):
        loss = values[i] * model.weight.sum() / model.weight.sum().detach()  # requires grad
        observation = {}
        with r.scope(observation):
            report({'loss': loss, 'w': weights[i]}, model)
        observations.append(observation)
        s.add(observation['main/loss'])
        ws.add(observation['main/loss'], observation['main/w'])
        d.add({'loss': observation['main/loss'], 'wl': (values[i], weights[i]),
               'skipped': torch.zeros(3)})
    monkeypatch.undo()
    x, w = values.numpy(), weights.numpy()
    assert s.compute_mean() == pytest.approx(x.mean(), abs=1e-12)
    assert ws.compute_mean() == pytest.approx(np.average(x, weights=w), abs=1e-12)
    assert d.compute_mean() == pytest.approx({'loss': x.mean(), 'wl': np.average(x, weights=w)},
                                             abs=1e-12)


def test_no_sync_guard_is_effective(monkeypatch):
    s = Summary()
    s.add(torch.tensor(1.0))
    no_sync(monkeypatch)
    with pytest.raises(AssertionError, match='synchronise'):
        s.compute_mean()


# ---------------------------------------------------------------- with the real Trainer

class Predictor(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Linear(3, 4)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        h = self.body(x)
        reporter.report({'h_norm': h.norm()}, self.body)
        return self.head(torch.relu(h))


def test_trainer_reports_prefixed_detached_values(tmp_path, monkeypatch):
    torch.manual_seed(0)
    x = torch.randn(12, 3)
    t = (x[:, 0] > 0).long()
    model = Classifier(Predictor())
    updater = StandardUpdater(SerialIterator(torch.utils.data.TensorDataset(x, t), 4, seed=0),
                              torch.optim.SGD(model.parameters(), lr=0.1), model)
    trainer = Trainer(updater, (3, 'epoch'), out=str(tmp_path))
    seen, summary = [], DictSummary()

    @make_extension(trigger=(1, 'iteration'))
    def collect(tr):
        seen.append(dict(tr.observation))
        summary.add(tr.observation)

    trainer.extend(collect)
    no_sync(monkeypatch)           # the whole hot path: update, report, summary
    trainer.run()
    monkeypatch.undo()
    assert len(seen) == 9
    for obs in seen:
        assert set(obs) == {'main/loss', 'main/accuracy', 'main/predictor/body/h_norm'}
        assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in obs.values())
    losses = [float(obs['main/loss']) for obs in seen]
    assert summary.compute_mean()['main/loss'] == pytest.approx(np.mean(losses), abs=1e-12)
    assert all(0 <= float(obs['main/accuracy']) <= 1 for obs in seen)
