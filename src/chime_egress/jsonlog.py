"""One JSON object per line for each of the proxy's own log records, for SIEM ingestion.

The proxy's records carry their facts as fields (`extra={"chime": {...}}`); the text line shown
by mitmdump is made from the same facts, so both say the same thing.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

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


class JsonLinesHandler(logging.Handler):
    """Writes each record as one line and flushes it, so a shipper tailing the file sees it."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self._stream: IO[str]
        if target == "-":
            self._stream, self._owned = sys.stdout, False
        else:
            # Raises OSError (no such folder, no permission) for the addon to refuse the option.
            self._stream = open(Path(target).expanduser(), "a", encoding="utf-8")  # noqa: SIM115
            self._owned = True
        self.setFormatter(JsonLineFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            self._stream.write(line + "\n")
            self._stream.flush()
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        if self._owned:
            self._stream.close()
        super().close()
