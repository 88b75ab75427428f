"""Non-Chime destinations are passed through raw; Chime destinations are intercepted.

127.0.0.2 is the Chime address (``cidrs``), 127.0.0.3 is not. A client that trusts ONLY the test CA
and succeeds through the proxy has seen the real server certificate: the connection was not
decrypted. A client that trusts only mitmproxy's CA fails there, and succeeds to 127.0.0.2.
"""

from __future__ import annotations

import re
import socket
import ssl
import uuid
from typing import Literal

import pytest

from tests.support.asserts import assert_chime_headers, assert_no_chime_headers_added
from tests.support.clients import (
    curl,
    header_pairs,
    open_tunnel,
    recv_exactly,
    tls_handshake_via_proxy,
    websocket_roundtrip,
)
from tests.support.config import App, write_config
from tests.support.proxy import MitmdumpProcess, ProxyLauncher
from tests.support.servers import EchoServer
from tests.support.tls import TestCA

SPOOFED = ["x-amzn-chime-app-keys: Evil", "X-AMZN-CHIME-TENANTS: Evil:x1", "X-Other: 1"]
APP_KEYS = "AppKey1,AppKey2"
TENANTS = "AppKey1:orgId"


@pytest.fixture(scope="module")
def proxy(
    module_proxy_launcher: ProxyLauncher, tmp_path_factory: pytest.TempPathFactory
) -> MitmdumpProcess:
    allowlist = write_config(
        tmp_path_factory.mktemp("passthrough"), [App("AppKey1", ["orgId"]), App("AppKey2")]
    )
    return module_proxy_launcher.start(allowlist, label="passthrough")


def _path() -> str:
    return f"/pass/{uuid.uuid4().hex}"


@pytest.mark.parametrize("http", ["1.1", "2"])
def test_other_tls_passed_through_unchanged(
    proxy: MitmdumpProcess,
    other_server: EchoServer,
    test_ca: TestCA,
    http: Literal["1.1", "2"],
) -> None:
    path = _path()
    via_proxy = curl(
        other_server.url(path),
        proxy_port=proxy.port,
        cacert=test_ca.cert_path,  # the real server's CA only
        http=http,
        headers=SPOOFED,
    )
    assert via_proxy.returncode == 0, via_proxy
    assert via_proxy.http_version == ("2" if http == "2" else "1.1"), via_proxy
    sent = header_pairs(SPOOFED[:2])
    if http == "2":  # curl sends lowercase names on HTTP/2
        sent = [(name.lower(), value) for name, value in sent]
    assert_no_chime_headers_added(via_proxy.headers(), sent, context=via_proxy)
    # Exactly what the same client sends without a proxy: nothing added, removed or reordered.
    direct = curl(
        other_server.url(path),
        proxy_port=None,
        cacert=test_ca.cert_path,
        http=http,
        headers=SPOOFED,
    )
    assert direct.returncode == 0, direct
    assert via_proxy.headers() == direct.headers()
    raw = [r.raw_head for r in other_server.requests() if r.path == path]
    assert len(raw) == 2
    assert raw[0] == raw[1]  # HTTP/1.1: byte for byte; HTTP/2: both None


def test_other_tls_not_intercepted(proxy: MitmdumpProcess, other_server: EchoServer) -> None:
    """Trusting only mitmproxy's CA fails: the proxy did not present its own certificate."""
    result = curl(other_server.url("/"), proxy_port=proxy.port, cacert=proxy.ca_cert)
    assert result.returncode == 60, result  # peer certificate cannot be authenticated
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_handshake_via_proxy(
            proxy_port=proxy.port,
            host=other_server.host,
            port=other_server.port,
            cacert=proxy.ca_cert,
        ).close()


