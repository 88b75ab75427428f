"""`chime-egress run [mitmdump options]`: the proxy itself, with the Chime addon built in.

The command line after `run` is mitmdump's, parsed by mitmproxy's own parser
(`chime_egress.proxy.launcher`); mitmproxy is imported only when the proxy runs, so the other
commands stay free of it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .support import add_command

COMMAND = "run"


def add_run_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = add_command(
        commands,
        COMMAND,
        summary="run the proxy: mitmdump with the Chime addon built in (for production)",
        description=(
            "Run the egress proxy: mitmproxy's mitmdump with the Chime addon registered\n"
            "directly (no -s script that a reload or a missing file could unload). Takes\n"
            "mitmdump's options, e.g.\n"
            "  chime-egress run --listen-port 8080 --set chime_allowlist=/config/allowlist.yaml\n"
            "`chime-egress run --help` lists them all. Start-up errors (an invalid allowlist,\n"
            "an unknown chime_* option, a refused mitmproxy setting) end it with exit code 1\n"
            "before it listens."
        ),
        add_help=False,
    )
    run.add_argument("mitmdump_options", nargs=argparse.REMAINDER, metavar="MITMDUMP_OPTIONS")
    run.set_defaults(handler=lambda args: run_proxy(args.mitmdump_options))


def run_proxy(arguments: Sequence[str]) -> int:
    from ..proxy.launcher import main  # mitmproxy only for this command

    return main(arguments)
