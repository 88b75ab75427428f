"""Files that hold client data (addresses, host names, paths): created readable by their owner only.

The JSON log and the CSP reports file are appended to by the proxy and read by the admin or a
log shipper. Created through the process's umask they would be world-readable (0644 under the
usual 022); they are created 0600 instead, whatever the umask, also when log rotation moved the
old file away and the handler creates the next one. A file that already exists keeps its mode:
an admin who wants a group to read it creates it with that mode first.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

PRIVATE_MODE = 0o600


def private_opener(path: str, flags: int) -> int:
    """An opener for open(): a file it creates gets PRIVATE_MODE (a umask can only narrow it)."""
    return os.open(path, flags, PRIVATE_MODE)


def open_private_append(
    path: str | os.PathLike[str], errors: str | None = None
) -> io.TextIOWrapper:
    """`path` opened for appending UTF-8 text, created 0600 when it does not exist."""
    return open(path, "a", encoding="utf-8", errors=errors, opener=private_opener)


def others_may_read(path: str | os.PathLike[str]) -> str | None:
    """A warning when users other than the owner may read `path` (a file created before), else
    None."""
    try:
        mode = stat.S_IMODE(Path(path).stat().st_mode)
    except OSError:
        return None
    if mode & stat.S_IROTH:
        return (
            f"{path} is readable by every user (mode {mode:04o}) and holds client addresses, "
            f"hosts and paths: chmod o-r {path}"
        )
    return None
