"""Runnable recipes: ``python -m recipes.<name> --help`` (installed: ``trainerlib run <name>``).

Installed as ``trainerlib.recipes``; in the checkout ``recipes`` is the same package (see
:mod:`trainerlib._alias`).
"""
if __name__ == 'recipes':   # the checkout's short name: an alias, not a copy
    from trainerlib._alias import alias_package
    alias_package(__name__, 'trainerlib.recipes')
