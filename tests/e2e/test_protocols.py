"""Every way a request reaches a Chime address gets the headers: HTTP/1.1, HTTP/2, WebSocket,
plain HTTP (absolute-form and through a CONNECT tunnel), and IPv6.

127.0.0.2 and ::1 are the Chime addresses (``cidrs``); the log names each intercepted connection.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Literal

import pytest

from tests.support.asserts import assert_chime_headers
from tests.support.clients import curl, header_pairs, websocket, websocket_roundtrip
from tests.support.config import App, write_config
from tests.support.proxy import MitmdumpProcess, ProxyLauncher
from tests.support.servers import EchoServer, WsGreeting
from tests.support.tls import TestCA

APP_KEYS = "AppKey1,AppKey2"
TENANTS = "AppKey1:engineeringId,salesId"
SPOOFED = [
    "x-amzn-chime-app-keys: Evil",
    "X-AMZN-CHIME-TENANTS: Evil:x1",
    "X-Amzn-Chime-Tenants: AppKey1:evilTenant",
]


@pytest.fixture(scope="module")
def proxy(
    module_proxy_launcher: ProxyLauncher, tmp_path_factory: pytest.TempPathFactory
) -> MitmdumpProcess:
    allowlist = write_config(
        tmp_path_factory.mktemp("protocols"),
        [App("AppKey1", ["engineeringId", "salesId"], name="Engineering chat"), App("AppKey2")],
        cidrs=["127.0.0.2/32", "::1/128"],
    )
    return module_proxy_launcher.start(allowlist, label="protocols")


def _path() -> str:
    return f"/proto/{uuid.uuid4().hex}"


@pytest.mark.parametrize("http", ["1.1", "2"])
def test_https(proxy: MitmdumpProcess, chime_server: EchoServer, http: Literal["1.1", "2"]) -> None:
    result = curl(
        chime_server.url(_path()),
        proxy_port=proxy.port,
        cacert=proxy.ca_cert,
        http=http,
        headers=SPOOFED,
    )
    assert result.returncode == 0, result
    assert result.json["http_version"] == ("HTTP/2" if http == "2" else "HTTP/1.1"), result
    assert_chime_headers(result.headers(), APP_KEYS, TENANTS, http2=http == "2", context=result)


def test_websocket_upgrade(proxy: MitmdumpProcess, chime_server: EchoServer) -> None:
    exchange = websocket_roundtrip(
        chime_server.url(_path(), scheme="wss"),
        proxy_port=proxy.port,
        cacert=proxy.ca_cert,
        headers=header_pairs(SPOOFED),
        messages=["text", b"\x00\xffbinary", "z" * 100_000],
    )
    assert exchange.upgrade["websocket"] is True
    assert exchange.upgrade["http_version"] == "HTTP/1.1"
    assert_chime_headers(exchange.upgrade["headers"], APP_KEYS, TENANTS, context=exchange)
    assert exchange.echoes == ["text", b"\x00\xffbinary", "z" * 100_000]


def test_websocket_many_messages(proxy: MitmdumpProcess, chime_server: EchoServer) -> None:
    since = proxy.mark()
    with websocket(
        chime_server.url(_path(), scheme="wss"), proxy_port=proxy.port, cacert=proxy.ca_cert
    ) as conn:
        conn.recv(timeout=10)
        for i in range(50):
            conn.send(f"message {i}")
            assert conn.recv(timeout=10) == f"message {i}"
    # After the upgrade the bytes are relayed, not recorded message by message: mitmdump's
    # dumper, which prints a `client -> tcp -> server` line for every message it sees, saw none.
    time.sleep(0.3)
    relayed = [line for line in proxy.output()[since:].splitlines() if " tcp " in line]
    assert relayed == [], relayed


def test_plain_http_absolute_form(proxy: MitmdumpProcess, chime_plain_server: EchoServer) -> None:
    """``curl --proxy http://proxy http://127.0.0.2:PORT/``: no CONNECT, no TLS."""
    result = curl(chime_plain_server.url(_path()), proxy_port=proxy.port, headers=SPOOFED)
    assert result.returncode == 0, result
    assert result.status == 200, result
    assert_chime_headers(result.headers(), APP_KEYS, TENANTS, context=result)


