"""Reading a configuration file so that no file can hang or flood the reader.

Only regular files are read: a FIFO put where the allowlist was would block an ordinary open()
until some writer appears (the proxy's reload, and with it every later edit, would wait forever),
and a device could be read without end. The file is opened without blocking, checked with
fstat, and read up to a size limit. A network mount that hangs in the middle of a read is the
caller's to bound in time (`chime_egress.proxy.reading`): a read that never returns cannot be
interrupted from inside it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import ConfigError, Problem
from .source_text import decode_text

# An allowlist of hundreds of apps and networks is well under 1 MiB; AWS's whole ip-ranges.json
# is about 3 MB. Anything far larger is not one of these files and must not fill memory.
MAX_ALLOWLIST_BYTES = 4 * 1024 * 1024
MAX_RANGES_BYTES = 64 * 1024 * 1024


def read_text_file(path: Path, what: str, max_bytes: int) -> str:
    """The UTF-8 text of a regular file; ConfigError naming the file and what to do otherwise
    (bytes that are not UTF-8 by line and column: `source_text.decode_text`)."""

    def problem(message: str, line: int | None = None) -> ConfigError:
        return ConfigError([Problem(str(path), line, "", message)])

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise problem(f"{what} file not found") from None
    except OSError as error:
        raise problem(f"cannot read {what} file: {error.strerror or error}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise problem(f"is a folder; give the {what} file itself")
        if not stat.S_ISREG(info.st_mode):
            raise problem(
                f"is not a regular file (a pipe, socket or device); the {what} must be a plain "
                "file, so that reading it can neither block nor run on without end"
            )
        if info.st_size > max_bytes:
            raise problem(
                f"is {info.st_size:,} bytes; a {what} file is at most {max_bytes:,} bytes"
            )
        os.set_blocking(fd, True)  # a regular file: reads return what the file holds
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, 1024 * 1024)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:  # it grew while being read
            raise problem(f"is over {max_bytes:,} bytes; a {what} file is at most that")
    except OSError as error:
        raise problem(f"cannot read {what} file: {error.strerror or error}") from None
    finally:
        os.close(fd)
    return decode_text(b"".join(chunks), str(path))
