"""Header smuggling that would survive the strip-and-add: refused, never forwarded to Chime.

Each attack hides a Chime header (or an order to delete one) where the proxy's parser sees
something else than a server behind it could: a bare CR, an obs-fold line, a Connection option,
a trailer, CR/LF inside HTTP/2 fields that reach an HTTP/1.1 upstream. A raw recording upstream
on the Chime address judges every byte that arrives (h11, http.client, Node's lenient parser);
HTTP/2 upstreams record every header and trailer block.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CHIME_IP
from tests.support.config import App, write_config
from tests.support.proxy import MitmdumpProcess, ProxyLauncher
from tests.support.recorder import RecordingServer, chime_problems, read_http1, recording
from tests.support.smuggle import (
    APP_KEYS,
    TENANTS,
    assert_every_request_exact,
    h2_exchange,
    split_at,
    status_codes,
    through_tunnel,
    to_proxy,
)
from tests.support.tls import TestCA

APPS = [App("AppKey1", tenants=["orgId"])]

# The attacks on HTTP/1.x: the lines after the request line and Host.
ATTACKS: dict[str, bytes] = {
    "bare-cr": b"Foo: a\rX-Amzn-Chime-App-Keys: evil\r\n",
    "bare-cr-before-tenants": b"Foo: a\rX-Amzn-Chime-Tenants: evil:x\r\n",
    "obs-fold": b"Foo: bar\r\n X-Amzn-Chime-App-Keys: evil\r\n",
    "obs-fold-tab": b"Foo: bar\r\n\tX-Amzn-Chime-App-Keys: evil\r\n",
    "connection-names-them": (
        b"Connection: keep-alive, X-Amzn-Chime-App-Keys, X-Amzn-Chime-Tenants\r\n"
    ),
    "proxy-connection-names-them": b"Proxy-Connection: X-Amzn-Chime-App-Keys\r\n",
    "nul-in-value": b"Foo: a\x00X-Amzn-Chime-App-Keys: evil\r\n",
    "vertical-tab": b"Foo: a\x0bX-Amzn-Chime-App-Keys: evil\r\n",
    "underscore-name": b"X_Amzn_Chime_App_Keys: evil\r\n",
}


def attack_request(authority: str, lines: bytes, *, absolute: str = "", version: bytes = b"1.1"):
    target = f"{absolute}/smuggle".encode()
    head = b"GET " + target + b" HTTP/" + version + b"\r\nHost: " + authority.encode() + b"\r\n"
    return head + lines + b"\r\n"


@pytest.fixture(scope="module")
def plain_recorder() -> Iterator[RecordingServer]:
    yield from recording(None, name="smuggle-plain")


@pytest.fixture(scope="module")
def h1_tls_recorder(test_ca: TestCA) -> Iterator[RecordingServer]:
    yield from recording(test_ca, name="smuggle-h1")


@pytest.fixture(scope="module")
def h2_tls_recorder(test_ca: TestCA) -> Iterator[RecordingServer]:
    yield from recording(test_ca, ("h2", "http/1.1"), name="smuggle-h2")


@pytest.fixture(autouse=True)
def _fresh(
    plain_recorder: RecordingServer,
    h1_tls_recorder: RecordingServer,
    h2_tls_recorder: RecordingServer,
) -> None:
    for recorder in (plain_recorder, h1_tls_recorder, h2_tls_recorder):
        recorder.clear()


def _start(launcher: ProxyLauncher, folder: Path, *extra: str) -> MitmdumpProcess:
    config = write_config(folder, APPS, cidrs=[f"{CHIME_IP}/32"])
    return launcher.start(config, extra_args=list(extra))


@pytest.fixture(scope="module")
def proxy(
    module_proxy_launcher: ProxyLauncher, tmp_path_factory: pytest.TempPathFactory
) -> MitmdumpProcess:
    return _start(module_proxy_launcher, tmp_path_factory.mktemp("smuggle"))


@pytest.fixture(scope="module")
def lazy_proxy(
    module_proxy_launcher: ProxyLauncher, tmp_path_factory: pytest.TempPathFactory
) -> MitmdumpProcess:
    """Lazy: the upstream's protocol is chosen per request, so HTTP/2 can reach HTTP/1.1."""
    folder = tmp_path_factory.mktemp("smuggle-lazy")
    return _start(module_proxy_launcher, folder, "--set", "connection_strategy=lazy")


