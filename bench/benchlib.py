"""What every benchmark prints about the code it measured."""

from __future__ import annotations

import datetime
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def code_version() -> str:
    """The commit measured, and whether src/ or addon/ differ from it."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "src", "addon"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    changed = [line[3:] for line in dirty if line.strip()]
    return f"commit {commit}" + (
        f" + uncommitted changes in {', '.join(changed)}" if changed else ""
    )


def display_command(command: list[str]) -> str:
    return " ".join(shlex.quote(part) for part in command)


def print_provenance(machine: str, started: datetime.datetime | None = None) -> None:
    """The lines every benchmark prints first: where, when, which code, and how to run it again."""
    started = started or datetime.datetime.now().astimezone()
    print(f"machine: {machine}")
    print(f"date: {started.isoformat(timespec='seconds')}")
    print(f"code: {code_version()}")
    print(f"command: {display_command([Path(sys.executable).name, *sys.argv])}")
