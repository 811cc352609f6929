"""Tests of extensions.ProgressBar: bounded plain output off a terminal, totals, resume."""
import io

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import extensions as E
from extensions import progress_bar as progress_bar_module
from trainerlib import Trainer
from trainerlib.iterators import DataLoaderIterator, SerialIterator
from trainerlib.updaters import StandardUpdater


def make_trainer(tmp_path, stop, n=10, batch_size=1):
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    dataset = TensorDataset(torch.randn(n, 2))
    updater = StandardUpdater(SerialIterator(dataset, batch_size, seed=0),
                              torch.optim.SGD(model.parameters(), lr=0.01), model,
                              loss_func=lambda x: model(x).pow(2).mean())
    return Trainer(updater, stop, out=str(tmp_path))


def run_with_bar(trainer, **kwargs):
    out = io.StringIO()
    trainer.extend(E.ProgressBar(out=out, **kwargs))
    trainer.run()
    return out.getvalue()


def counts(text):
    """The iteration count of each line ('  30%|###   | 300/1000 iter [...]')."""
    return [int(line.split('/')[0].split()[-1]) for line in text.splitlines()]


def test_bounded_plain_lines_on_a_file(tmp_path):
    text = run_with_bar(make_trainer(tmp_path, (1000, 'iteration')), update_interval=100,
                        mininterval=0)
    lines = text.splitlines()
    assert '\r' not in text
    assert counts(text) == list(range(0, 1001, 100))     # a line every 100 iterations
    assert '1000/1000' in lines[-1] and '100%' in lines[-1]
    assert 'epoch=100.00' in lines[-1] and 'it/s' in lines[-1]


@pytest.mark.parametrize('kwargs, expected', [
    ({'update_interval': 10}, [0, 200]),        # default 10 s minimum interval off a terminal
    ({'update_interval': 1, 'mininterval': 3600}, [0, 200]),
    ({'update_interval': 150, 'mininterval': 0}, [0, 150, 200]),   # the last one not repeated
    ({'update_interval': 50, 'mininterval': 0}, [0, 50, 100, 150, 200]),
])
def test_minimum_interval_and_final_line(tmp_path, kwargs, expected):
    assert counts(run_with_bar(make_trainer(tmp_path, (200, 'iteration')), **kwargs)) == expected


def test_epoch_length_is_converted_to_iterations(tmp_path):
    # 10 examples in batches of 3: epoch 2 ends at iteration ceil(2 * 10 / 3) = 7
    trainer = make_trainer(tmp_path, (2, 'epoch'), batch_size=3)
    text = run_with_bar(trainer, update_interval=1, mininterval=0)
    assert trainer.updater.iteration == 7
    assert '7/7 iter' in text.splitlines()[-1]


def test_epochs_are_counted_when_the_epoch_size_is_unknown(tmp_path, monkeypatch):
    monkeypatch.setattr(progress_bar_module, 'batches_per_epoch', lambda iterator: None)
    text = run_with_bar(make_trainer(tmp_path, (3, 'epoch'), batch_size=5))
    last = text.splitlines()[-1]
    assert '3.00/3 epochs' in last and 'iteration=6' in last


def test_unknown_total_shows_a_counter(tmp_path):
    trainer = make_trainer(tmp_path, lambda tr: tr.updater.iteration >= 50)
    text = run_with_bar(trainer, update_interval=10)
    assert text.splitlines()[-1].startswith('50it')


def test_explicit_training_length_wins(tmp_path):
    text = run_with_bar(make_trainer(tmp_path, (20, 'iteration')),
                        training_length=(40, 'iteration'))
    assert '20/40' in text.splitlines()[-1]


def test_resume_starts_at_the_resumed_iteration(tmp_path):
    first = make_trainer(tmp_path / 'a', (300, 'iteration'))
    run_with_bar(first)
    resumed = make_trainer(tmp_path / 'b', (500, 'iteration'))
    resumed.load_state_dict(first.state_dict())
    text = run_with_bar(resumed, mininterval=0)
    assert counts(text) == [300, 400, 500]
    assert '500/500' in text.splitlines()[-1]


def test_batches_per_epoch():
    dataset = TensorDataset(torch.zeros(10, 1))
    assert progress_bar_module.batches_per_epoch(SerialIterator(dataset, 4)) == 2.5
    loader = DataLoader(dataset, batch_size=4)
    assert progress_bar_module.batches_per_epoch(DataLoaderIterator(loader)) == 3
    assert progress_bar_module.batches_per_epoch(object()) is None


class _TwoRanks:
    """Rank 0 of 2 for a SerialIterator's one agreement at construction."""
    rank, size = 0, 2
    counts: dict = {}

    def allgather_obj(self, obj):
        return [obj, obj]

    def bcast_obj(self, obj, root=0):
        return obj


def test_batches_per_epoch_of_a_sharded_iterator_counts_global_batches():
    dataset = TensorDataset(torch.zeros(10, 1))
    iterator = SerialIterator(dataset, 2, comm=_TwoRanks())   # global batch 4
    assert progress_bar_module.batches_per_epoch(iterator) == 2.5


def test_bad_update_interval():
    with pytest.raises(ValueError, match='update_interval'):
        E.ProgressBar(update_interval=0)


@pytest.mark.parametrize('trigger, calls', [
    (None, [50, 100, 150, 200]),                 # its own trigger: (update_interval, 'iteration')
    ((1, 'iteration'), list(range(1, 201))),     # a finer one: called every iteration
])
def test_called_every_update_interval_with_the_same_lines(tmp_path, trigger, calls):
    seen = []

    class Counting(E.ProgressBar):
        def __call__(self, trainer):
            seen.append(trainer.updater.iteration)
            super().__call__(trainer)

    out = io.StringIO()
    trainer = make_trainer(tmp_path, (200, 'iteration'))
    trainer.extend(Counting(out=out, update_interval=50, mininterval=0), trigger=trigger)
    trainer.run()
    assert seen == calls
    assert counts(out.getvalue()) == [0, 50, 100, 150, 200]
