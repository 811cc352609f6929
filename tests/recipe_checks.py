"""Checks shared by the recipe tests (imported by them; not a test module)."""
import json
from pathlib import Path


def read_json(path):
    return json.loads(Path(path).read_text())


def without_time(obj):
    """``obj`` with every ``elapsed_time`` removed (the only thing a resume may change)."""
    if isinstance(obj, dict):
        return {k: without_time(v) for k, v in obj.items() if k != 'elapsed_time'}
    if isinstance(obj, list):
        return [without_time(v) for v in obj]
    return obj


def one_line_error(capsys):
    """The single ``error: ...`` line a user error printed (no traceback)."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), err
    assert 'Traceback' not in err
    return lines[0]
