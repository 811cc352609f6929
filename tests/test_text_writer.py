"""BackgroundTextWriter: newest content wins, flush waits, errors come back."""
import errno

import pytest

from trainerlib import serialization
from trainerlib.text_writer import BackgroundTextWriter


def test_writes_the_newest_text_of_each_file(tmp_path):
    writer = BackgroundTextWriter()
    for i in range(200):
        writer.write(str(tmp_path / 'a'), f'a{i}')
        writer.write(str(tmp_path / 'b'), f'b{i}')
    writer.flush()
    assert (tmp_path / 'a').read_text() == 'a199' and (tmp_path / 'b').read_text() == 'b199'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a', 'b']  # no temporary files


def test_an_error_of_the_thread_is_raised_by_flush(tmp_path, monkeypatch):
    def full_disk(path, mode='wb', durable=True):
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr('trainerlib.text_writer.atomic_open', full_disk)
    writer = BackgroundTextWriter()
    writer.write(str(tmp_path / 'log'), 'x')
    with pytest.raises(OSError, match='No space'):
        writer.flush()
    writer.flush()  # reported once
    monkeypatch.setattr('trainerlib.text_writer.atomic_open', serialization.atomic_open)
    writer.write(str(tmp_path / 'log'), 'y')
    writer.flush()
    assert (tmp_path / 'log').read_text() == 'y'
