"""One package under two names: the checkout's ``extensions`` is ``trainerlib.extensions``.

The installed package claims no generic top-level name: ``extensions/`` and ``recipes/``
of the repository are installed as ``trainerlib.extensions`` and ``trainerlib.recipes``
(setup.cfg maps the folders). In the checkout the short names keep working (``import
extensions as E``, ``python -m recipes.classify``): imported under its short name, the
package's ``__init__`` calls :func:`alias_package`, which makes the short name and every
``short.sub`` module the very objects of the long name — one module, one class per name,
whichever spelling imported it first.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any, Optional


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``short.x`` as an alias of ``long.x`` (runnable with ``python -m short.x``)."""

    def __init__(self, short: str, long: str) -> None:
        self.short, self.long = short, long

    def _real(self, name: str) -> str:
        return self.long + name[len(self.short):]

    def find_spec(self, name: str, path: Any = None, target: Any = None):
        if not name.startswith(self.short + '.'):
            return None
        real = importlib.util.find_spec(self._real(name))
        if real is None:
            return None
        return importlib.util.spec_from_loader(name, self, origin=real.origin,
                                               is_package=real.submodule_search_locations
                                               is not None)

    def create_module(self, spec) -> Any:
        return importlib.import_module(self._real(spec.name))   # the very same module

    def exec_module(self, module: Any) -> None:
        """Nothing to run: the module was executed under its real name."""

    def get_code(self, name: str) -> Optional[Any]:
        """The real module's code (``python -m short.x`` runs it as ``__main__``)."""
        real = self._real(name)
        return importlib.util.find_spec(real).loader.get_code(real)


def alias_package(short: str, long: str) -> None:
    """Make ``short`` and its submodules the modules of ``long`` (called by the package's
    ``__init__`` when it runs under ``short``)."""
    real = importlib.import_module(long)
    if not any(isinstance(f, _AliasFinder) and f.short == short for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder(short, long))
    prefix = long + '.'
    for name, module in list(sys.modules.items()):
        if name.startswith(prefix):
            sys.modules.setdefault(short + name[len(long):], module)
    sys.modules[short] = real
