"""CSP violation reports as browsers send them: parsed, checked, and turned into records.

`report-uri` sends one `application/csp-report` object per violation (kebab-case fields under
`csp-report`); `report-to` sends batched `application/reports+json` arrays (camelCase `body`).
Pure: the reverse-proxy addon (csp/addon.py) answers the requests and writes the records.

Reports come from anyone who can load a page, so the collector bounds what it reads and writes:
a request must announce its size, at most MAX_REPORT_BYTES (`announced_length`), before any of
its body is read; and what is stored must be JSON that common tools read to the end (no NaN or
Infinity, numbers within a double's range, nesting at most MAX_REPORT_DEPTH; `jq` stops at 256).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..untrusted import printable
from .mimetype import parse_mime_type

MAX_REPORT_BYTES = 256 * 1024
"""Largest report request accepted. A browser batch of a few dozen reports, each quoting the
policy, fits easily; the limit keeps an abusive client from filling memory or the file."""
REPORT_CONTENT_TYPES = ("application/csp-report", "application/reports+json", "application/json")
"""``report-uri`` sends application/csp-report, the Reporting API application/reports+json;
old browsers sent report-uri reports as application/json."""
MAX_REPORT_DEPTH = 32
"""Deepest nesting of arrays and objects accepted in a report (a browser's is 3 or 4 deep)."""
_LOG_FIELD_LIMIT = 300


# --- violation reports (pure) -----------------------------------------------------------------


class ReportError(Exception):
    """A report request the collector refuses: the HTTP status to answer and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Violation:
    """One CSP violation report, in either wire format, with the fields a reader needs."""

    format: str  # "csp-report" (report-uri) or "reports+json" (report-to)
    document_uri: str
    blocked_uri: str
    violated_directive: str
    effective_directive: str
    disposition: str
    original_policy: str
    source_file: str
    line_number: int | None
    column_number: int | None
    status_code: int | None
    sample: str
    referrer: str
    user_agent: str
    report: Mapping[str, Any]
    """The report object as received (the ``csp-report`` object, or one Reporting API report)."""

    def record(self, *, received: str, client: str, host: str) -> dict[str, Any]:
        """The JSON line: the spec's kebab-case names, plus where and when it arrived."""
        return {
            "received": received,
            "client": client,
            "host": host,
            "format": self.format,
            "document-uri": self.document_uri,
            "blocked-uri": self.blocked_uri,
            "violated-directive": self.violated_directive,
            "effective-directive": self.effective_directive,
            "disposition": self.disposition,
            "original-policy": self.original_policy,
            "source-file": self.source_file,
            "line-number": self.line_number,
            "column-number": self.column_number,
            "status-code": self.status_code,
            "sample": self.sample,
            "referrer": self.referrer,
            "user-agent": self.user_agent,
            "report": self.report,
        }

    def log_line(self) -> str:
        return (
            f"Security Policy Violation: blocked-uri={_loggable(self.blocked_uri)} "
            f"violated-directive={_loggable(self.violated_directive)} "
            f"document={_loggable(self.document_uri)} "
            f"disposition={_loggable(self.disposition)}"
        )


def media_type(content_type: str | None) -> str:
    """The essence of a request's Content-Type (`type/subtype`, lowercase), "" if not valid."""
    mime = parse_mime_type(content_type or "")
    return mime.essence if mime is not None else ""


def announced_length(
    content_lengths: Sequence[str], transfer_encoding: str | None, http1: bool
) -> int | None:
    """The body size a request announces before its body is read, or None when it does not.

    HTTP/1 without Content-Length and Transfer-Encoding has no body (RFC 9112 6.3). A chunked
    body, or an HTTP/2 or HTTP/3 request without content-length, ends only when the client says
    so: its size is unknown until all of it has been read, and so is None, as are conflicting
    or malformed values.
    """
    if transfer_encoding is not None:
        return None
    values = {value.strip() for value in content_lengths}
    if not values:
        return 0 if http1 else None
    if len(values) != 1:
        return None
    (value,) = values
    if not (value.isascii() and value.isdigit() and len(value) <= 18):
        return None
    return int(value)


def parse_reports(content_type: str | None, body: bytes, user_agent: str = "") -> list[Violation]:
    """The CSP violations of one report request; raises ReportError for anything malformed.

    ``application/csp-report`` (and legacy ``application/json``) carry one object under the key
    ``csp-report`` with kebab-case fields; ``application/reports+json`` carries an array of
    reports, of which only ``csp-violation`` ones are kept (the Reporting API shares endpoints
    with other report types).
    """
    kind = media_type(content_type)
    if kind not in REPORT_CONTENT_TYPES:
        raise ReportError(415, f"unsupported content type {kind or '(none)'!r}")
    if len(body) > MAX_REPORT_BYTES:
        raise ReportError(413, f"report of {len(body)} bytes is over {MAX_REPORT_BYTES}")
    try:
        document = json.loads(body, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise ReportError(400, f"nested deeper than {MAX_REPORT_DEPTH} levels") from None
    except ValueError as error:  # UnicodeDecodeError is a ValueError
        raise ReportError(400, f"not JSON: {error}") from None
    if _depth(document) > MAX_REPORT_DEPTH:
        raise ReportError(400, f"nested deeper than {MAX_REPORT_DEPTH} levels")
    if isinstance(document, dict) and kind != "application/reports+json":
        report = document.get("csp-report")
        if not isinstance(report, dict):
            raise ReportError(400, "no 'csp-report' object")
        return [_from_csp_report(report, user_agent)]
    if isinstance(document, list) and kind != "application/csp-report":
        violations = []
        for item in document:
            if not isinstance(item, dict):
                raise ReportError(400, "a report in the array is not an object")
            if item.get("type") != "csp-violation":
                continue
            body_object = item.get("body")
            if not isinstance(body_object, dict):
                raise ReportError(400, "a csp-violation report has no 'body' object")
            violations.append(_from_reporting_api(item, body_object, user_agent))
        return violations
    raise ReportError(400, f"unexpected JSON {type(document).__name__} for {kind}")


def _from_csp_report(report: Mapping[str, Any], user_agent: str) -> Violation:
    violated = _text(report.get("violated-directive"))
    effective = _text(report.get("effective-directive")) or violated.split(" ", 1)[0]
    return Violation(
        format="csp-report",
        document_uri=_text(report.get("document-uri")),
        blocked_uri=_text(report.get("blocked-uri")),
        violated_directive=violated or effective,
        effective_directive=effective,
        disposition=_text(report.get("disposition")),
        original_policy=_text(report.get("original-policy")),
        source_file=_text(report.get("source-file")),
        line_number=_number(report.get("line-number")),
        column_number=_number(report.get("column-number")),
        status_code=_number(report.get("status-code")),
        sample=_text(report.get("script-sample")),
        referrer=_text(report.get("referrer")),
        user_agent=user_agent,
        report=report,
    )


def _from_reporting_api(
    report: Mapping[str, Any], body: Mapping[str, Any], user_agent: str
) -> Violation:
    # The Reporting API's CSP body has no violatedDirective: the effective one stands in for it.
    effective = _text(body.get("effectiveDirective"))
    return Violation(
        format="reports+json",
        document_uri=_text(body.get("documentURL")) or _text(report.get("url")),
        blocked_uri=_text(body.get("blockedURL")),
        violated_directive=effective,
        effective_directive=effective,
        disposition=_text(body.get("disposition")),
        original_policy=_text(body.get("originalPolicy")),
        source_file=_text(body.get("sourceFile")),
        line_number=_number(body.get("lineNumber")),
        column_number=_number(body.get("columnNumber")),
        status_code=_number(body.get("statusCode")),
        sample=_text(body.get("sample")),
        referrer=_text(body.get("referrer")),
        user_agent=_text(report.get("user_agent")) or user_agent,
        report=report,
    )


def _no_constant(name: str) -> object:
    # Python reads NaN, Infinity and -Infinity; JSON has no such values and jq refuses them.
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):  # 1e999: Python reads it as inf and would write Infinity
        raise ValueError(f"number {text[:20]} is out of range")
    return number


def _depth(document: object) -> int:
    """How deeply arrays and objects nest in a parsed document (a scalar is 0 deep)."""
    deepest = 0
    pending: list[tuple[object, int]] = [(document, 0)]
    while pending:
        value, depth = pending.pop()
        children: Iterable[object]
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, depth + 1)
        if deepest > MAX_REPORT_DEPTH:
            return deepest
        pending.extend((child, depth + 1) for child in children)
    return deepest


def _text(value: object) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def _number(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _loggable(value: str) -> str:
    """A report field fit for one log line of space-separated `name=value` pairs: whatever a
    client sent, it cannot forge lines, steer a terminal or add a pair."""
    if not value:
        return "-"
    return printable(value, _LOG_FIELD_LIMIT).replace(" ", "%20")
