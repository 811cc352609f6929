"""The ``trainerlib`` command: ``trainerlib run|recipes|plot|inspect …`` (``--help`` on each).

Installed as a console script by ``pip install`` (setup.cfg ``[options.entry_points]``);
``python -m trainerlib`` is the same command. A user error prints one ``error: …`` line
to stderr and exits with status 2, as the recipes do (:func:`trainerlib.cli.run_cli`).
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from trainerlib import __version__
from trainerlib.cli import run_cli
from trainerlib.commands import inspect, plot
from trainerlib.commands.run import list_recipes, run_recipe


def _run(args: argparse.Namespace) -> int:
    return run_cli(lambda: run_recipe(args.recipe, args.options))


def _recipes(args: argparse.Namespace) -> int:
    return run_cli(list_recipes)


def build_parser() -> argparse.ArgumentParser:
    """The parser of the command and of its four subcommands."""
    parser = argparse.ArgumentParser(
        prog='trainerlib', description="Chainer's training architecture on PyTorch: run a "
        'recipe, list the recipes, plot logs, inspect a snapshot.',
        epilog='trainerlib COMMAND --help shows the options of a command.')
    parser.add_argument('--version', action='version', version=f'trainerlib {__version__}')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    run = commands.add_parser(
        'run', help='run a recipe: trainerlib run RECIPE [its options]',
        description='Run a recipe, as python -m recipes.RECIPE does; everything after RECIPE '
                    'is its own command line (trainerlib run RECIPE --help).')
    run.add_argument('recipe', nargs='?', metavar='RECIPE',
                     help='a recipe name (trainerlib recipes lists them)')
    run.add_argument('options', nargs=argparse.REMAINDER, metavar='OPTIONS',
                     help="the recipe's options, e.g. --out result --set train.epochs=3")
    run.set_defaults(handler=_run)
    listing = commands.add_parser('recipes', help='list the recipes',
                                  description='List the recipes with a line about each.')
    listing.set_defaults(handler=_recipes)
    for name, module, what in (('plot', plot, 'plot keys of LogReport logs to a PNG'),
                               ('inspect', inspect, 'summarise a snapshot file')):
        sub = commands.add_parser(name, help=what, description=module.DESCRIPTION)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.execute)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``trainerlib`` console script; returns the exit status."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return args.handler(args)
