"""`chime-egress`: the admin's command line, on the very code the proxy runs.

Every answer comes from the proxy's own modules: an allowlist is checked by load_policy (so the
messages are the proxy's, word for word), headers come from the compiled Policy, addresses are
matched by its PrefixTable, and a ranges update selects entries with the parser that later loads
them; the PAC file and firewall rules list the PrefixTable's own prefixes (`deploy`). Nothing
here imports mitmproxy but `run` (when it runs), so the commands work wherever the package is
installed.

This module only assembles the command line: each command group lives in its own module
(config, ranges, deploy, observed, csp, run), which adds its subcommands and handles them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__
from .config import add_config_commands
from .csp import add_csp_commands
from .deploy import add_deploy_commands
from .diff import add_diff_commands
from .observed import add_observed_commands
from .ranges import add_ranges_commands
from .run import COMMAND as RUN
from .run import add_run_command, run_proxy
from .support import HelpFormatter, resolve_config
from .tooling import add_tooling_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chime-egress",
        formatter_class=HelpFormatter,
        description=(
            "Check and explain a chime-egress allowlist with the proxy's own code: what the\n"
            "proxy will send, what Chime will decide, and which addresses are Chime's; print\n"
            "what routes exactly those addresses to the proxy (a PAC file, firewall rules);\n"
            "check that a running proxy answers; and run the proxy itself (run)."
        ),
        epilog=(
            "CONFIG is the allowlist, config/allowlist.yaml by default.\n\n"
            "exit codes (see each command's --help):\n"
            "  0  success\n"
            "  1  invalid allowlist or input, or a refused update\n"
            "  2  usage error (bad command line)\n"
            "  3  the answer is no: Chime would answer 403 (explain), or an address is not\n"
            "     a Chime destination (ranges lookup)"
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # In this order in the help's command list.
    add_run_command(commands)  # run
    add_config_commands(commands)  # validate, headers, explain
    add_diff_commands(commands)  # diff
    add_ranges_commands(commands)  # ranges lookup, ranges update
    add_deploy_commands(commands)  # pac, firewall, health
    add_observed_commands(commands)  # observed
    add_csp_commands(commands)  # csp generate, csp check, csp merge
    add_tooling_commands(commands)  # schema, completion
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == [RUN]:
        # mitmdump's command line, whole: argparse here would take its options for ours.
        return run_proxy(arguments[1:])
    parser = build_parser()
    args, extra = parser.parse_known_args(arguments)
    # Said by the subcommand's own parser, so the usage shown is the one that was mistyped.
    command_parser: argparse.ArgumentParser = getattr(args, "parser", parser)
    if extra:
        command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    resolve_config(args)
    try:
        code: int = args.handler(args)
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as other command-line tools do. Python's
        # recipe: point stdout at devnull so the flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
