"""Small file helpers shared by the writer extensions."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any


def write_json_atomic(obj: Any, path: str) -> None:
    """Write ``obj`` as indented JSON via a temporary file + rename (readers never see half)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp',
                               dir=directory)
    try:
        with os.fdopen(fd, 'w') as f:
            json.dump(obj, f, indent=4)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
