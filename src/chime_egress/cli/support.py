"""Small pieces shared by the `chime-egress` command-group modules: the exit codes, the exit-code
epilog, the CONFIG argument, loading an allowlist as the proxy does (reporting every problem),
and the column printing several commands use."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import shtab

from ..errors import ConfigError, Problem
from ..errors import plural as plural  # re-exported: the command modules count with it
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
    epilog: str = "",
    add_help: bool = True,
) -> argparse.ArgumentParser:
    """A subcommand: `summary` in its parent's command list, and a --help that keeps the
    hand-wrapped `description` and `epilog` (the exit codes) as written."""
    parser = commands.add_parser(
        name,
        help=summary,
        formatter_class=HelpFormatter,
        description=description,
        epilog=epilog,
        add_help=add_help,
    )
    # The innermost command's parser reports usage errors, so they name the subcommand.
    parser.set_defaults(parser=parser)
    return parser


def epilog(
    ok: str = "", invalid: str = "invalid allowlist (every problem on stderr)", no: str = ""
) -> str:
    """The exit-code table of a command's --help: 0 (`ok`), 1 (`invalid`), 2, and 3 (`no`)."""
    text = _EXIT_CODES.format(ok=f": {ok}" if ok else "", invalid=invalid)
    return f"{text}\n  3  {no}" if no else text


def config_argument(
    parser: argparse.ArgumentParser, default: str | None = DEFAULT_CONFIG, help: str = ""
) -> None:
    """The allowlist: CONFIG, or --config CONFIG (the spelling the proxy's 403 hint uses).

    `resolve_config` (called by main after parsing) joins the two into `args.config`."""
    text = help or f"the allowlist (default: {DEFAULT_CONFIG})"
    argument = parser.add_argument("config", nargs="?", metavar="CONFIG", help=text)
    argument.complete = shtab.FILE  # type: ignore[attr-defined]
    config_option(parser, default)


def config_option(parser: argparse.ArgumentParser, default: str | None = DEFAULT_CONFIG) -> None:
    """--config CONFIG alone, for a command whose positional arguments are something else."""
    option = parser.add_argument(
        "--config", dest="config_option", metavar="CONFIG", help="the allowlist, as an option"
    )
    option.complete = shtab.FILE  # type: ignore[attr-defined]
    parser.set_defaults(config_default=default)


def resolve_config(args: argparse.Namespace) -> None:
    """`args.config`: --config, else the CONFIG argument, else the command's default."""
    if not hasattr(args, "config_default"):
        return
    given = getattr(args, "config", None)
    option = args.config_option
    if option is not None and given is not None and option != given:
        args.parser.error(f"the allowlist is given twice: CONFIG {given} and --config {option}")
    args.config = option or given or args.config_default


FORMATS = ("text", "json")


def format_argument(parser: argparse.ArgumentParser, json_help: str, *aliases: str) -> None:
    """--format text|json, as every command printing a result has; `aliases` (e.g. --json)
    are older spellings of --format json that scripts may still use."""
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="text",
        help=f"stdout format; {json_help} (default: text)",
    )
    for alias in aliases:
        parser.add_argument(
            alias,
            dest="format",
            action="store_const",
            const="json",
            help="the same as --format json (kept for existing scripts)",
        )


class ListAction(argparse.Action):
    """The one list convention: repeat the option, or separate values with commas, or both
    (`--tenant a --tenant b` is `--tenant a,b`). Each value is checked by `item` (a parser
    raising ValueError); repeats are dropped; the first use replaces the default."""

    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str,
        item: Callable[[str], object] = str,
        **kwargs: object,
    ) -> None:
        self.item = item
        super().__init__(option_strings, dest, **kwargs)  # type: ignore[arg-type]

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[object] | None,
        option_string: str | None = None,
    ) -> None:
        current = getattr(namespace, self.dest, None)
        items = [] if current is None or current is self.default else list(current)
        pieces = [piece.strip() for piece in str(values).split(",") if piece.strip()]
        if not pieces:
            raise argparse.ArgumentError(self, "no value given")
        for piece in pieces:
            try:
                value = self.item(piece)
            except ValueError as problem:
                raise argparse.ArgumentError(self, str(problem)) from None
            if value not in items:
                items.append(value)
        setattr(namespace, self.dest, items)


LIST_HELP = "repeat, or separate with commas"


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


def prefix_columns(prefix: Prefix) -> tuple[str, ...]:
    if prefix.origin == "cidrs":
        return ("(destinations.cidrs)",)
    return (prefix.service, prefix.region)


def print_columns(
    rows: Sequence[Sequence[str]], indent: str = "", show: Callable[[str], object] = print
) -> None:
    """Rows as columns two spaces apart; a row's last cell is never padded."""
    widths: dict[int, int] = {}
    for row in rows:
        for index, cell in enumerate(row[:-1]):
            widths[index] = max(widths.get(index, 0), len(cell))
    for row in rows:
        cells = [cell.ljust(widths[index]) for index, cell in enumerate(row[:-1])]
        show(indent + "  ".join([*cells, row[-1]]))
