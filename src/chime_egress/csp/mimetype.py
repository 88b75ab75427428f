"""The MIME type a browser takes from a response's Content-Type fields, as browsers parse it.

Whether a response may be rendered as a page (and so needs the policy) is the browser's call, so
this follows the algorithms browsers implement: Fetch's "extract a MIME type" over the fields'
combined value, split by "get, decode, and split" (a comma inside a quoted parameter value does
not split), each piece read by MIME Sniffing's "parse a MIME type" (RFC 9110's
`type "/" subtype *( OWS ";" OWS parameter )` with quoted-string values, and its rules for what
is skipped). No library implements these steps (email.message reads RFC 2045, with comments and
without comma lists); they are short, and each function names the section it follows.

A header such as `text/html;charset="x,application/json;"` is one HTML type to a browser; a
naive split at the comma would read it as JSON and leave the page without its policy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

_HTTP_WHITESPACE = "\t\n\r "
_HTTP_TAB_OR_SPACE = "\t "
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True)
class MimeType:
    type: str
    subtype: str
    parameters: Mapping[str, str] = field(default_factory=dict)

    @property
    def essence(self) -> str:
        return f"{self.type}/{self.subtype}"

    @property
    def charset(self) -> str | None:
        return self.parameters.get("charset")


def _is_token(text: str) -> bool:
    return bool(text) and all(character in _TOKEN for character in text)


def _is_quoted_string_text(text: str) -> bool:
    # HTTP quoted-string token code points: TAB, U+0020 to U+007E, U+0080 to U+00FF.
    return all(c == "\t" or " " <= c <= "~" or "\x80" <= c <= "\xff" for c in text)


def _collect_quoted_string(text: str, position: int) -> tuple[str, int]:
    """Fetch, "collect an HTTP quoted string" (with extract-value): the value, and the position
    after it. `text[position]` is the opening quote."""
    value: list[str] = []
    position += 1
    while position < len(text):
        character = text[position]
        position += 1
        if character == '"':
            break
        if character == "\\":
            if position >= len(text):
                value.append("\\")
                break
            character = text[position]
            position += 1
        value.append(character)
    return "".join(value), position


def parse_mime_type(text: str) -> MimeType | None:
    """MIME Sniffing 4.4, "parse a MIME type": the type, or None where the algorithm fails."""
    text = text.strip(_HTTP_WHITESPACE)
    type_, slash, rest = text.partition("/")
    if not slash or not _is_token(type_):
        return None
    subtype, _, parameters_text = rest.partition(";")
    subtype = subtype.rstrip(_HTTP_WHITESPACE)
    if not _is_token(subtype):
        return None
    parameters: dict[str, str] = {}
    position = len(text) - len(parameters_text)  # just after the first ";" (or the end)
    while position < len(text):
        while position < len(text) and text[position] in _HTTP_WHITESPACE:
            position += 1
        start = position
        while position < len(text) and text[position] not in ";=":
            position += 1
        name = text[start:position].lower()
        if position < len(text) and text[position] == ";":
            position += 1
            continue
        position += 1  # past "="
        if position >= len(text):
            break
        if text[position] == '"':
            value, position = _collect_quoted_string(text, position)
            while position < len(text) and text[position] != ";":
                position += 1
        else:
            start = position
            while position < len(text) and text[position] != ";":
                position += 1
            value = text[start:position].rstrip(_HTTP_WHITESPACE)
            if not value:
                position += 1
                continue
        if _is_token(name) and _is_quoted_string_text(value) and name not in parameters:
            parameters[name] = value
        position += 1  # past ";"
    return MimeType(type_.lower(), subtype.lower(), parameters)


def split_header_values(value: str) -> list[str]:
    """Fetch, "get, decode, and split": a field value split at commas outside quoted strings."""
    values: list[str] = []
    current: list[str] = []
    position = 0
    while True:
        start = position
        while position < len(value) and value[position] not in '",':
            position += 1
        current.append(value[start:position])
        if position < len(value) and value[position] == '"':
            start = position
            _, position = _collect_quoted_string(value, position)
            current.append(value[start:position])  # kept as written, quotes included
            if position < len(value):
                continue
        values.append("".join(current).strip(_HTTP_TAB_OR_SPACE))
        current = []
        if position >= len(value):
            return values
        position += 1  # past ","


def extract_mime_type(field_values: Sequence[str]) -> MimeType | None:
    """Fetch, "extract a MIME type", from every Content-Type field of a response (in order).

    The fields are combined with ", " as one value, split, and the last valid type that is not
    `*/*` wins (keeping an earlier piece's charset when it has the same essence and none of its
    own). None when no piece is a valid type, or there is no field.
    """
    if not field_values:
        return None
    found: MimeType | None = None
    charset: str | None = None
    for piece in split_header_values(", ".join(field_values)):
        candidate = parse_mime_type(piece)
        if candidate is None or candidate.essence == "*/*":
            continue
        if found is None or candidate.essence != found.essence:
            charset = candidate.charset
        elif candidate.charset is None and charset is not None:
            candidate = MimeType(
                candidate.type, candidate.subtype, {**candidate.parameters, "charset": charset}
            )
        found = candidate
    return found