# Attacks that fool at least one of the judges when they reach a server as sent. The others
# (obs-fold, NUL, vertical tab) are read as one odd value by these three, but RFC 9112 forbids
# forwarding them, and parsers without obs-fold support start a new header at the fold.
FOOLING = ("bare-cr", "bare-cr-before-tenants", "connection-names-them", "underscore-name")


@pytest.mark.parametrize("attack", FOOLING)
def test_the_attacks_are_real_against_the_judges(attack: str) -> None:
    """Sent straight to a server beside the right headers, each attack is caught by a judge."""
    right = b"X-Amzn-Chime-App-Keys: AppKey1\r\nX-Amzn-Chime-Tenants: AppKey1:orgId\r\n"
    parsed = read_http1(attack_request("chime", ATTACKS[attack] + right))
    assert any(chime_problems(p, APP_KEYS, TENANTS) for p in parsed), parsed


@pytest.mark.parametrize("attack", list(ATTACKS))
@pytest.mark.parametrize("transport", ["connect-plain", "connect-tls", "absolute-form"])
def test_smuggled_http1_requests_are_refused(
    proxy: MitmdumpProcess,
    plain_recorder: RecordingServer,
    h1_tls_recorder: RecordingServer,
    attack: str,
    transport: str,
) -> None:
    recorder = h1_tls_recorder if transport == "connect-tls" else plain_recorder
    absolute = f"http://{recorder.authority}" if transport == "absolute-form" else ""
    data = attack_request(recorder.authority, ATTACKS[attack], absolute=absolute)
    if transport == "absolute-form":
        answer = to_proxy(proxy.port, [data])
    else:
        ca = proxy.ca_cert if transport == "connect-tls" else None
        answer = through_tunnel(proxy.port, CHIME_IP, recorder.port, [data], tls_ca=ca)
    assert status_codes(answer) == [400], answer
    assert_every_request_exact(recorder, context=answer)
    assert recorder.arrivals() == [] or all(not a.raw for a in recorder.arrivals())


def test_pipelining_after_a_smuggled_request_forwards_nothing(
    proxy: MitmdumpProcess, plain_recorder: RecordingServer
) -> None:
    good = attack_request(plain_recorder.authority, b"")
    bad = attack_request(plain_recorder.authority, ATTACKS["bare-cr"])
    answer = through_tunnel(proxy.port, CHIME_IP, plain_recorder.port, [good + bad + good])
    assert status_codes(answer) == [200, 400], answer
    assert_every_request_exact(plain_recorder, at_least=1, context=answer)
    assert b"Connection: close" in answer.split(b"HTTP/1.1 400")[1]


@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
def test_split_writes_and_http10_do_not_help(
    proxy: MitmdumpProcess, plain_recorder: RecordingServer, version: bytes
) -> None:
    data = attack_request(plain_recorder.authority, ATTACKS["obs-fold"], version=version)
    cut = data.index(b"\r\n ")
    answer = through_tunnel(
        proxy.port, CHIME_IP, plain_recorder.port, split_at(data, 1, cut, cut + 2), pause=0.2
    )
    assert status_codes(answer) == [400], answer
    assert_every_request_exact(plain_recorder, context=answer)


def test_ordinary_request_still_gets_exactly_the_headers(
    proxy: MitmdumpProcess, plain_recorder: RecordingServer
) -> None:
    lines = b"X-Amzn-Chime-App-Keys: mine\r\nConnection: keep-alive\r\nX-Tab: a\tb\r\n"
    answer = through_tunnel(
        proxy.port, CHIME_IP, plain_recorder.port, [attack_request(plain_recorder.authority, lines)]
    )
    assert status_codes(answer) == [200], answer
    assert_every_request_exact(plain_recorder, at_least=1)


def test_refusal_is_logged_once_with_the_reason(
    proxy: MitmdumpProcess, plain_recorder: RecordingServer
) -> None:
    since = proxy.mark()
    data = attack_request(plain_recorder.authority, ATTACKS["obs-fold"])
    answer = through_tunnel(proxy.port, CHIME_IP, plain_recorder.port, [data])
    assert status_codes(answer) == [400], answer
    proxy.wait_for_log("rejecting request from", since=since)
    time.sleep(0.5)  # a second line, were there one, would follow at once
    [line] = proxy.log_lines("rejecting request from", since=since)
    assert "never forwarded" in line and "obs-fold" in line, line
    assert "Traceback" not in proxy.output()


# --- trailers ----------------------------------------------------------------------------------


