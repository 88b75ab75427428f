"""Chime media (TURN over TLS) is passed through undecrypted; everything unsure is intercepted.

The media server has a certificate for the TURN host name, signed by the test CA. A client that
trusts only the test CA completes its handshake only if the proxy passed the connection through;
one that trusts only mitmproxy's CA completes it only if the proxy intercepted.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.asserts import assert_chime_headers
from tests.support.clients import open_tunnel
from tests.support.config import App, write_config
from tests.support.proxy import LISTEN_HOST, MitmdumpProcess, ProxyLauncher
from tests.support.servers import EchoServer
from tests.support.tls import TestCA, client_context

CHIME_IP = "127.0.0.2"
TURN_HOST = "ice.x1.ue1.m.chime.aws"
SIGNAL_HOST = "signal.m1.ue1.app.chime.aws"
APPS = [App("AppKey1", tenants=["orgId"])]


@pytest.fixture(scope="module")
def media_server(test_ca: TestCA) -> Iterator[EchoServer]:
    cert = test_ca.issue([TURN_HOST, SIGNAL_HOST, CHIME_IP], stem="media")
    with EchoServer(CHIME_IP, mode="tls", cert=cert, name="media") as server:
        yield server


@pytest.fixture(scope="module")
def proxy(
    module_proxy_launcher: ProxyLauncher, tmp_path_factory: pytest.TempPathFactory
) -> MitmdumpProcess:
    allowlist = write_config(tmp_path_factory.mktemp("media"), APPS, cidrs=["127.0.0.2/32"])
    return module_proxy_launcher.start(allowlist, label="media")


def tunnel(proxy: MitmdumpProcess, port: int, extra_headers: str = "") -> socket.socket:
    if not extra_headers:
        return open_tunnel(proxy.port, CHIME_IP, port)
    sock = socket.create_connection((LISTEN_HOST, proxy.port), timeout=10)
    authority = f"{CHIME_IP}:{port}"
    sock.sendall(
        f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{extra_headers}\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        assert chunk, f"proxy closed the CONNECT: {response!r}"
        response += chunk
    assert response.startswith(b"HTTP/1.1 200"), response
    return sock


def handshake(
    sock: socket.socket, cafile: Path, server_name: str, alpn: tuple[str, ...]
) -> ssl.SSLSocket:
    context = client_context(cafile, alpn=alpn)
    return context.wrap_socket(sock, server_hostname=server_name)


def get(tls: ssl.SSLSocket, host: str) -> dict[str, object]:
    """One HTTP/1.1 request over an established TLS socket; the echo server's JSON."""
    tls.sendall(f"GET /media HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    raw = b""
    while chunk := tls.recv(65536):
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), raw[:300]
    result: dict[str, object] = json.loads(body)
    return result


def test_turn_tls_to_a_media_host_is_passed_through(
    proxy: MitmdumpProcess, media_server: EchoServer, test_ca: TestCA
) -> None:
    mark = proxy.mark()
    with handshake(tunnel(proxy, media_server.port), test_ca.cert_path, TURN_HOST, ()) as tls:
        # Only the media server's own certificate verifies against the test CA.
        body = get(tls, TURN_HOST)
    names = [str(name).lower() for name, _ in body["headers"]]  # type: ignore[attr-defined]
    assert "x-amzn-chime-app-keys" not in names
    line = proxy.wait_for_log(r"chime: passing media through .*", since=mark)
    assert TURN_HOST in line.group(0) and "media host" in line.group(0)


def test_connect_announcing_webrtc_is_passed_through(
    proxy: MitmdumpProcess, media_server: EchoServer, test_ca: TestCA
) -> None:
    mark = proxy.mark()
    sock = tunnel(proxy, media_server.port, "ALPN: webrtc\r\n")
    with handshake(sock, test_ca.cert_path, SIGNAL_HOST, ()) as tls:
        get(tls, SIGNAL_HOST)
    line = proxy.wait_for_log(r"chime: passing media through .*", since=mark)
    assert "CONNECT announced ALPN webrtc" in line.group(0)


def test_media_host_name_offering_http_is_intercepted(
    proxy: MitmdumpProcess, media_server: EchoServer
) -> None:
    sock = tunnel(proxy, media_server.port)
    with handshake(sock, proxy.ca_cert, TURN_HOST, ("http/1.1",)) as tls:
        body = get(tls, TURN_HOST)
    assert_chime_headers(body["headers"], "AppKey1", "AppKey1:orgId")  # type: ignore[arg-type]


def test_no_alpn_with_a_signalling_name_is_intercepted(
    proxy: MitmdumpProcess, media_server: EchoServer
) -> None:
    mark = proxy.mark()
    with handshake(tunnel(proxy, media_server.port), proxy.ca_cert, SIGNAL_HOST, ()) as tls:
        body = get(tls, SIGNAL_HOST)
    assert_chime_headers(body["headers"], "AppKey1", "AppKey1:orgId")  # type: ignore[arg-type]
    proxy.wait_for_log(rf"chime: intercepting .*SNI {SIGNAL_HOST}", since=mark)


def test_media_passthrough_refused_by_a_client_trusting_only_the_proxy(
    proxy: MitmdumpProcess, media_server: EchoServer
) -> None:
    """The converse check: a passed-through media connection is not signed by mitmproxy's CA."""
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(tunnel(proxy, media_server.port), proxy.ca_cert, TURN_HOST, ())


def test_empty_media_hosts_decrypts_media_too(
    tmp_path: Path, proxy_launcher: ProxyLauncher, media_server: EchoServer
) -> None:
    allowlist = write_config(tmp_path, APPS, cidrs=["127.0.0.2/32"])
    allowlist.write_text(allowlist.read_text() + "  media_hosts: []\n")
    proxy = proxy_launcher.start(allowlist, label="no-media-hosts")
    with handshake(tunnel(proxy, media_server.port), proxy.ca_cert, TURN_HOST, ()) as tls:
        body = get(tls, TURN_HOST)
    assert_chime_headers(body["headers"], "AppKey1", "AppKey1:orgId")  # type: ignore[arg-type]
