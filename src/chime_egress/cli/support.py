"""Small pieces shared by the `chime-egress` command-group modules: the exit codes, the exit-code
epilog, the CONFIG argument, loading an allowlist as the proxy does (reporting every problem),
and the column printing several commands use."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from ..errors import ConfigError, Problem
from ..policy.compiled import Policy, load_policy
from ..policy.ranges import Prefix

T = TypeVar("T")

DEFAULT_CONFIG = "config/allowlist.yaml"

EXIT_OK = 0
EXIT_INVALID = 1  # invalid allowlist, malformed header value, unreadable input, refused update
EXIT_USAGE = 2  # argparse's own code for a bad command line
EXIT_NO = 3  # the answer is "no": Chime answers 403, or an address is not a Chime destination

PROXY_REFUSES = "invalid configuration; the proxy would refuse it"

_EXIT_CODES = """\
exit codes:
  0  success{ok}
  1  {invalid}
  2  usage error (bad command line)"""


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


def epilog(
    ok: str = "", invalid: str = "invalid allowlist (every problem on stderr)", no: str = ""
) -> str:
    """The exit-code table of a command's --help: 0 (`ok`), 1 (`invalid`), 2, and 3 (`no`)."""
    text = _EXIT_CODES.format(ok=f": {ok}" if ok else "", invalid=invalid)
    return f"{text}\n  3  {no}" if no else text


def config_argument(parser: argparse.ArgumentParser) -> None:
    """The optional CONFIG positional argument, config/allowlist.yaml by default."""
    parser.add_argument(
        "config",
        nargs="?",
        default=DEFAULT_CONFIG,
        metavar="CONFIG",
        help=f"the allowlist (default: {DEFAULT_CONFIG})",
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


def seconds(text: str, maximum: float = 300) -> float:
    """A duration argument: more than 0, at most `maximum` seconds."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= maximum:
        raise ValueError(f"{text!r}: expected more than 0 and at most {maximum:g} seconds")
    return value


def config_path(text: str) -> Path:
    # As the proxy does with its chime_allowlist option, so both name the file alike in messages.
    return Path(text).expanduser()


def report_problems(what: Path | str, problems: Sequence[Problem], refusal: str) -> None:
    print_error(f"{what}: {refusal} ({plural(len(problems), 'problem', 'problems')}):")
    for problem in problems:
        print_error(str(problem))


def load_policy_or_report(config: Path) -> Policy | None:
    """The allowlist's Policy, as the proxy loads it; None (every problem on stderr) if invalid."""
    try:
        return load_policy(config)
    except ConfigError as error:
        report_problems(config, error.problems, PROXY_REFUSES)
        return None


def shown_path(path: Path) -> str:
    """A path as short as it can be said from here: relative when under the current folder."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def plural(count: int, word: str, words: str) -> str:
    return f"{count} {word if count == 1 else words}"


def prefix_columns(prefix: Prefix) -> tuple[str, ...]:
    if prefix.origin == "cidrs":
        return ("(destinations.cidrs)",)
    return (prefix.service, prefix.region)


def print_columns(rows: Sequence[Sequence[str]], indent: str = "") -> None:
    """Rows as columns two spaces apart; a row's last cell is never padded."""
    widths: dict[int, int] = {}
    for row in rows:
        for index, cell in enumerate(row[:-1]):
            widths[index] = max(widths.get(index, 0), len(cell))
    for row in rows:
        cells = [cell.ljust(widths[index]) for index, cell in enumerate(row[:-1])]
        print(indent + "  ".join([*cells, row[-1]]))