def test_http1_trailers_are_refused_cleanly(
    proxy: MitmdumpProcess, plain_recorder: RecordingServer
) -> None:
    """mitmproxy would raise on them; the addon ends the request with one clean log line."""
    mark = proxy.mark()
    data = (
        b"POST /trailers HTTP/1.1\r\nHost: " + plain_recorder.authority.encode() + b"\r\n"
        b"Transfer-Encoding: chunked\r\nTrailer: X-Amzn-Chime-App-Keys\r\n\r\n"
        b"5\r\nhello\r\n0\r\nX-Amzn-Chime-App-Keys: evil\r\n\r\n"
    )
    through_tunnel(proxy.port, CHIME_IP, plain_recorder.port, [data])
    assert_every_request_exact(plain_recorder)
    assert not any(a.raw for a in plain_recorder.arrivals()), plain_recorder.arrivals()
    proxy.wait_for_log("trailers are refused", since=mark)
    log = proxy.output()[mark:]
    assert "Traceback" not in log and "crashed" not in log, log


def test_http1_trailers_in_absolute_form_are_refused_cleanly(
    proxy: MitmdumpProcess, plain_recorder: RecordingServer
) -> None:
    """Plain HTTP through the proxy (no CONNECT) is read by the proxy's own HTTP layer."""
    mark = proxy.mark()
    authority = plain_recorder.authority.encode()
    data = (
        b"POST http://" + authority + b"/trailers HTTP/1.1\r\nHost: " + authority + b"\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Amzn-Chime-App-Keys: evil\r\n\r\n"
    )
    to_proxy(proxy.port, [data])
    assert not any(a.raw for a in plain_recorder.arrivals()), plain_recorder.arrivals()
    proxy.wait_for_log("trailers are refused", since=mark)
    log = proxy.output()[mark:]
    assert "Traceback" not in log and "crashed" not in log, log


def _h2_request(authority: str, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"POST"),
        (b":scheme", b"https"),
        (b":authority", authority.encode()),
        (b":path", b"/h2"),
        *extra,
    ]


def _h2_post_with_trailers(
    proxy: MitmdumpProcess,
    recorder: RecordingServer,
    trailers: list[tuple[bytes, bytes]],
    *extra: tuple[bytes, bytes],
) -> int | None:
    fields = _h2_request(recorder.authority, *extra)
    return h2_exchange(
        proxy.port, CHIME_IP, recorder.port, proxy.ca_cert, fields, body=b"hello", trailers=trailers
    )


@pytest.mark.parametrize(
    "trailers",
    [
        [(b"x-amzn-chime-app-keys", b"evil")],
        [(b"x-amzn-chime-tenants", b"evil:x")],
        [(b"x_amzn_chime_app_keys", b"evil")],
        [(b"foo", b"a\r\nx-amzn-chime-app-keys: evil")],
    ],
    ids=["app-keys", "tenants", "underscores", "crlf"],
)
def test_http2_request_trailers_naming_chime_headers_are_refused(
    proxy: MitmdumpProcess, h2_tls_recorder: RecordingServer, trailers: list[tuple[bytes, bytes]]
) -> None:
    status = _h2_post_with_trailers(proxy, h2_tls_recorder, trailers)
    # 400 from the addon; h2 4.2+ (mitmproxy 12) itself resets a stream with CR/LF in a field.
    assert status == 400 or (status is None and b"\n" in trailers[0][1]), status
    assert_every_request_exact(h2_tls_recorder)


def test_http2_ordinary_trailers_still_pass(
    proxy: MitmdumpProcess, h2_tls_recorder: RecordingServer
) -> None:
    status = _h2_post_with_trailers(
        proxy, h2_tls_recorder, [(b"x-checksum", b"abc")], (b"x-amzn-chime-app-keys", b"mine")
    )
    assert status == 200
    parsed = assert_every_request_exact(h2_tls_recorder, at_least=1)
    assert parsed[0].trailers == (("x-checksum", "abc"),)


# --- HTTP/2 fields with CR/LF, to HTTP/2 and (lazy strategy) HTTP/1.1 upstreams ---------------

H2_ATTACKS: dict[str, list[tuple[bytes, bytes]]] = {
    "crlf-in-value": [(b"foo", b"a\r\nX-Amzn-Chime-App-Keys: evil")],
    "lf-in-value": [(b"foo", b"a\nX-Amzn-Chime-App-Keys: evil")],
    "cr-in-value": [(b"foo", b"a\rX-Amzn-Chime-App-Keys: evil")],
    "crlf-in-name": [(b"foo\r\nx-amzn-chime-app-keys", b"evil")],
    "connection-names-them": [(b"connection", b"x-amzn-chime-app-keys")],
    "underscore-name": [(b"x_amzn_chime_app_keys", b"evil")],
}


