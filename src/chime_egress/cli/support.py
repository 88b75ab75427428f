"""Small pieces shared by the `chime-egress` subcommand modules (cli.py, csp_cli.py)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the hand-wrapped descriptions and exit-code tables as written."""


def add_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    summary: str,
    description: str,
    epilog: str,
) -> argparse.ArgumentParser:
    """A subcommand: `summary` in its parent's command list, and a --help that keeps the
    hand-wrapped `description` and `epilog` (the exit codes) as written."""
    return commands.add_parser(
        name, help=summary, formatter_class=HelpFormatter, description=description, epilog=epilog
    )


def print_error(message: str) -> None:
    print(message, file=sys.stderr)


def typed(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from a parser raising ValueError: its message becomes the usage error."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as problem:
            raise argparse.ArgumentTypeError(str(problem)) from None

    return convert
