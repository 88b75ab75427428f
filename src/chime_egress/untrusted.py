"""Text that came from outside (a client, a server, a file name) made safe to show or store.

Whoever reads a log line, a terminal table, a Prometheus label or a comment in a generated file
gives some characters a meaning: ESC and OSC sequences steer terminals (colours, the window
title, hyperlinks); CR, LF, U+0085, U+2028 and U+2029 end lines for log viewers, line-based tools
and JavaScript; bidirectional controls reorder what is displayed. A client chooses its Host,
its TLS server name and its path, so none of that may reach a reader as it was sent.

`printable` writes every character that is not printable (Python's `str.isprintable`: the
Unicode categories Cc, Cf, Cs, Co, Cn, Zl, Zp and Zs but the space) as a Python-style escape and
doubles the backslash, so the text stays on one line and reads unambiguously: `\\x1b` in the
output was ESC, `\\\\x1b` was the four characters. `json_line` is the same promise for a JSON
document: valid JSON that `jq` and line-based tools read, one line, every such character
written as a `\\u` escape. Neither imports anything of the project, so every wing may use them.
"""

from __future__ import annotations

import json
from typing import Any

_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape(character: str) -> str:
    if short := _SHORT.get(character):
        return short
    code = ord(character)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str, limit: int | None = None) -> str:
    """`text` on one line, every non-printable character and the backslash escaped.

    With `limit`, at most that many characters of `text` are shown, followed by "...".
    """
    if limit is not None and len(text) > limit:
        return printable(text[:limit]) + "..."
    if text.isprintable() and "\\" not in text:
        return text  # the common case: nothing to escape
    return "".join(
        character if character.isprintable() and character != "\\" else _escape(character)
        for character in text
    )


def _json_escape(character: str) -> str:
    code = ord(character)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # a UTF-16 surrogate pair, as JSON writes characters beyond the BMP
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_line(document: Any) -> str:
    """`document` as one line of JSON, non-ASCII text kept readable but never non-printable.

    json.dumps escapes C0 controls itself; everything else that is not printable (DEL, C1
    controls such as U+0085 and U+009B, U+2028, U+2029, bidirectional controls, lone
    surrogates) can only stand inside a string there, where a \\u escape means the same
    character. `default=str`: an address or path object must never make a record vanish.
    """
    text = json.dumps(document, default=str, ensure_ascii=False)
    if text.isprintable():
        return text
    return "".join(
        character if character.isprintable() else _json_escape(character) for character in text
    )
