"""`chime-egress schema` and `chime-egress completion`: the admin's editor and shell.

The schema is the allowlist's JSON Schema, shipped in the package (policy/allowlist.schema.json)
for yaml-language-server (VS Code's YAML extension, vim and neovim LSP clients): the shipped
allowlist names it in its first line. Completion scripts are generated from this very parser
by shtab, so they know every command and option there is, and nothing that is not.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources

import shtab

from .support import EXIT_OK, add_command

SHELLS = ("bash", "zsh")


def schema_text() -> str:
    return (
        resources.files("chime_egress.policy")
        .joinpath("allowlist.schema.json")
        .read_text(encoding="utf-8")
    )


def add_tooling_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `schema` and `completion` to the chime-egress command line."""
    schema = add_command(
        commands,
        "schema",
        summary="print the allowlist's JSON Schema, for editors",
        description=(
            "Print the JSON Schema (draft 2020-12) of the allowlist. Editors using\n"
            "yaml-language-server validate and complete an allowlist whose first line names\n"
            "it, as the shipped config/allowlist.yaml does:\n\n"
            "  # yaml-language-server: $schema=PATH/TO/allowlist.schema.json\n\n"
            "for example after `chime-egress schema > /etc/chime/allowlist.schema.json`.\n"
            "`chime-egress validate` checks a few rules more (its description lists them)."
        ),
        epilog="exit codes:\n  0  printed\n  2  usage error (bad command line)",
    )
    schema.set_defaults(handler=_schema)
    completion = add_command(
        commands,
        "completion",
        summary="print a shell completion script (bash or zsh)",
        description=(
            "Print a completion script for chime-egress, generated from its parser.\n\n"
            "  bash: chime-egress completion bash > ~/.local/share/bash-completion/completions/"
            "chime-egress\n"
            "  zsh:  chime-egress completion zsh > ~/.zfunc/_chime-egress\n"
            "        (with fpath+=(~/.zfunc) before compinit in ~/.zshrc)"
        ),
        epilog="exit codes:\n  0  printed\n  2  usage error (bad command line)",
    )
    completion.add_argument("shell", choices=SHELLS, help="the shell")
    completion.set_defaults(handler=_completion)


def _schema(args: argparse.Namespace) -> int:
    sys.stdout.write(schema_text())
    return EXIT_OK


def _completion(args: argparse.Namespace) -> int:
    from .main import build_parser  # the whole command line, which this module is part of

    sys.stdout.write(shtab.complete(build_parser(), shell=args.shell))
    return EXIT_OK
