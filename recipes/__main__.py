"""``python -m recipes <name> [options]``: run a recipe by name (no name: list them)."""
from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import List, Optional

import trainerlib.recipes as recipes

NOT_RECIPES = {'launcher'}


def names() -> List[str]:
    """The runnable recipes (modules of this package with a ``main``)."""
    return sorted(m.name for m in pkgutil.iter_modules(recipes.__path__)
                  if not m.name.startswith('_') and m.name not in NOT_RECIPES)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    available = names()
    if not argv or argv[0] in ('-h', '--help'):
        print(f'usage: python -m recipes RECIPE [options]  (RECIPE --help for its options)\n'
              f'recipes: {", ".join(available)}')
        return 0
    if argv[0] not in available:
        print(f'error: unknown recipe {argv[0]!r}; choose one of {", ".join(available)}',
              file=sys.stderr)
        return 2
    return importlib.import_module(f'trainerlib.recipes.{argv[0]}').main(argv[1:])


if __name__ == '__main__':
    sys.exit(main())
