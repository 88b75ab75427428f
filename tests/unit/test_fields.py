"""The request rules of policy/fields.py, checked against what real parsers would read.

Each refused case is one that at least one common parser (h11, Python's http.client, Node's
lenient llhttp, a CGI-style server, an RFC 9110 next hop honouring Connection) reads as a
different header section than the proxy did; each accepted case is ordinary traffic.
"""

from __future__ import annotations

import pytest

from chime_egress.policy.fields import field_problem, request_problem, trailer_problem

GET, PATH = b"GET", b"/v2/meetings"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"Accept", b"*/*"),
        (b"User-Agent", b"Mozilla/5.0 (X11; Linux x86_64)"),
        (b"X-Tab", b"a\tb"),  # HTAB is allowed inside a value
        (b"X-Latin1", "caf\u00e9".encode("latin-1")),  # obs-text is allowed
        (b"X-Utf8", "\u65e5\u672c".encode()),
        (b"Connection", b"keep-alive, Upgrade"),
        (b"Connection", b"close"),
        (b"x-amzn-chime-app-keys", b"client copy"),  # a copy: stripped later, not refused here
        (b"X-Amzn-Chime", b"another header"),
        (b"X_Custom_Header", b"underscores elsewhere are fine"),
    ],
)
def test_ordinary_fields_pass(name: bytes, value: bytes) -> None:
    assert field_problem(name, value) is None


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (b"Foo", b"a\rX-Amzn-Chime-App-Keys: evil", "control character"),  # bare CR
        (b"Foo", b"bar\r\n X-Amzn-Chime-App-Keys: evil", "obs-fold"),  # what obs-fold leaves
        (b"Foo", b"a\nX-Amzn-Chime-App-Keys: evil", "control character"),
        (b"Foo", b"a\x00b", "control character"),
        (b"Foo", b"a\x0bb", "control character"),
        (b"Foo", b"a\x7fb", "control character"),
        (b"X-Amzn-Chime-App-Keys ", b"evil", "not a token"),  # `Name : value`
        (b"X-Amzn-Chime-App-Keys\t", b"evil", "not a token"),
        (b"Foo\r\nX-Amzn-Chime-App-Keys", b"evil", "not a token"),
        (b"", b"evil", "not a token"),
        (b"X_Amzn_Chime_App_Keys", b"evil", "underscores"),
        (b"x-amzn_chime-tenants", b"evil", "underscores"),
        (b"Connection", b"keep-alive, X-Amzn-Chime-App-Keys, X-Amzn-Chime-Tenants", "delete"),
        (b"connection", b"x-amzn-chime-tenants", "delete"),
        (b"Proxy-Connection", b"X-AMZN-CHIME-APP-KEYS", "delete"),
        (b"Connection", b"close,\tX-Amzn-Chime-App-Keys ", "delete"),
    ],
)
def test_fields_a_next_hop_could_read_otherwise_are_refused(
    name: bytes, value: bytes, message: str
) -> None:
    problem = field_problem(name, value)
    assert problem is not None and message in problem


def test_problems_show_control_characters_escaped() -> None:
    problem = field_problem(b"Foo", b"a\rX-Amzn-Chime-App-Keys: evil")
    assert problem is not None and "\\r" in problem and "\r" not in problem


@pytest.mark.parametrize(
    ("method", "target", "authority", "message"),
    [
        (b"GET\r\nX-Amzn-Chime-App-Keys: evil\r\nX:", PATH, b"", "method"),
        (b"G T", PATH, b"", "method"),
        (GET, b"/\r\nX-Amzn-Chime-App-Keys: evil\r\nX: y", b"", "request target"),
        (GET, b"/a b", b"", "request target"),
        (GET, b"/a\x00", b"", "request target"),
        (GET, PATH, b"chime.aws\r\nX-Amzn-Chime-App-Keys: evil", "authority"),
    ],
)
def test_request_line_parts_that_would_inject_lines_are_refused(
    method: bytes, target: bytes, authority: bytes, message: str
) -> None:
    problem = request_problem(method, target, authority, [])
    assert problem is not None and message in problem


def test_an_ordinary_request_passes_and_the_first_bad_field_is_named() -> None:
    fields = [(b"Host", b"signal.chime.aws"), (b"Accept", b"*/*")]
    assert request_problem(GET, b"/ws?x=1&y=%20", b"", fields) is None
    assert request_problem(b"CONNECT", b"", b"signal.chime.aws:443", fields) is None
    bad = [*fields, (b"Foo", b"a\rb"), (b"Bar ", b"c")]
    problem = request_problem(GET, PATH, b"", bad)
    assert problem is not None and "Foo" in problem


@pytest.mark.parametrize(
    "trailers",
    [
        [(b"x-amzn-chime-app-keys", b"evil")],
        [(b"X-Amzn-Chime-Tenants", b"evil")],
        [(b"x_amzn_chime_app_keys", b"evil")],
        [(b"grpc-status", b"0"), (b"foo", b"a\r\nX-Amzn-Chime-App-Keys: evil")],
        [(b"Connection", b"X-Amzn-Chime-App-Keys")],
    ],
)
def test_trailers_named_like_chime_headers_or_malformed_are_refused(
    trailers: list[tuple[bytes, bytes]],
) -> None:
    assert trailer_problem(trailers) is not None


def test_ordinary_trailers_pass() -> None:
    assert trailer_problem([(b"grpc-status", b"0"), (b"x-checksum", b"abc")]) is None
