"""One JSON object per line for each of the proxy's own log records, for SIEM ingestion.

The proxy's records carry their facts as fields (`extra={"chime": {...}}`); the text line shown
by mitmdump is made from the same facts, so both say the same thing.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
        # default=str: an address or path object must never make a record vanish.
        return json.dumps(document, default=str, ensure_ascii=False)


def parse_json_log_target(text: str) -> str | None:
    """The chime_log_json option: "" off, "-" standard output, else a file to append to."""
    text = text.strip()
    if not text:
        return None
    if text != "-" and Path(text).expanduser().is_dir():
        raise ValueError(f"chime_log_json: {text} is a folder; give a file name or '-'")
    return text


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
        handler = logging.handlers.WatchedFileHandler(Path(target).expanduser(), encoding="utf-8")
    handler.setFormatter(JsonLineFormatter())
    return handler
