"""An allowlist's text before it is YAML: encodings, tabs and invisible characters, located.

PyYAML's own messages name a byte offset (`'utf-8' codec can't decode byte 0xe9 in position
70`) or a token (`found character '\\t' that cannot start any token`) and stop at the first one.
An admin needs the line and column, what the character is, and what to do about it, for every
such spot in one go: an editor shows neither a tab from spaces nor a control character.
"""

from __future__ import annotations

import codecs
import re

import yaml

from ..errors import ConfigError, Problem

# PyYAML's Reader refuses these characters anywhere in a file (yaml.reader.Reader.NON_PRINTABLE).
_NOT_ALLOWED = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)
_TAB_FIX = (
    "YAML indents with spaces only (and wants a space after ':'): replace the tab with spaces"
)
_MAX_REPORTED = 20  # past this many, the file is not text an admin typed: say so once

_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def decode_text(data: bytes, path: str) -> str:
    """The file's text, which must be UTF-8; raises ConfigError naming every line that is not."""
    for bom, name in _BOMS:  # UTF-32 first: its little-endian BOM starts like UTF-16's
        if data.startswith(bom):
            raise ConfigError(
                [Problem(path, 1, "", f"the file is saved as {name}; save it as UTF-8", 1)]
            )
    problems: list[Problem] = []
    start = 0
    while True:
        try:
            text = data[start:].decode("utf-8")
        except UnicodeDecodeError as error:
            offset = start + error.start
            problems.append(_undecodable(data, offset, path))
            start = offset + max(error.end - error.start, 1)
            if len(problems) >= _MAX_REPORTED:
                break
            continue
        if not problems:
            return text
        break
    raise ConfigError(problems)


def _undecodable(data: bytes, offset: int, path: str) -> Problem:
    line = data.count(b"\n", 0, offset) + 1
    line_start = data.rfind(b"\n", 0, offset) + 1
    column = len(data[line_start:offset].decode("utf-8", "replace")) + 1
    byte = data[offset]
    # The usual cause is an editor saving in Windows-1252 (Latin-1): show what it meant there.
    meant = bytes([byte]).decode("cp1252", "replace")
    guess = f" ({meant!r} in Windows-1252/Latin-1)" if meant != "\ufffd" else ""
    return Problem(
        path,
        line,
        "",
        f"byte 0x{byte:02x}{guess} is not UTF-8; save the file as UTF-8 "
        "(in your editor: 'save with encoding', UTF-8)",
        column,
    )


def yaml_problems(error: yaml.YAMLError, text: str, path: str) -> list[Problem]:
    """What PyYAML refused, and every other spot of the same kind, with line, column and fix."""
    if isinstance(error, yaml.reader.ReaderError) or _NOT_ALLOWED.search(text):
        return _invisible_characters(text, path)
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    if mark is None:
        return [Problem(path, None, "", f"YAML error: {error}")]
    line, column = mark.line + 1, mark.column + 1
    if _character_at(text, line, column) == "\t":
        return _tabs(text, path, (line, column))
    context = getattr(error, "context", None)
    problem = getattr(error, "problem", None)
    message = " ".join(part for part in (context, problem) if part)
    return [Problem(path, line, "", f"YAML syntax error: {message}", column)]


def _character_at(text: str, line: int, column: int) -> str:
    lines = text.split("\n")
    if line > len(lines):
        return ""
    return lines[line - 1][column - 1 : column]


def _tabs(text: str, path: str, found: tuple[int, int]) -> list[Problem]:
    """The tab PyYAML stopped at, and every tab indenting another line (as likely wrong)."""
    spots = {found}
    for number, line in enumerate(text.split("\n"), start=1):
        content = line.lstrip(" \t")
        indentation = line[: len(line) - len(content)]
        if "\t" in indentation and content and not content.startswith("#"):
            spots.add((number, indentation.index("\t") + 1))
    return [
        Problem(path, line, "", f"a tab character; {_TAB_FIX}", column)
        for line, column in sorted(spots)[:_MAX_REPORTED]
    ]


def _invisible_characters(text: str, path: str) -> list[Problem]:
    problems = []
    for number, line in enumerate(text.split("\n"), start=1):
        for match in _NOT_ALLOWED.finditer(line):
            code = ord(match.group())
            problems.append(
                Problem(
                    path,
                    number,
                    "",
                    f"control character U+{code:04X} is not allowed in YAML (most editors do not "
                    "show it); delete it, or retype the line",
                    match.start() + 1,
                )
            )
    return problems[:_MAX_REPORTED]
