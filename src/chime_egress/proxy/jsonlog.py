"""One JSON object per line for each of the proxy's own log records, for SIEM ingestion.

The proxy's records carry their facts as fields (`extra={"chime": {...}}`); the text line shown
by mitmdump is made from the same facts, so both say the same thing. The fields keep the values
as seen (a client's Host, byte for byte); the line escapes every character that is not printable
(`untrusted.json_line`), so a record is one line that `jq` and line-based tools read. The file
holds client addresses and hosts: it is created 0600 (`private_files`).
"""

from __future__ import annotations

import io
import logging
import logging.handlers
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..private_files import open_private_append
from ..untrusted import json_line

FIELDS_ATTRIBUTE = "chime"


def fields(event: str, **values: Any) -> dict[str, Any]:
    """The `extra` of a log call: the event's name and its facts, None values left out."""
    return {
        FIELDS_ATTRIBUTE: {
            "event": event,
            **{key: value for key, value in values.items() if value is not None},
        }
    }


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
        }
        document.update(getattr(record, FIELDS_ATTRIBUTE, None) or {"event": "log"})
        document["message"] = record.getMessage()
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json_line(document)


def parse_json_log_target(text: str) -> str | None:
    """The chime_log_json option: "" off, "-" standard output, else a file to append to."""
    text = text.strip()
    if not text:
        return None
    if text != "-" and Path(text).expanduser().is_dir():
        raise ValueError(f"chime_log_json: {text} is a folder; give a file name or '-'")
    return text


class PrivateWatchedFileHandler(logging.handlers.WatchedFileHandler):
    """WatchedFileHandler whose file, whenever it creates one (at start or after rotation), is
    readable by the proxy's user only."""

    def _open(self) -> io.TextIOWrapper:
        return open_private_append(self.baseFilename, self.errors)


def open_json_log(target: str) -> logging.Handler:
    """A handler writing one flushed JSON line per record to stdout ("-") or to a file.

    The file is reopened when log rotation moves it away (WatchedFileHandler), so a shipper
    tailing the configured path keeps receiving records. Raises OSError (no such folder, no
    permission) for the addon to refuse the option.
    """
    handler: logging.Handler
    if target == "-":
        handler = logging.StreamHandler(sys.stdout)
    else:
        handler = PrivateWatchedFileHandler(Path(target).expanduser(), encoding="utf-8")
    handler.setFormatter(JsonLineFormatter())
    return handler
