"""Upstream mode: chained to a parent proxy, the addon still decides by the destination.

In `--mode upstream:http://PARENT` mitmproxy connects to the parent, so the connection's peer
address is the parent's (127.0.0.1 here), never the destination's. The decision must still follow
the destination: 127.0.0.2 (made Chime by the allowlist) gets the headers, 127.0.0.3 does not and
is passed through undecrypted. The parent is a tiny CONNECT / absolute-form proxy written here, on
127.0.0.1, that records every destination it was asked for and only ever connects to loopback.
"""

from __future__ import annotations

import ipaddress
import re
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.support.proxy as support_proxy
from tests.support.asserts import assert_chime_headers, assert_no_chime_headers_added
from tests.support.clients import curl
from tests.support.config import App, write_config
from tests.support.proxy import MitmdumpProcess, ProxyLauncher, clean_env
from tests.support.servers import EchoServer
from tests.support.tls import TestCA

APP_KEYS = "AppKey1,AppKey2"
TENANTS = "AppKey1:orgId"
SPOOF = ["X-Amzn-Chime-App-Keys: Spoofed"]
MAX_HEAD = 64 * 1024
IDLE_SECONDS = 30.0
ANY_MODE_LISTENING = re.compile(r"listening at (?:\[?[0-9a-fA-F.:]+\]?):(\d+)")


class ParentProxy:
    """A minimal HTTP proxy on 127.0.0.1: CONNECT tunnels and absolute-form plain HTTP.

    Destinations must be loopback IP literals (anything else is refused with 403), so nothing
    here can reach another address. Each connection is relayed until either side closes or it
    has been idle for IDLE_SECONDS.
    """

    def __init__(self) -> None:
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(16)
        self._server.settimeout(0.2)
        self.port: int = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._requests: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def requests(self) -> list[str]:
        """Each request line the parent received, e.g. 'CONNECT 127.0.0.2:443 HTTP/1.1'."""
        with self._lock:
            return list(self._requests)

    def __enter__(self) -> ParentProxy:
        thread = threading.Thread(target=self._accept, name="parent proxy", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(5)
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                continue
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, client: socket.socket) -> None:
        with client:
            client.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < MAX_HEAD:
                chunk = client.recv(4096)
                if not chunk:
                    return
                head += chunk
            head, _, rest = head.partition(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            with self._lock:
                self._requests.append(request_line)
            method, target, version = request_line.split(" ", 2)
            try:
                if method == "CONNECT":
                    host, port = _split_authority(target)
                    first = b""
                elif target.startswith("http://"):
                    authority, _, path = target[len("http://") :].partition("/")
                    if ":" not in authority:
                        authority += ":80"
                    host, port = _split_authority(authority)
                    origin = f"{method} /{path} {version}\r\n" + "".join(
                        f"{line}\r\n" for line in header_lines
                    )
                    first = origin.encode("latin-1") + b"\r\n" + rest
                    rest = b""
                else:
                    raise ValueError(target)
            except ValueError:  # not an IP literal, or not a proxy request
                client.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                return
            if not ipaddress.ip_address(host).is_loopback:
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            try:
                upstream = socket.create_connection((host, port), timeout=10)
            except OSError:
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            with upstream:
                if method == "CONNECT":
                    client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                upstream.sendall(first + rest)
                _relay(client, upstream, self._stop)


def _split_authority(authority: str) -> tuple[str, int]:
    host, _, port = authority.rpartition(":")
    host = host.strip("[]")
    ipaddress.ip_address(host)  # IP literals only: a ValueError ends the connection
    return host, int(port)


def _relay(a: socket.socket, b: socket.socket, stop: threading.Event) -> None:
    peers = {a: b, b: a}
    while not stop.is_set():
        readable, _, _ = select.select([a, b], [], [], IDLE_SECONDS)
        if not readable:
            return
        for sock in readable:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            peers[sock].sendall(data)


@pytest.fixture(scope="module")
def parent() -> Iterator[ParentProxy]:
    with ParentProxy() as proxy:
        yield proxy


@pytest.fixture(scope="module")
def chained(
    module_proxy_launcher: ProxyLauncher,
    parent: ParentProxy,
    tmp_path_factory: pytest.TempPathFactory,
) -> MitmdumpProcess:
    allowlist = write_config(
        tmp_path_factory.mktemp("upstream"), [App("AppKey1", ["orgId"]), App("AppKey2")]
    )
    # The harness waits for "proxy listening at"; in upstream mode mitmdump says
    # "HTTP(S) proxy (upstream mode) listening at ...". Widen its pattern for this start only.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(support_proxy, "_LISTENING", ANY_MODE_LISTENING)
        return module_proxy_launcher.start(
            allowlist,
            extra_args=["--mode", f"upstream:http://127.0.0.1:{parent.port}"],
            label="upstream mode",
        )


def test_chime_destination_gets_the_headers(
    chained: MitmdumpProcess, parent: ParentProxy, chime_server: EchoServer
) -> None:
    since = chained.mark()
    result = curl(
        chime_server.url("/upstream-chime"),
        proxy_port=chained.port,
        cacert=chained.ca_cert,
        headers=SPOOF,
    )
    assert result.status == 200, result
    assert_chime_headers(result.headers(), APP_KEYS, TENANTS, context=result)
    # It really went through the parent, which the proxy reached on 127.0.0.1 ...
    assert f"CONNECT {chime_server.authority} HTTP/1.1" in parent.requests()
    # ... and the decision named the destination, not the parent.
    [line] = chained.log_lines(r"chime: intercepting", since)
    assert f"[{chime_server.host}] matched 127.0.0.2/32" in line, chained.describe(since)


def test_chime_destination_http2(
    chained: MitmdumpProcess, parent: ParentProxy, chime_server: EchoServer
) -> None:
    result = curl(
        chime_server.url("/upstream-h2"),
        proxy_port=chained.port,
        cacert=chained.ca_cert,
        http="2",
        headers=SPOOF,
    )
    assert result.status == 200, result
    assert result.http_version == "2", result
    assert_chime_headers(result.headers(), APP_KEYS, TENANTS, http2=True, context=result)


def test_other_destination_passes_through(
    chained: MitmdumpProcess, parent: ParentProxy, other_server: EchoServer, test_ca: TestCA
) -> None:
    # The client trusts only the test CA: it succeeds only if it sees the real server's
    # certificate, i.e. the connection was relayed through both proxies undecrypted.
    result = curl(
        other_server.url("/upstream-other"),
        proxy_port=chained.port,
        cacert=test_ca.cert_path,
        headers=SPOOF,
    )
    assert result.status == 200, result
    assert_no_chime_headers_added(
        result.headers(), [("X-Amzn-Chime-App-Keys", "Spoofed")], context=result
    )
    assert f"CONNECT {other_server.authority} HTTP/1.1" in parent.requests()


def test_plain_http_through_the_parent(
    chained: MitmdumpProcess,
    parent: ParentProxy,
    chime_plain_server: EchoServer,
    other_plain_server: EchoServer,
) -> None:
    chime = curl(chime_plain_server.url("/upstream-plain"), proxy_port=chained.port)
    assert chime.status == 200, chime
    assert_chime_headers(chime.headers(), APP_KEYS, TENANTS, context=chime)
    other = curl(other_plain_server.url("/upstream-plain-other"), proxy_port=chained.port)
    assert other.status == 200, other
    assert_no_chime_headers_added(other.headers(), context=other)
    assert any(r.startswith(f"GET {chime_plain_server.url('/')}") for r in parent.requests())


def test_health_check_in_upstream_mode(chained: MitmdumpProcess, parent: ParentProxy) -> None:
    before = len(parent.requests())
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "chime-egress"),
            "health",
            "--proxy",
            f"127.0.0.1:{chained.port}",
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result
    assert len(parent.requests()) == before  # answered by the proxy itself, not the parent


