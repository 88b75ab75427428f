"""Client-supplied text made safe to show (`printable`) and to store as JSON lines (`json_line`)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chime_egress.private_files import open_private_append, others_may_read
from chime_egress.untrusted import json_line, printable
from tests.support.files import mode, usual_umask

# The reviewer's Host: an SGR colour, an OSC window title ended by BEL; then the characters
# that end lines for some readers but not for json.dumps.
EVIL_HOST = "e\x1b[31mvil\x1b]0;pwned\x07.chime.aws"
LINE_BREAKERS = "\x85\u2028\u2029\x9b\x7f\x0b\x0c\r\n"


def test_the_reviewers_host_is_shown_escaped_on_one_line() -> None:
    shown = printable(EVIL_HOST)
    assert shown == "e\\x1b[31mvil\\x1b]0;pwned\\x07.chime.aws"
    assert shown.isprintable()


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("signal.m3.ue1.app.chime.aws", "signal.m3.ue1.app.chime.aws"),
        ("café ünïcode 日本", "café ünïcode 日本"),  # printable letters stay readable
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        ("\x85\u2028\u2029\x9b", "\\x85\\u2028\\u2029\\x9b"),
        ("\u202eevil", "\\u202eevil"),  # a bidi override would reorder what is displayed
        ("\U000e0041", "\\U000e0041"),  # an invisible tag character
        ("\ud800", "\\ud800"),  # a lone surrogate (from undecodable bytes)
        ("\\x1b", "\\\\x1b"),  # typed as text: still told apart from a real ESC
        ("a\u00a0b", "a\\xa0b"),  # a no-break space looks like a space
    ],
)
def test_what_is_escaped(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_a_limit_cuts_before_escaping() -> None:
    assert printable("abcdef", limit=3) == "abc..."
    assert printable("\x1b" * 5, limit=2) == "\\x1b\\x1b..."
    assert printable("abc", limit=3) == "abc"


@given(st.text())
def test_printable_is_one_printable_line(text: str) -> None:
    shown = printable(text)
    assert shown.isprintable()
    assert len(shown.splitlines()) <= 1


@given(st.text())
def test_escaping_is_unambiguous(text: str) -> None:
    # Different texts are never shown alike: the escapes are Python's, the backslash included,
    # so reading the shown text as a string literal gives the text back.
    literal = '"' + printable(text).replace('"', '\\"') + '"'
    assert ast.literal_eval(literal) == text


def test_json_line_escapes_what_json_dumps_leaves_raw() -> None:
    document = {"host": EVIL_HOST + LINE_BREAKERS, "plain": "café"}
    line = json_line(document)
    assert line.isprintable(), "no character may break the line or reach a terminal raw"
    assert json.loads(line) == document, "the value itself is kept exactly"
    assert "café" in line, "printable non-ASCII text stays readable"
    # What the old formatter wrote: json.dumps(ensure_ascii=False) leaves these raw.
    assert not json.dumps(document, ensure_ascii=False).isprintable()


@given(st.dictionaries(st.text(), st.text()))
def test_json_line_is_valid_one_line_json(document: dict[str, str]) -> None:
    line = json_line(document)
    assert line.isprintable()
    assert json.loads(line) == document


def test_json_line_of_characters_beyond_the_basic_plane() -> None:
    document = {"tag": "\U000e0041", "emoji": "\U0001f600"}
    line = json_line(document)
    assert "\\udb40\\udc41" in line and "\U0001f600" in line
    assert json.loads(line) == document


def test_private_files_are_created_0600_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "client-data.jsonl"
    with usual_umask(), open_private_append(path) as file:
        file.write("x\n")
    assert mode(path) == 0o600
    assert others_may_read(path) is None


def test_an_existing_file_keeps_its_mode_and_world_readable_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "old.jsonl"
    path.write_text("")
    path.chmod(0o644)
    with open_private_append(path) as file:
        file.write("x\n")
    assert mode(path) == 0o644, "an admin's choice of mode is kept"
    warning = others_may_read(path)
    assert warning is not None and "mode 0644" in warning and "chmod o-r" in warning
    path.chmod(0o640)
    assert others_may_read(path) is None, "a group may read it: that is the admin's choice"
