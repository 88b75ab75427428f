"""Which requests may be forwarded to Chime: none that a next hop could read as other headers.

The proxy strips the client's copies of the two Chime headers and adds its own. That guarantee
only holds if every parser behind the proxy reads the same header section as the proxy did, so a
Chime-bound request is refused (never forwarded) when any part of it could be read another way:

- a field name that is not an RFC 9110 token (5.1): `Name : value`, a CR or LF inside a name;
- a field value with a control character other than HTAB (RFC 9110 5.5): a bare CR, which many
  servers end a line on (RFC 9112 2.2 lets a proxy only reject or replace it), NUL, and the
  CR LF that an obs-fold continuation line leaves in the value (RFC 9112 5.2: a proxy must not
  forward it); HTTP/2 and HTTP/3 forbid all three in values (RFC 9113 8.2.1);
- a method that is not a token, or a request target or authority holding a control character
  or a space: from an HTTP/2 client they would become a new line when the request goes upstream
  as HTTP/1.1;
- a `Connection` (or legacy `Proxy-Connection`) option naming a Chime header: RFC 9110 7.6.1
  tells every next hop to delete the fields it names;
- a field named like a Chime header with `_` for `-`: CGI-style servers read both as one;
- a request trailer with any of the above, or named like a Chime header at all (trailers are
  never where Chime reads them, and some servers merge them into the header section).

These rules are pure functions of the request's bytes, called from the proxy's injector.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from operator import itemgetter

from .headers import CHIME_HEADER_NAMES

Field = tuple[bytes, bytes]

# RFC 9110 5.6.2: token = 1*tchar.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 5.5: field values are VCHAR, obs-text, SP and HTAB; every other control is refused.
_VALUE_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# A request target or authority cannot hold a space or a control (RFC 9112 3.2, RFC 3986).
_TARGET_CONTROL = re.compile(rb"[\x00-\x20\x7f]")

_CHIME_NAMES = frozenset(name.lower().encode() for name in CHIME_HEADER_NAMES)
# Spellings that servers mapping `-` to `_` (CGI, WSGI, PHP, Rack) read as a Chime header.
_CHIME_ALIASES = frozenset(name.replace(b"-", b"_") for name in _CHIME_NAMES)
_CONNECTION_HEADERS = frozenset({b"connection", b"proxy-connection"})
_names, _values = itemgetter(0), itemgetter(1)
# For the fast scan: deleting every allowed byte leaves only what is not allowed.
_TCHARS = bytes(b for b in range(256) if _TOKEN.fullmatch(bytes([b])))
_VALUE_BYTES = bytes(b for b in range(256) if not _VALUE_CONTROL.match(bytes([b])))


def _shown(data: bytes) -> str:
    """Bytes as a log line can show them: every control character escaped."""
    text = repr(data)[2:-1]
    return text if len(text) <= 80 else text[:77] + "..."


def field_problem(name: bytes, value: bytes) -> str | None:
    """Why one header field must not be forwarded to Chime, or None."""
    if _TOKEN.fullmatch(name) is None:
        return f"header name {_shown(name)!r} is not a token"
    if _VALUE_CONTROL.search(value) is not None:
        return (
            f"header {_shown(name)} has a control character in its value ({_shown(value)!r}): "
            "a bare CR, LF, NUL or an obs-fold line"
        )
    lowered = name.lower()
    if lowered.replace(b"-", b"_") in _CHIME_ALIASES and lowered not in _CHIME_NAMES:
        return f"header {_shown(name)} is a Chime header name spelled with underscores"
    if lowered in _CONNECTION_HEADERS:
        for option in value.lower().split(b","):
            if option.strip(b" \t") in _CHIME_NAMES:
                return (
                    f"{_shown(name)}: {_shown(value)} tells the next hop to delete a Chime header"
                )
    return None


def request_problem(
    method: bytes, target: bytes, authority: bytes, fields: Iterable[Field]
) -> str | None:
    """Why a Chime-bound request must be refused rather than forwarded, or None.

    `target` is the request target as it will be sent (the path, or the absolute form), and
    `authority` the HTTP/2 or HTTP/3 `:authority` (empty for HTTP/1).
    """
    if _TOKEN.fullmatch(method) is None:
        return f"method {_shown(method)!r} is not a token"
    if _TARGET_CONTROL.search(target) is not None:
        return f"request target {_shown(target)!r} has a space or a control character"
    if _TARGET_CONTROL.search(authority) is not None:
        return f"authority {_shown(authority)!r} has a space or a control character"
    fields = tuple(fields)
    if _looks_clean(fields):
        return None
    for name, value in fields:
        if (problem := field_problem(name, value)) is not None:
            return problem
    return None


def _looks_clean(fields: Sequence[Field]) -> bool:
    """True if no field can have a problem: a few scans of the joined names and values.

    Every request pays this (BENCHMARKS.md, issue 12); only a request that mentions a Chime
    name or breaks a rule is checked field by field, to say which.
    """
    names = b":".join(map(_names, fields))
    # Joined by ':' (not a tchar): all tokens, none empty, iff only the separators are left.
    if names.translate(None, _TCHARS) != b":" * (len(fields) - 1) or b"::" in names:
        return False
    if fields and (names[:1] == b":" or names[-1:] == b":"):
        return False
    values = b"\t".join(map(_values, fields))
    if values.translate(None, _VALUE_BYTES):
        return False
    # A Chime name spelled with `_`, or named by a Connection option, mentions "amzn".
    if b"_" in names and b"amzn" in names.lower():
        return False
    return b"amzn" not in values.lower()


def trailer_problem(fields: Iterable[Field]) -> str | None:
    """Why a Chime-bound request's trailer section must not be forwarded, or None."""
    for name, value in fields:
        if name.lower().replace(b"_", b"-") in _CHIME_NAMES:
            return f"trailer {_shown(name)} is named like a Chime header"
        if (problem := field_problem(name, value)) is not None:
            return f"trailer: {problem}"
    return None
