"""The README's "Porting from Chainer" section matches the code: every trainerlib name in
its port table resolves, and its sed command is the one the port test runs."""
import importlib
import re
from pathlib import Path

import pytest

from tests.test_chainer_example_port import SED

README = (Path(__file__).resolve().parents[1] / 'README.md').read_text(encoding='utf-8')
SECTION = README[README.index('## Porting from Chainer'):README.index('## Extensions')]
TABLE = [line for line in SECTION.splitlines() if line.startswith('| `')]


def trainerlib_names():
    """Dotted names in the trainerlib column: ``trainerlib.x.y``, ``chainer_compat.x``."""
    names = set()
    for row in TABLE:
        ours = row.split(' | ')[1]
        for span in re.findall(r'`([^`]+)`', ours):
            for name in re.findall(r'\b((?:trainerlib|chainer_compat)(?:\.\w+)+)', span):
                names.add(name.replace('chainer_compat', 'trainerlib.chainer_compat', 1)
                          if name.startswith('chainer_compat') else name)
    return sorted(names)


def resolve(dotted):
    parts = dotted.split('.')
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module('.'.join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_the_table_names_enough():
    assert len(TABLE) >= 15 and len(trainerlib_names()) >= 12


@pytest.mark.parametrize('name', trainerlib_names())
def test_every_trainerlib_name_of_the_port_table_exists(name):
    assert resolve(name) is not None


def test_the_readme_sed_command_is_the_tested_one():
    block = SECTION[SECTION.index('```bash'):]
    block = block[:block.index('```', 3)]
    expressions = re.findall(r"-e '([^']+)'", block)
    assert expressions == SED
