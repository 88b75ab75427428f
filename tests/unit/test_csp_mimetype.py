"""Content-Type as browsers read it (Fetch "extract a MIME type", MIME Sniffing "parse a MIME
type"). Expected values are the specifications' own examples and web-platform-tests cases."""

from __future__ import annotations

import pytest

from chime_egress.csp.mimetype import (
    extract_mime_type,
    parse_mime_type,
    split_header_values,
)


@pytest.mark.parametrize(
    ("text", "essence", "parameters"),
    [
        ("text/html", "text/html", {}),
        (" Text/HTML ;Charset=UTF-8 ", "text/html", {"charset": "UTF-8"}),
        ('text/html;charset="gbk"', "text/html", {"charset": "gbk"}),
        ('text/html;charset="\\" gbk"', "text/html", {"charset": '" gbk'}),
        ('text/html;charset=";charset=foo"', "text/html", {"charset": ";charset=foo"}),
        ('text/html;charset="gbk', "text/html", {"charset": "gbk"}),  # unterminated quote
        ("text/html;charset=gbk;charset=windows-1255", "text/html", {"charset": "gbk"}),
        ("text/html;charset=;charset=gbk", "text/html", {"charset": "gbk"}),
        ("text/html;;;charset=gbk", "text/html", {"charset": "gbk"}),
        ("text/html;charset= gbk", "text/html", {"charset": " gbk"}),
        ("text/html;test;charset=gbk", "text/html", {"charset": "gbk"}),
        ("text/html;charset=gbk ", "text/html", {"charset": "gbk"}),
        (
            'text/html;charset="x,application/json;"',
            "text/html",
            {"charset": "x,application/json;"},
        ),
        ("image/svg+xml", "image/svg+xml", {}),
    ],
)
def test_parse(text: str, essence: str, parameters: dict[str, str]) -> None:
    mime = parse_mime_type(text)
    assert mime is not None
    assert (mime.essence, dict(mime.parameters)) == (essence, parameters)


@pytest.mark.parametrize(
    "text", ["", "text", "text/", "/html", "te xt/html", "text/ht ml", "text/html\x00", "x/ y"]
)
def test_not_a_mime_type(text: str) -> None:
    assert parse_mime_type(text) is None


@pytest.mark.parametrize(
    ("value", "pieces"),
    [
        ("text/html", ["text/html"]),
        ("a, b", ["a", "b"]),
        ('text/html;charset="x,application/json;"', ['text/html;charset="x,application/json;"']),
        ('a="b,c", d', ['a="b,c"', "d"]),
        ('a="b\\",c", d', ['a="b\\",c"', "d"]),
        ('a="unterminated, d', ['a="unterminated, d']),
        ("a,,b", ["a", "", "b"]),
    ],
)
def test_get_decode_and_split(value: str, pieces: list[str]) -> None:
    assert split_header_values(value) == pieces


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        # Fetch, "extract a MIME type", the specification's examples:
        (["text/plain;charset=gbk, text/html"], "text/html"),
        (["text/html;charset=gbk;a=b, text/html;x=y"], "text/html;x=y;charset=gbk"),
        (["text/html;charset=gbk;a=b", "text/html;x=y"], "text/html;x=y;charset=gbk"),
        (["text/html;charset=gbk", "x/x", "text/html;x=y"], "text/html;x=y"),
        (["text/html", "cannot-parse"], "text/html"),
        (["text/html", "*/*"], "text/html"),
        (["text/html", ""], "text/html"),
        # A quoted comma does not split; a quote left open runs into the next field.
        (['text/html;charset="x,application/json;"'], "text/html;charset=x,application/json;"),
        (['text/html;a="', "application/json"], "text/html;a=, application/json"),
        ([], None),
        (["nonsense"], None),
        (["*/*"], None),
    ],
)
def test_extract(fields: list[str], expected: str | None) -> None:
    mime = extract_mime_type(fields)
    if expected is None:
        assert mime is None
        return
    assert mime is not None
    shown = mime.essence + "".join(f";{name}={value}" for name, value in mime.parameters.items())
    assert shown == expected
