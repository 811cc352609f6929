"""MicroAverage: sum(n) / sum(d) over uneven batches, no sync, exact resume."""
import io

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

import extensions as E
from trainerlib import PRIORITY_EDITOR, Extension, Trainer, reporter
from trainerlib.iterators import SerialIterator
from trainerlib.updaters import StandardUpdater

SYNCS = ['item', '__float__', '__int__', '__bool__', 'tolist', 'cpu', 'numpy']
LABELS = torch.tensor([1, 0, -1, 1, 1, -1, -1, 0, 1, -1])   # -1: ignored, not counted


def make_trainer(out, stop, as_tensor=True, seed=0, batches=None):
    """10 examples in batches of 3: the denominators (non-ignored labels) differ."""
    torch.manual_seed(seed)
    x = torch.randn(10, 2, generator=torch.Generator().manual_seed(1))
    model = torch.nn.Linear(2, 2)

    def loss_func(x, t):
        y = model(x)
        correct, total = ((y.argmax(1) == t) & (t >= 0)).sum(), (t >= 0).sum()
        if batches is not None:
            batches.append((int(correct), int(total)))
        if not as_tensor:
            correct, total = int(correct), int(total)
        reporter.report({'main/correct': correct, 'main/total': total})
        return F.cross_entropy(y, t, ignore_index=-1)

    updater = StandardUpdater(SerialIterator(TensorDataset(x, LABELS), 3, seed=0),
                              torch.optim.SGD(model.parameters(), lr=0.5), model,
                              loss_func=loss_func)
    trainer = Trainer(updater, stop, out=str(out))
    trainer.extend(E.MicroAverage('main/correct', 'main/total', 'main/accuracy'))
    trainer.extend(E.LogReport(trigger=(1, 'epoch')))
    return trainer


@pytest.mark.parametrize('as_tensor', [True, False])
def test_value_is_the_ratio_of_the_sums_over_each_epoch(tmp_path, as_tensor):
    batches = []
    trainer = make_trainer(tmp_path, (3, 'epoch'), as_tensor, batches=batches)
    trainer.run()
    log = trainer.get_extension('LogReport').log
    assert [e['iteration'] for e in log] == [4, 7, 10]     # 10 examples / 3 per batch
    start, macro = 0, []
    for entry in log:
        period = batches[start:entry['iteration']]
        start = entry['iteration']
        expected = sum(c for c, _ in period) / sum(d for _, d in period)
        assert entry['main/accuracy'] == pytest.approx(expected, rel=1e-6)
        macro.append(sum(c / d for c, d in period) / len(period))
    assert len({d for _, d in batches}) > 1                  # uneven denominators ...
    assert any(abs(m - e['main/accuracy']) > 1e-3 for m, e in zip(macro, log))  # ... matter


def test_reports_a_tensor_without_syncing(tmp_path):
    class Guarded(Extension):
        priority = PRIORITY_EDITOR

        def __init__(self, inner):
            self.inner = inner

        def __call__(self, trainer):
            with pytest.MonkeyPatch.context() as patch:
                for name in SYNCS:
                    patch.setattr(torch.Tensor, name, lambda *a, **k: pytest.fail('sync'))
                self.inner(trainer)

    seen = []
    trainer = make_trainer(tmp_path, (1, 'epoch'))
    trainer.extend(Guarded(E.MicroAverage('main/correct', 'main/total', 'main/micro')))
    trainer.extend(lambda tr: seen.append(tr.observation.get('main/micro')))
    trainer.run()
    assert seen[:3] == [None] * 3 and isinstance(seen[3], torch.Tensor)
    log = trainer.get_extension('LogReport').log
    assert log[0]['main/micro'] == pytest.approx(log[0]['main/accuracy'])


def test_missing_keys_are_skipped(tmp_path):
    trainer = make_trainer(tmp_path, (1, 'epoch'))
    trainer.extend(E.MicroAverage('main/correct', 'nowhere/total', 'main/never'))
    trainer.run()
    assert 'main/never' not in trainer.get_extension('LogReport').log[0]


@pytest.mark.parametrize('k', [2, 4, 5])
def test_save_load_continue_equals_uninterrupted(tmp_path, k):
    full = make_trainer(tmp_path / 'full', (3, 'epoch'))
    full.run()
    first = make_trainer(tmp_path / 'part', (k, 'iteration'))
    first.run()
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = make_trainer(tmp_path / 'part', (3, 'epoch'), seed=5)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    resumed.run()
    want = [e['main/accuracy'] for e in full.get_extension('LogReport').log]
    assert [e['main/accuracy'] for e in resumed.get_extension('LogReport').log] == want