def test_chime_tls_is_intercepted(
    proxy: MitmdumpProcess, chime_server: EchoServer, test_ca: TestCA
) -> None:
    """The opposite: to 127.0.0.2 the client sees mitmproxy's certificate, not the server's."""
    refused = curl(chime_server.url("/"), proxy_port=proxy.port, cacert=test_ca.cert_path)
    assert refused.returncode == 60, refused
    accepted = curl(chime_server.url("/"), proxy_port=proxy.port, cacert=proxy.ca_cert)
    assert accepted.returncode == 0, accepted
    assert_chime_headers(accepted.headers(), APP_KEYS, TENANTS, context=accepted)


def test_other_websocket_passed_through(
    proxy: MitmdumpProcess, other_server: EchoServer, test_ca: TestCA
) -> None:
    sent = header_pairs(SPOOFED)
    exchange = websocket_roundtrip(
        other_server.url(_path(), scheme="wss"),
        proxy_port=proxy.port,
        cacert=test_ca.cert_path,
        headers=sent,
    )
    assert_no_chime_headers_added(exchange.upgrade["headers"], sent, context=exchange)
    assert exchange.echoes == ["hello", b"\x00\x01binary"]


# Bytes an intercepting proxy would change or choke on: mitmproxy re-serialises an HTTP/1 request
# (the odd whitespace below comes out normalised) and waits forever for the end of the headers of
# something that is neither HTTP nor TLS.
RAW_PAYLOADS = [
    b"GET /raw HTTP/1.1\r\nhost:   odd  \r\nX-Amzn-Chime-App-Keys:Evil\r\n"
    b"x-amzn-chime-tenants:  E:x1\r\n\r\n",
    b"hello raw \x00\xff bytes\n",
    b"\x16\x03\x01\x00\x05not really TLS",
]


@pytest.mark.parametrize("payload", RAW_PAYLOADS, ids=["http-like", "binary", "tls-like"])
def test_plain_tcp_tunnel_to_other_untouched(
    proxy: MitmdumpProcess, other_raw_server: EchoServer, payload: bytes
) -> None:
    before = set(other_raw_server.raw_received())
    with open_tunnel(proxy.port, other_raw_server.host, other_raw_server.port) as sock:
        sock.settimeout(5)
        sock.sendall(payload)
        echoed = recv_exactly(sock, len(payload))
        sock.shutdown(socket.SHUT_WR)
    assert echoed == payload
    received = {k: v for k, v in other_raw_server.raw_received().items() if k not in before}
    assert list(received.values()) == [payload]


def test_plain_http_tunnel_to_other_untouched(
    proxy: MitmdumpProcess, other_plain_server: EchoServer
) -> None:
    path = _path()
    request = (
        f"GET {path} HTTP/1.1\r\nHost:   odd  \r\nX-Amzn-Chime-App-Keys:Evil\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with open_tunnel(proxy.port, other_plain_server.host, other_plain_server.port) as sock:
        sock.settimeout(5)
        sock.sendall(request)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    assert response.startswith(b"HTTP/1.1 200 "), response
    [received] = [r for r in other_plain_server.requests() if r.path == path]
    assert received.raw_head == request


def test_absolute_form_plain_http_to_other(
    proxy: MitmdumpProcess, other_plain_server: EchoServer
) -> None:
    """``curl --proxy ... http://127.0.0.3/``: the proxy parses it, but must add nothing."""
    result = curl(other_plain_server.url(_path()), proxy_port=proxy.port, headers=SPOOFED)
    assert result.returncode == 0, result
    assert result.status == 200, result
    assert_no_chime_headers_added(result.headers(), header_pairs(SPOOFED[:2]), context=result)


def test_no_intercepting_line_for_other(
    proxy: MitmdumpProcess, other_server: EchoServer, test_ca: TestCA
) -> None:
    mark = proxy.mark()
    result = curl(other_server.url("/"), proxy_port=proxy.port, cacert=test_ca.cert_path)
    assert result.returncode == 0, result
    other = re.escape(other_server.host)
    assert proxy.log_lines(rf"intercepting.*{other}", since=mark) == []
