"""Whether a page declares a policy in `<meta http-equiv="Content-Security-Policy">`.

The addon edits headers only; a policy in a meta element still applies on top, so the admin is
warned. The page is read the way a browser reads it, not by a pattern over its bytes: decoded
by its BOM or the Content-Type charset (UTF-16 pages included), parsed by the standard library's
HTML tokenizer (attribute values with their character references, `&#67;ontent-...`, decoded),
and scanned to the end of the head wherever that is, since a meta policy counts only as a child
of the head (HTML, "http-equiv" content-security-policy state). The head ends, as the HTML
parser decides, at the first start tag that belongs in the body (`<body>` among them) or the
first text outside the head's elements; a meta after that is placed in the body and ignored.

The tokenizer is pure Python (about 1 MB a second of dense markup, bench/bench_csp_meta.py), so
a head longer than MAX_HEAD_CHARS is not read to its end: the answer is then None, "not known".
"""

from __future__ import annotations

from html.parser import HTMLParser

# WHATWG Encoding labels of UTF-16; the other encodings browsers support read ASCII as ASCII.
_UTF16LE_LABELS = frozenset(
    {"csunicode", "iso-10646-ucs-2", "ucs-2", "unicode", "unicodefeff", "utf-16", "utf-16le"}
)
_UTF16BE_LABELS = frozenset({"unicodefffe", "utf-16be"})
_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
# Elements the HTML parser keeps in the head ("in head" insertion mode); any other start tag
# begins the body. What stands inside the text ones (tags included) is their text, not the body's.
_HEAD_ELEMENTS = frozenset(
    {"html", "head", "base", "basefont", "bgsound", "link", "meta", "noframes", "noscript"}
    | {"script", "style", "template", "title"}
)
_TEXT_ELEMENTS = frozenset({"noframes", "noscript", "script", "style", "title"})
_HTML_WHITESPACE = "\t\n\x0c\r "
MAX_HEAD_CHARS = 512 * 1024
_FEED = 64 * 1024


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
        self._in_text_element = 0
        self._in_template = 0  # a template's content is inert, whatever it holds

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "template":
            self._in_template += 1
        if self._in_template or self._in_text_element:
            return  # markup inside a title, noscript (...) is its text to a browser
        if tag not in _HEAD_ELEMENTS:
            raise _End  # the body has begun: a meta from here on is not the head's
        if tag == "meta" and any(
            name == "http-equiv" and (value or "").lower() == "content-security-policy"
            for name, value in attrs
        ):
            self.found = True
            raise _End
        if tag in _TEXT_ELEMENTS:
            self._in_text_element += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "template" and self._in_template:
            self._in_template -= 1
        elif tag in _TEXT_ELEMENTS and self._in_text_element and not self._in_template:
            self._in_text_element -= 1

    def handle_data(self, data: str) -> None:
        if self._in_template or self._in_text_element:
            return
        if data.strip(_HTML_WHITESPACE):
            raise _End  # text outside the head's elements begins the body


def declares_meta_policy(body: bytes, charset: str | None = None) -> bool | None:
    """Whether the page's head holds a `<meta http-equiv="Content-Security-Policy">`; None when
    the head runs past MAX_HEAD_CHARS without an answer."""
    finder = _MetaPolicyFinder()
    text = page_text(body, charset)
    try:
        for start in range(0, min(len(text), MAX_HEAD_CHARS), _FEED):
            finder.feed(text[start : start + _FEED])
        if len(text) > MAX_HEAD_CHARS:
            return None
        finder.close()
    except _End:
        pass
    return finder.found
