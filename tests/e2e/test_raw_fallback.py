"""An intercepted Chime connection is HTTP or nothing: mitmproxy's raw-TCP fallback never relays it.

mitmproxy picks its raw TCP relay for a tunnel whose first read does not look like HTTP (one byte,
a leading CRLF, no ALPN), or that `tcp_hosts` names. The attack: CONNECT to Chime, TLS without
ALPN (or plain HTTP), then the request in parts with a pause after the first, carrying the
client's own X-Amzn-Chime-App-Keys. A raw recording upstream on the Chime address judges every
byte that arrives (h11, http.client, Node's lenient parser).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import CHIME_IP
from tests.support.config import App, write_config
from tests.support.proxy import MitmdumpProcess, ProxyLauncher
from tests.support.recorder import RecordingServer
from tests.support.smuggle import (
    assert_every_request_exact,
    split_at,
    status_codes,
    through_tunnel,
)
from tests.support.tls import TestCA

APPS = [App("AppKey1", tenants=["orgId"])]
EVIL = b"X-Amzn-Chime-App-Keys: evil\r\nX-Amzn-Chime-Tenants: evil:x\r\n"
REQUEST_LINE = b"GET /raw-fallback HTTP/1.1\r\n"


def request(host: str, version: bytes = b"HTTP/1.1", path: bytes = b"/raw-fallback") -> bytes:
    return (
        b"GET " + path + b" " + version + b"\r\nHost: " + host.encode() + b"\r\n" + EVIL + b"\r\n"
    )


@pytest.fixture(scope="module")
def tls_recorder(test_ca: TestCA) -> Iterator[RecordingServer]:
    cert = test_ca.issue([CHIME_IP], stem="recorder-tls")
    with RecordingServer(CHIME_IP, cert=cert, alpn=(), name="recorder-tls") as server:
        yield server


@pytest.fixture(scope="module")
def plain_recorder() -> Iterator[RecordingServer]:
    with RecordingServer(CHIME_IP, name="recorder-plain") as server:
        yield server


# `tcp_hosts=.*` would ask mitmproxy to relay everything raw; the addon refuses that setting at
# start and at run time (tests/e2e/test_lifetime.py), so only the heuristic is left to attack.
@pytest.fixture(scope="module", params=["default"])
def proxy(
    request: pytest.FixtureRequest,
    module_proxy_launcher: ProxyLauncher,
    tmp_path_factory: pytest.TempPathFactory,
) -> MitmdumpProcess:
    """The addon as shipped, and with `tcp_hosts=.*` asking mitmproxy to relay everything raw."""
    extra = ["--set", "tcp_hosts=.*"] if request.param == "tcp_hosts" else []
    config = write_config(tmp_path_factory.mktemp("raw-fallback"), APPS, cidrs=[f"{CHIME_IP}/32"])
    return module_proxy_launcher.start(config, extra_args=extra, label=f"raw-{request.param}")


@pytest.fixture
def recorders(
    tls_recorder: RecordingServer, plain_recorder: RecordingServer
) -> Iterator[tuple[RecordingServer, RecordingServer]]:
    tls_recorder.clear()
    plain_recorder.clear()
    yield tls_recorder, plain_recorder


def test_tls_without_alpn_first_byte_alone(
    proxy: MitmdumpProcess, recorders: tuple[RecordingServer, RecordingServer]
) -> None:
    tls, _ = recorders
    data = request(tls.authority)
    answer = through_tunnel(proxy.port, CHIME_IP, tls.port, split_at(data, 1), tls_ca=proxy.ca_cert)
    assert status_codes(answer) == [200], answer
    assert_every_request_exact(tls, at_least=1)


def test_tls_without_alpn_leading_crlf(
    proxy: MitmdumpProcess, recorders: tuple[RecordingServer, RecordingServer]
) -> None:
    tls, _ = recorders
    data = b"\r\n" + request(tls.authority)
    answer = through_tunnel(proxy.port, CHIME_IP, tls.port, split_at(data, 2), tls_ca=proxy.ca_cert)
    assert_every_request_exact(tls, context=answer)
    assert b"evil" not in answer


def test_plain_http_inside_connect_split_at_every_offset_of_the_request_line(
    proxy: MitmdumpProcess, recorders: tuple[RecordingServer, RecordingServer]
) -> None:
    _, plain = recorders
    data = request(plain.authority)
    offsets = range(1, len(REQUEST_LINE) + 1)

    def attack(offset: int) -> bytes:
        return through_tunnel(proxy.port, CHIME_IP, plain.port, split_at(data, offset))

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(attack, offsets))
    assert all(status_codes(a) == [200] for a in answers), answers
    assert_every_request_exact(plain, at_least=len(offsets))


@pytest.mark.parametrize(
    "shape",
    ["http/1.0", "pipelined", "crlf-then-request", "one-byte-parts", "garbage-first"],
)
def test_odd_shapes_of_plain_http_inside_connect(
    proxy: MitmdumpProcess, recorders: tuple[RecordingServer, RecordingServer], shape: str
) -> None:
    _, plain = recorders
    one = request(plain.authority)
    parts = {
        "http/1.0": split_at(request(plain.authority, b"HTTP/1.0"), 1),
        "pipelined": split_at(one + request(plain.authority, path=b"/second"), 3),
        "crlf-then-request": [b"\r\n", one],
        "one-byte-parts": [one[i : i + 1] for i in range(12)] + [one[12:]],
        "garbage-first": [b"\x00\x01\x02", one],
    }[shape]
    answer = through_tunnel(proxy.port, CHIME_IP, plain.port, parts, pause=0.15)
    assert_every_request_exact(plain, context=answer)


def test_tls_with_alpn_split_still_gets_the_headers(
    proxy: MitmdumpProcess, recorders: tuple[RecordingServer, RecordingServer]
) -> None:
    tls, _ = recorders
    data = request(tls.authority)
    answer = through_tunnel(
        proxy.port,
        CHIME_IP,
        tls.port,
        split_at(data, 1, 5),
        tls_ca=proxy.ca_cert,
        alpn=("http/1.1",),
    )
    assert status_codes(answer) == [200], answer
    assert_every_request_exact(tls, at_least=1)


def test_the_replacement_is_logged(proxy: MitmdumpProcess, tmp_path: Path) -> None:
    assert proxy.log_lines("read as HTTP instead"), proxy.describe()
