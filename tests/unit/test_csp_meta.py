"""Finding a meta policy in a page as a browser reads it (issue 16, item 7: the evasions)."""

from __future__ import annotations

import pytest

from chime_egress.csp.meta import MAX_HEAD_CHARS, declares_meta_policy, page_text

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
        # The head ends where the HTML parser ends it: at a start tag that belongs in the body,
        # or at text outside the head's elements. A meta after that is placed in the body.
        f"<html><head><title>t</title></head><div>content</div>{META}",
        f"<p>text{META}",
        f"some text {META}",
        f"<html><head><template>{META}</template></head><body>",  # inert: no meta of the head
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


def test_the_heads_own_text_does_not_end_it() -> None:
    page = f"<html>\n  <head>\n <title>A <b> B</title><style>p {{}}</style>\n{META}"
    assert declares_meta_policy(page.encode())


def test_a_head_too_long_to_read_to_its_end_is_not_known() -> None:
    links = '<link rel=stylesheet href="/a.css">' * (MAX_HEAD_CHARS // 30)
    assert declares_meta_policy(f"<head>{links}{META}".encode()) is None
    assert declares_meta_policy(f"<head>{META}{links}".encode()) is True
    assert declares_meta_policy(f"<head><body>{links}".encode()) is False


def test_text_of_a_page_in_an_ascii_compatible_encoding() -> None:
    assert page_text("<p>café</p>".encode("windows-1252"), "windows-1252") == "<p>café</p>"
    assert "<meta" in page_text(META.encode("shift_jis"), "shift_jis")
