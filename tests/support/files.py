"""File modes: what the proxy creates under the usual umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

USUAL_UMASK = 0o022
"""Under it a plain open() creates files 0644, readable by every user."""


@contextmanager
def usual_umask() -> Iterator[None]:
    """Run the block (and the processes it starts, which inherit it) under umask 022."""
    previous = os.umask(USUAL_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)