def test_plain_http_through_connect_tunnel(
    proxy: MitmdumpProcess, chime_plain_server: EchoServer
) -> None:
    """``curl --proxytunnel``: CONNECT, then plain HTTP inside the tunnel."""
    result = curl(
        chime_plain_server.url(_path()), proxy_port=proxy.port, proxytunnel=True, headers=SPOOFED
    )
    assert result.returncode == 0, result
    assert result.status == 200, result
    assert_chime_headers(result.headers(), APP_KEYS, TENANTS, context=result)


@pytest.mark.parametrize("http", ["1.1", "2"])
def test_ipv6(
    proxy: MitmdumpProcess, ipv6_server: EchoServer, test_ca: TestCA, http: Literal["1.1", "2"]
) -> None:
    url = ipv6_server.url(_path())
    assert url.startswith("https://[::1]:")
    result = curl(url, proxy_port=proxy.port, cacert=proxy.ca_cert, http=http, headers=SPOOFED)
    assert result.returncode == 0, result
    assert_chime_headers(result.headers(), APP_KEYS, TENANTS, http2=http == "2", context=result)
    # Intercepted, not passed through: the real certificate never reached the client.
    refused = curl(url, proxy_port=proxy.port, cacert=test_ca.cert_path, http=http)
    assert refused.returncode == 60, refused


def test_ipv6_websocket(proxy: MitmdumpProcess, ipv6_server: EchoServer) -> None:
    exchange = websocket_roundtrip(
        ipv6_server.url(_path(), scheme="wss"),
        proxy_port=proxy.port,
        cacert=proxy.ca_cert,
        headers=header_pairs(SPOOFED),
    )
    assert_chime_headers(exchange.upgrade["headers"], APP_KEYS, TENANTS, context=exchange)


@pytest.mark.parametrize(
    ("server_fixture", "prefix"),
    [("chime_server", "127.0.0.2/32"), ("ipv6_server", "::1/128")],
)
def test_intercepting_log_line(
    proxy: MitmdumpProcess, request: pytest.FixtureRequest, server_fixture: str, prefix: str
) -> None:
    """One line per intercepted connection, at mitmdump's default (info) verbosity."""
    server: EchoServer = request.getfixturevalue(server_fixture)
    mark = proxy.mark()
    result = curl(server.url(_path()), proxy_port=proxy.port, cacert=proxy.ca_cert)
    assert result.returncode == 0, result
    line = proxy.wait_for_log(r"[^\n]*intercepting[^\n]*", timeout=5, since=mark).group(0)
    assert re.search(r"127\.0\.0\.1:\d+", line), f"no client address in {line!r}"  # the client
    assert server.host in line, f"no destination IP in {line!r}"
    assert prefix in line, f"no matched prefix in {line!r}"
    assert len(proxy.log_lines("intercepting", since=mark)) == 1, proxy.output()[mark:]


@pytest.mark.parametrize("greeting", ["coalesced", "delayed"])
def test_websocket_server_speaks_first(
    proxy: MitmdumpProcess, test_ca: TestCA, greeting: WsGreeting
) -> None:
    """The server's first frame in the same TCP segment as its 101 (or well after it) arrives."""
    cert = test_ca.issue(["127.0.0.2"], stem=f"ws-greeting-{greeting}")
    with EchoServer("127.0.0.2", cert=cert, ws_greeting=greeting, name=greeting) as server:
        exchange = websocket_roundtrip(
            server.url(_path(), scheme="wss"),
            proxy_port=proxy.port,
            cacert=proxy.ca_cert,
            headers=header_pairs(SPOOFED),
        )
    assert_chime_headers(exchange.upgrade["headers"], APP_KEYS, TENANTS, context=exchange)
    assert exchange.echoes == ["hello", b"\x00\x01binary"]
