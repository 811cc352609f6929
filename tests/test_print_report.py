"""Tests of extensions.PrintReport: layout, rows vs LogReport entries, resume."""
import io

import pytest
import torch
from tqdm import tqdm
from torch.utils.data import TensorDataset

import extensions as E
from trainerlib import triggers as triggers_module
from trainerlib import Classifier, Trainer
from trainerlib.iterators import SerialIterator
from trainerlib.updaters import StandardUpdater

ENTRIES = ['epoch', 'iteration', 'main/loss', 'main/accuracy', 'absent']


def make_trainer(tmp_path, stop, *extensions):
    torch.manual_seed(0)
    x = torch.randn(20, 4)
    t = (x[:, 0] > 0).long()
    model = Classifier(torch.nn.Linear(4, 2))
    updater = StandardUpdater(SerialIterator(TensorDataset(x, t), 5, seed=0),
                              torch.optim.SGD(model.parameters(), lr=0.1), model)
    trainer = Trainer(updater, stop, out=str(tmp_path))
    for ext in extensions:
        trainer.extend(ext)
    return trainer


def split_row(line, entries):
    """Cut a row into its fixed-width cells (width max(10, len(key)) + 2 spaces)."""
    cells, pos = [], 0
    for key in entries:
        width = max(10, len(key)) + 2
        cells.append(line[pos:pos + width].strip())
        pos += width
    return cells


@pytest.mark.parametrize('entries, entry, expected', [
    (['epoch', 'main/loss'], {'epoch': 1, 'main/loss': 0.5}, '1           0.5         \n'),
    (['epoch', 'main/loss'], {'epoch': 2}, '2                       \n'),
    (['x'], {'x': 1234567.0}, '1.23457e+06  \n'),
    (['validation/main/accuracy'], {'validation/main/accuracy': 0.25},
     '0.25                      \n'),
    (['note'], {'note': 'warmup'}, 'warmup      \n'),
])
def test_format_row(entries, entry, expected):
    assert E.PrintReport(entries).format_row(entry) == expected


def test_header_layout():
    report = E.PrintReport(['epoch', 'validation/main/accuracy'])
    assert report.header == 'epoch       validation/main/accuracy\n'


def test_rows_match_log_entries(tmp_path):
    out = io.StringIO()
    trainer = make_trainer(tmp_path, (3, 'epoch'), E.LogReport(),
                           E.PrintReport(ENTRIES, out=out))
    trainer.run()
    log = trainer.get_extension('LogReport').log
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 + len(log) == 4
    assert split_row(lines[0], ENTRIES) == ENTRIES
    for line, entry in zip(lines[1:], log):
        cells = split_row(line, ENTRIES)
        assert int(cells[0]) == entry['epoch'] and int(cells[1]) == entry['iteration']
        assert float(cells[2]) == pytest.approx(entry['main/loss'], rel=1e-5)
        assert float(cells[3]) == pytest.approx(entry['main/accuracy'], rel=1e-5)
        assert cells[4] == ''


def test_resume_prints_only_new_rows(tmp_path):
    first = io.StringIO()
    trainer = make_trainer(tmp_path / 'a', (2, 'epoch'), E.LogReport(),
                           E.PrintReport(ENTRIES, out=first))
    trainer.run()
    state = trainer.state_dict()
    assert state['extensions']['PrintReport'] == {'printed': 2}

    second = io.StringIO()
    resumed = make_trainer(tmp_path / 'b', (4, 'epoch'), E.LogReport(),
                           E.PrintReport(ENTRIES, out=second))
    resumed.load_state_dict(state)
    resumed.run()
    log = resumed.get_extension('LogReport').log
    assert [e['epoch'] for e in log] == [1, 2, 3, 4]
    lines = second.getvalue().splitlines()
    assert split_row(lines[0], ENTRIES) == ENTRIES          # header again, once
    assert [int(split_row(line, ENTRIES)[0]) for line in lines[1:]] == [3, 4]


