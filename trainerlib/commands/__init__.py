"""The installed ``trainerlib`` command (``python -m trainerlib`` too) and its subcommands.

* :mod:`trainerlib.commands.main`: the top-level parser (``trainerlib run|recipes|plot|inspect``);
* :mod:`trainerlib.commands.run`: ``run RECIPE [options]`` and ``recipes``;
* :mod:`trainerlib.commands.plot`: ``plot LOG... --keys KEY...`` (also ``tools/plot_log.py``);
* :mod:`trainerlib.commands.inspect`: ``inspect SNAPSHOT`` (also ``tools/inspect_snapshot.py``).

Importing this package imports neither ``extensions`` nor ``recipes``.
"""