@pytest.mark.parametrize("attack", list(H2_ATTACKS))
@pytest.mark.parametrize("upstream", ["h2", "http/1.1 (lazy)"])
def test_http2_fields_that_would_become_header_lines_are_refused(
    proxy: MitmdumpProcess,
    lazy_proxy: MitmdumpProcess,
    h2_tls_recorder: RecordingServer,
    h1_tls_recorder: RecordingServer,
    attack: str,
    upstream: str,
) -> None:
    via, recorder = (proxy, h2_tls_recorder) if upstream == "h2" else (lazy_proxy, h1_tls_recorder)
    status = h2_exchange(
        via.port,
        CHIME_IP,
        recorder.port,
        via.ca_cert,
        _h2_request(recorder.authority, *H2_ATTACKS[attack]),
    )
    assert status in (400, None)  # refused by the addon, or reset by mitmproxy's own checks
    assert_every_request_exact(recorder)


@pytest.mark.parametrize(
    ("pseudo", "value"),
    [
        (b":path", b"/\r\nX-Amzn-Chime-App-Keys: evil\r\nX: y"),
        (b":method", b"GET /\r\nX-Amzn-Chime-App-Keys: evil\r\nX:"),
        (b":authority", f"{CHIME_IP}\r\nX-Amzn-Chime-App-Keys: evil".encode()),
    ],
    ids=["path", "method", "authority"],
)
def test_http2_pseudo_headers_cannot_inject_lines_upstream(
    lazy_proxy: MitmdumpProcess, h1_tls_recorder: RecordingServer, pseudo: bytes, value: bytes
) -> None:
    fields = [(n, value if n == pseudo else v) for n, v in _h2_request(h1_tls_recorder.authority)]
    status = h2_exchange(
        lazy_proxy.port, CHIME_IP, h1_tls_recorder.port, lazy_proxy.ca_cert, fields
    )
    assert status in (400, None)
    assert_every_request_exact(h1_tls_recorder)


def test_http2_to_http1_ordinary_request_gets_exactly_the_headers(
    lazy_proxy: MitmdumpProcess, h1_tls_recorder: RecordingServer
) -> None:
    fields = _h2_request(h1_tls_recorder.authority, (b"x-amzn-chime-app-keys", b"mine"))
    status = h2_exchange(
        lazy_proxy.port, CHIME_IP, h1_tls_recorder.port, lazy_proxy.ca_cert, fields
    )
    assert status == 200
    parsed = assert_every_request_exact(h1_tls_recorder, at_least=1)
    assert all(p.fields for p in parsed)  # and each with exactly APP_KEYS (checked above)


def test_name_space_colon_is_refused(
    proxy_launcher: ProxyLauncher, tmp_path: Path, plain_recorder: RecordingServer
) -> None:
    """`Name : value` never reaches Chime: mitmproxy's own check answers 400, and the setting
    that turns that check off (`validate_inbound_headers=false`) is refused by the addon."""
    proxy = _start(proxy_launcher, tmp_path)
    data = attack_request(plain_recorder.authority, b"X-Amzn-Chime-App-Keys : evil\r\n")
    answer = through_tunnel(proxy.port, CHIME_IP, plain_recorder.port, [data])
    assert status_codes(answer) == [400], answer
    assert_every_request_exact(plain_recorder)


def test_a_streamed_request_is_ended_not_forwarded(
    proxy_launcher: ProxyLauncher, tmp_path: Path, plain_recorder: RecordingServer
) -> None:
    """With stream_large_bodies, mitmproxy sends bodies on as they come: the request is killed."""
    proxy = _start(proxy_launcher, tmp_path, "--set", "stream_large_bodies=1")
    head = attack_request(plain_recorder.authority, ATTACKS["bare-cr"] + b"Content-Length: 10\r\n")
    data = head.replace(b"GET ", b"POST ", 1) + b"0123456789"
    answer = through_tunnel(proxy.port, CHIME_IP, plain_recorder.port, split_at(data, len(head)))
    assert 200 not in status_codes(answer), answer
    assert not any(a.raw for a in plain_recorder.arrivals()), plain_recorder.arrivals()
    proxy.wait_for_log("rejecting request from")
    assert "Traceback" not in proxy.output(), proxy.describe()
