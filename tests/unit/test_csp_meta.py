"""Finding a meta policy in a page as a browser reads it (issue 16, item 7: the evasions)."""

from __future__ import annotations

import pytest

from chime_egress.csp.meta import declares_meta_policy, page_text

META = '<meta http-equiv="Content-Security-Policy" content="connect-src \'self\'">'


@pytest.mark.parametrize(
    "page",
    [
        f"<html><head>{META}</head><body></body></html>",
        "<META HTTP-EQUIV='content-security-policy' CONTENT=x>",
        "<meta http-equiv=Content-Security-Policy content=x/>",
        "<meta content=x http-equiv=content-security-policy>",
        # Character references in the attribute value, as the browser decodes them.
        '<meta http-equiv="&#67;ontent-Security-Policy" content="x">',
        '<meta http-equiv="&#x43;ontent&#45;security&#x2d;policy" content="x">',
        '<meta http-equiv="CONTENT&#x2D;SECURITY&#x2d;POLICY" content="x">',
        # Far into a long head: the old scan stopped after 64 KiB.
        "<head><script>" + "x" * 70_000 + f"</script>{META}</head>",
        "<head><style>" + "/* a */\n" * 20_000 + f"</style>{META}",
    ],
)
def test_a_meta_policy_is_found(page: str) -> None:
    assert declares_meta_policy(page.encode())


@pytest.mark.parametrize(
    "page",
    [
        "<html><head><title>no policy</title></head><body>hello</body></html>",
        '<meta http-equiv="refresh" content="5">',
        '<meta http-equiv="Content&hyphen;Security-Policy" content="x">',  # U+2010, not "-"
        '<meta http-equiv=" Content-Security-Policy" content="x">',  # compared exactly
        "<meta name=content-security-policy content=x>",  # a name, not http-equiv: not applied
        f"<html><head></head><body>{META}</body></html>",  # in the body: not applied
        f"<!-- {META} -->",
        f"<script>document.write('{META}')</script><body>",
    ],
)
def test_no_meta_policy(page: str) -> None:
    assert not declares_meta_policy(page.encode())


@pytest.mark.parametrize(
    "encoded",
    [
        ("\ufeff" + META).encode("utf-16-le"),
        ("\ufeff" + META).encode("utf-16-be"),
        ("\ufeff" + META).encode("utf-8"),
    ],
)
def test_a_page_with_a_byte_order_mark(encoded: bytes) -> None:
    # The BOM decides, whatever the Content-Type says.
    assert declares_meta_policy(encoded, "windows-1252")


@pytest.mark.parametrize(
    ("charset", "codec"),
    [("utf-16", "utf-16-le"), ("UTF-16LE", "utf-16-le"), ("utf-16be", "utf-16-be")],
)
def test_a_utf16_page_by_its_content_type_charset(charset: str, codec: str) -> None:
    body = f"<html><head>{META}</head>".encode(codec)
    assert declares_meta_policy(body, charset)
    assert not declares_meta_policy(body, None), "read as latin-1 the markup is unreadable"


def test_text_of_a_page_in_an_ascii_compatible_encoding() -> None:
    assert page_text("<p>café</p>".encode("windows-1252"), "windows-1252") == "<p>café</p>"
    assert "<meta" in page_text(META.encode("shift_jis"), "shift_jis")
