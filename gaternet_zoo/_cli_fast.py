"""When the ``gaternet-zoo`` console script may answer without importing torch and timm.

The console script imports ``gaternet_zoo.cli``, so the package's ``__init__`` runs first, and it imports torch
and timm to register the zoo's models (3-5 s on a busy machine). ``gaternet-zoo --help``, ``--version`` and
``gaternet-zoo COMMAND --help`` need none of that: argparse prints and exits before any command runs. Only those
exact forms qualify, so that a ``--help`` given as an option's value, or any command that does run, always gets the
whole package. This module imports nothing of gaternet_zoo (it sits below every other module).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ['CONSOLE_SCRIPT', 'HELP_FLAGS', 'asks_only_for_help']

#: The console script's name (``[project.scripts]`` in pyproject.toml).
CONSOLE_SCRIPT = 'gaternet-zoo'
#: Flags argparse answers by printing and exiting.
HELP_FLAGS = frozenset({'-h', '--help', '--version'})


def asks_only_for_help(argv: Sequence[str]) -> bool:
    """Whether ``argv`` is the console script asked only for help or its version.

    Args:
        argv: ``sys.argv``: the program, then its arguments.

    Returns:
        True for ``gaternet-zoo -h|--help|--version`` and ``gaternet-zoo COMMAND -h|--help``; False otherwise,
        including for any other program that imports gaternet_zoo with the same arguments.
    """
    if not argv or Path(argv[0]).name not in (CONSOLE_SCRIPT, CONSOLE_SCRIPT + '.exe'):
        return False
    args = list(argv[1:])
    if len(args) == 1:
        return args[0] in HELP_FLAGS
    # A sub-command's help; an unknown sub-command name is an argparse usage error, which exits as well.
    return len(args) == 2 and not args[0].startswith('-') and args[1] in ('-h', '--help')