def test_owned_log_report_is_fed_and_saved(tmp_path):
    out = io.StringIO()
    report = E.PrintReport(['epoch', 'main/loss'], log_report=E.LogReport(filename=None), out=out)
    trainer = make_trainer(tmp_path, (2, 'epoch'), report)
    trainer.run()
    assert len(out.getvalue().splitlines()) == 3
    saved = report.state_dict()
    assert [e['epoch'] for e in saved['log_report']['log']] == [1, 2]

    again = E.PrintReport(['epoch', 'main/loss'], log_report=E.LogReport(filename=None))
    again.load_state_dict(saved)
    assert again.state_dict() == saved


def test_finalize_prints_rows_emitted_after_its_last_call(tmp_path):
    out = io.StringIO()
    # registered before the LogReport: the last entry appears after PrintReport's last call
    trainer = make_trainer(tmp_path, (2, 'epoch'), E.PrintReport(['epoch'], out=out),
                           E.LogReport())
    trainer.run()
    assert [line.strip() for line in out.getvalue().splitlines()] == ['epoch', '1', '2']


@pytest.mark.parametrize('log_report, error', [(3, TypeError), ('Missing', ValueError)])
def test_bad_log_report(tmp_path, log_report, error):
    if isinstance(log_report, str):
        trainer = make_trainer(tmp_path, (1, 'epoch'), E.PrintReport(['epoch'], log_report,
                                                                     out=io.StringIO()))
        with pytest.raises(error, match='Missing'):
            trainer.run()
    else:
        with pytest.raises(error, match='LogReport'):
            E.PrintReport(['epoch'], log_report)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize('out, clears_bars', [(io.StringIO(), False), (_Terminal(), True)],
                         ids=['file', 'terminal'])
def test_rows_clear_progress_bars_only_on_a_terminal(monkeypatch, out, clears_bars):
    entered = []
    real = tqdm.external_write_mode

    def spy(*args, **kwargs):
        entered.append(kwargs.get('file'))
        return real(*args, **kwargs)
    monkeypatch.setattr(tqdm, 'external_write_mode', spy)
    report = E.PrintReport(['epoch'], log_report=E.LogReport(trigger=(1, 'iteration')), out=out)
    report._print_new([{'epoch': 1}])
    assert out.getvalue().splitlines()[1].strip() == '1'
    assert entered == ([out] if clears_bars else [])


class _Rows(io.StringIO):
    """Records the iteration at which each row was written (header excluded)."""

    def __init__(self, trainer_box):
        super().__init__()
        self.at, self._box = [], trainer_box

    def write(self, text):
        rows = [line for line in text.splitlines() if line and not line.startswith('epoch')]
        self.at += [self._box[0].updater.iteration] * len(rows)
        return super().write(text)


@pytest.mark.parametrize('log_trigger, order, calls, printed_at', [
    # LogReport first: each row is printed at the iteration that emits it; PrintReport is
    # called at each emission and at the iteration after it (nothing new then), never in
    # between (at the start, iteration 0 is a multiple of 3 too: one call at 1)
    ((3, 'iteration'), 'log-first', [1, 3, 4, 6, 7, 9, 10, 12], [3, 6, 9, 12]),
    # registered before its LogReport: each row one iteration later, as when asked every
    # iteration; the last one (iteration 12, the end) by finalize
    ((3, 'iteration'), 'print-first', [1, 3, 4, 6, 7, 9, 10, 12], [4, 7, 10, 12]),
    (triggers_module.ManualScheduleTrigger([2, 5], 'iteration'), 'log-first', [2, 3, 5, 6],
     [2, 5]),
    # an 'epoch' trigger cannot say its iterations: asked at every one (4 per epoch)
    ((1, 'epoch'), 'log-first', list(range(1, 13)), [4, 8, 12]),
])
def test_called_only_where_an_entry_can_be_new(tmp_path, log_trigger, order, calls,
                                               printed_at):
    box, seen = [], []
    out = _Rows(box)

    class Counting(E.PrintReport):
        def __call__(self, trainer):
            seen.append(trainer.updater.iteration)
            super().__call__(trainer)

    report = Counting(['epoch', 'iteration'], out=out)
    log = E.LogReport(trigger=log_trigger, filename=None)
    ordered = (log, report) if order == 'log-first' else (report, log)
    trainer = make_trainer(tmp_path, (12, 'iteration'), *ordered)
    box.append(trainer)
    trainer.run()
    assert seen == calls
    assert out.at == printed_at
    assert len(log.log) == len(printed_at)