def test_parent_address_in_range_does_not_make_everything_chime(
    module_proxy_launcher: ProxyLauncher,
    parent: ParentProxy,
    tmp_path_factory: pytest.TempPathFactory,
    chime_server: EchoServer,
    other_server: EchoServer,
    test_ca: TestCA,
) -> None:
    # The converse: the parent's own address (127.0.0.1) is "Chime", the destinations are not.
    allowlist = write_config(
        tmp_path_factory.mktemp("upstream-parent-in-range"),
        [App("AppKey1")],
        cidrs=["127.0.0.1/32"],
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(support_proxy, "_LISTENING", ANY_MODE_LISTENING)
        proxy = module_proxy_launcher.start(
            allowlist,
            extra_args=["--mode", f"upstream:http://127.0.0.1:{parent.port}"],
            label="upstream mode, parent in range",
        )
    for server in (chime_server, other_server):
        result = curl(
            server.url("/parent-in-range"),
            proxy_port=proxy.port,
            cacert=test_ca.cert_path,  # passes only if not decrypted
        )
        assert result.status == 200, result
        assert_no_chime_headers_added(result.headers(), context=result)
    assert proxy.log_lines(r"chime: intercepting") == []


def test_a_parent_proxy_on_loopback_is_not_a_refused_destination(
    proxy_launcher: ProxyLauncher,
    parent: ParentProxy,
    chime_server: EchoServer,
    tmp_path: Path,
) -> None:
    """Loopback is refused by default, but the parent named in --mode is the operator's choice."""
    allowlist = write_config(tmp_path, [App("AppKey1", ["orgId"]), App("AppKey2")])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(support_proxy, "_LISTENING", ANY_MODE_LISTENING)
        chained = proxy_launcher.start(
            allowlist,
            extra_args=[
                "--mode",
                f"upstream:http://127.0.0.1:{parent.port}",
                "--set",
                "chime_local_destinations=",
            ],
            label="upstream mode, loopback refused",
        )
    result = curl(
        chime_server.url("/parent-on-loopback"), proxy_port=chained.port, cacert=chained.ca_cert
    )
    assert result.status == 200, result
    assert_chime_headers(result.headers(), APP_KEYS, TENANTS, context=result)
