"""Whether a page declares a policy in `<meta http-equiv="Content-Security-Policy">`.

The addon edits headers only; a policy in a meta element still applies on top, so the admin is
warned. The page is read the way a browser reads it, not by a pattern over its bytes: decoded
by its BOM or the Content-Type charset (UTF-16 pages included), parsed by the standard library's
HTML tokenizer (attribute values with their character references, `&#67;ontent-...`, decoded),
and scanned up to the `<body>` start tag wherever that is, since a meta policy counts only in
the document's head (HTML, "http-equiv" content-security-policy state).
"""

from __future__ import annotations

from html.parser import HTMLParser

# WHATWG Encoding labels of UTF-16; the other encodings browsers support read ASCII as ASCII.
_UTF16LE_LABELS = frozenset(
    {"csunicode", "iso-10646-ucs-2", "ucs-2", "unicode", "unicodefeff", "utf-16", "utf-16le"}
)
_UTF16BE_LABELS = frozenset({"unicodefffe", "utf-16be"})
_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))


def page_text(body: bytes, charset: str | None) -> str:
    """The page as text: a BOM decides first, then the Content-Type charset (HTML's encoding
    sniffing, in short). Any other page is read as latin-1: never fails, and keeps the ASCII
    of markup intact in every ASCII-compatible encoding."""
    for bom, codec in _BOMS:
        if body.startswith(bom):
            return body[len(bom) :].decode(codec, "replace")
    label = (charset or "").strip().lower()
    if label in _UTF16LE_LABELS:
        return body.decode("utf-16-le", "replace")
    if label in _UTF16BE_LABELS:
        return body.decode("utf-16-be", "replace")
    return body.decode("latin-1")


class _End(Exception):
    """The scan has its answer."""


class _MetaPolicyFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            raise _End  # a meta element in the body is not applied
        if tag == "meta" and any(
            name == "http-equiv" and (value or "").lower() == "content-security-policy"
            for name, value in attrs
        ):
            self.found = True
            raise _End


def declares_meta_policy(body: bytes, charset: str | None = None) -> bool:
    """Whether the page's head holds a `<meta http-equiv="Content-Security-Policy">`."""
    finder = _MetaPolicyFinder()
    try:
        finder.feed(page_text(body, charset))
        finder.close()
    except _End:
        pass
    return finder.found
