"""`chime-egress diff OLD NEW`: what an edit of the allowlist changes, before it goes live.

Both files are loaded exactly as the proxy loads them (load_policy), and compared by
chime_egress.policy.diff, the code that writes the proxy's own reload log line.
"""

from __future__ import annotations

import argparse
import json

from ..policy.diff import describe, diff_policies
from .support import (
    EXIT_INVALID,
    EXIT_NO,
    EXIT_OK,
    add_command,
    config_path,
    epilog,
    format_argument,
    load_policy_or_report,
)


def add_diff_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `diff` to the chime-egress command line."""
    diff = add_command(
        commands,
        "diff",
        summary="what an edit of the allowlist changes: apps, tenants, modes, headers, verdicts",
        description=(
            "Compare two allowlists (say, the one in production and an edit of it) as the proxy\n"
            "would load them. For the top-level settings and each network: the mode, the\n"
            "clients, the apps and tenants added or removed, the header values before and\n"
            "after, and the example meeting sessions whose verdict changes (accept -> 403 and\n"
            "back, by the AWS guide's rules); then the Chime prefixes and media hosts.\n"
            "The proxy logs the same comparison, in one line, on every reload."
        ),
        epilog=epilog(
            ok="no change in what the proxy enforces",
            invalid="either allowlist is invalid (every problem on stderr)",
            no="there are changes",
        ),
    )
    diff.add_argument("old", metavar="OLD", help="the allowlist before the edit")
    diff.add_argument("new", metavar="NEW", help="the allowlist after the edit")
    format_argument(diff, "json is one object with 'changed' and 'networks'")
    diff.set_defaults(handler=_diff)


def _diff(args: argparse.Namespace) -> int:
    policies = [load_policy_or_report(config_path(text)) for text in (args.old, args.new)]
    old, new = policies
    if old is None or new is None:
        return EXIT_INVALID
    diff = diff_policies(old, new)
    if args.format == "json":
        document = {"old": args.old, "new": args.new, **diff.to_json()}
        print(json.dumps(document, indent=2))
    else:
        print(f"--- {args.old}")
        print(f"+++ {args.new}")
        for line in describe(diff):
            print(line)
    return EXIT_NO if diff.changed else EXIT_OK
