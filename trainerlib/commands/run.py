"""``trainerlib run RECIPE [options]`` and ``trainerlib recipes``.

The recipes are the modules of the installed package ``recipes`` (installed today as a
top-level package beside ``trainerlib``; only :func:`recipes_package` names it, so moving
it, e.g. to ``trainerlib.recipes``, changes one line). A recipe is run as
``python -m recipes.<name>`` runs it: ``recipes.<name>.main(options)``.

Layout rule (DESIGN §2: nothing imports recipes): importing this module, or any other
module of ``trainerlib``, never imports ``recipes``. Only the functions of this command
entry point import it, lazily, when the user asks for a recipe: the library itself never
depends on the recipes.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
from types import ModuleType
from typing import List, Sequence

from trainerlib.errors import TrainerlibError

RECIPES_PACKAGE = 'trainerlib.recipes'


def recipes_package() -> ModuleType:
    """The installed recipes package (the one place that imports it)."""
    try:
        return importlib.import_module(RECIPES_PACKAGE)
    except ModuleNotFoundError as e:
        if e.name != RECIPES_PACKAGE:
            raise
        raise TrainerlibError(f'the recipes are not installed (no package {RECIPES_PACKAGE!r}); '
                              'reinstall trainerlib: pip install trainerlib') from None


def recipe_names() -> List[str]:
    """The runnable recipes, as ``python -m recipes`` lists them."""
    package = recipes_package()
    return importlib.import_module(f'{package.__name__}.__main__').names()


def summary_line(name: str) -> str:
    """The first line of a recipe's docstring, read from its source (nothing is imported)."""
    spec = importlib.util.find_spec(f'{recipes_package().__name__}.{name}')
    try:
        with open(spec.origin, encoding='utf-8') as f:
            doc = ast.get_docstring(ast.parse(f.read())) or ''
    except (OSError, SyntaxError, TypeError, AttributeError):
        doc = ''
    return doc.strip().split('\n')[0]


def list_recipes() -> int:
    """Print every recipe with its one-line summary; returns 0."""
    names = recipe_names()
    width = max(map(len, names), default=0)
    print('recipes (trainerlib run RECIPE [options]; trainerlib run RECIPE --help):')
    for name in names:
        print(f'  {name:<{width}}  {summary_line(name)}'.rstrip())
    return 0


def run_recipe(name: str, options: Sequence[str]) -> int:
    """Run recipe ``name`` with its command-line ``options``; returns its exit status.

    Raises:
        TrainerlibError: no recipe name, or one that does not exist.
    """
    available = recipe_names()
    if not name:
        raise TrainerlibError(f'trainerlib run needs a RECIPE: one of {", ".join(available)}')
    if name not in available:
        raise TrainerlibError(f'unknown recipe {name!r}; choose one of {", ".join(available)}')
    module = importlib.import_module(f'{recipes_package().__name__}.{name}')
    return module.main(list(options))
