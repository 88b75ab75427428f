"""The harness itself, checked against the echo servers directly and a plain ``mitmdump``.

Nothing here loads the addon, so these tests pass whatever the state of ``src/`` and ``addon/``;
when they fail, the harness (or the machine) is broken, not the addon.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clients import (
    curl,
    get_json,
    header_names,
    https_connection,
    open_tunnel,
    recv_exactly,
    tls_handshake_via_proxy,
    websocket_roundtrip,
)
from tests.support.proxy import (
    MitmdumpProcess,
    MitmdumpStartError,
    ProxyLauncher,
    run_expect_failure,
)
from tests.support.servers import EchoServer, free_port
from tests.support.tls import TestCA

SPOOF = ["X-Foo: one", "x-foo: two", "X-FOO: three", "X-Amzn-Chime-App-Keys: Evil"]


@pytest.fixture(scope="module")
def plain_mitmdump(module_proxy_launcher: ProxyLauncher) -> MitmdumpProcess:
    """mitmdump WITHOUT the addon: intercepts every TLS connection."""
    return module_proxy_launcher.start(None, script=None, label="plain mitmdump")


# --- the echo servers, without a proxy ---------------------------------------------------------


def test_http11_direct_keeps_case_order_duplicates(
    chime_server: EchoServer, test_ca: TestCA
) -> None:
    result = curl(
        chime_server.url("/direct?x=1"), proxy_port=None, cacert=test_ca.cert_path, headers=SPOOF
    )
    assert result.returncode == 0, result
    assert result.status == 200
    body = result.json
    assert body["method"] == "GET"
    assert body["path"] == "/direct?x=1"
    assert body["http_version"] == "HTTP/1.1"
    assert [h for h in result.headers() if h[0].lower() in ("x-foo", "x-amzn-chime-app-keys")] == [
        ("X-Foo", "one"),
        ("x-foo", "two"),
        ("X-FOO", "three"),
        ("X-Amzn-Chime-App-Keys", "Evil"),
    ]
    recorded = [r for r in chime_server.requests() if r.path == "/direct?x=1"][-1]
    assert recorded.values("x-foo") == ["one", "two", "three"]
    assert recorded.names("X-FOO") == ["X-Foo", "x-foo", "X-FOO"]
    assert recorded.raw_head is not None
    assert b"\r\nX-FOO: three\r\n" in recorded.raw_head


def test_h2_direct(chime_server: EchoServer, test_ca: TestCA) -> None:
    result = curl(
        chime_server.url("/h2"), proxy_port=None, cacert=test_ca.cert_path, http="2", headers=SPOOF
    )
    assert result.returncode == 0, result
    assert result.http_version == "2"
    assert result.json["http_version"] == "HTTP/2"
    assert result.values("x-foo") == ["one", "two", "three"]
    assert result.names("x-foo") == ["x-foo"] * 3  # curl lowercases on HTTP/2
    assert dict(result.json["pseudo_headers"])[":path"] == "/h2"


def test_websocket_direct(chime_server: EchoServer, test_ca: TestCA) -> None:
    exchange = websocket_roundtrip(
        chime_server.url("/ws", scheme="wss"),
        proxy_port=None,
        cacert=test_ca.cert_path,
        headers=[("X-Custom", "1"), ("x-custom", "2")],
        messages=["hi", b"\x00bin", "x" * 70000],
    )
    assert exchange.upgrade["path"] == "/ws"
    assert exchange.names("x-custom") == ["X-Custom", "x-custom"]
    assert exchange.echoes == ["hi", b"\x00bin", "x" * 70000]


def test_ipv6_server_direct(ipv6_server: EchoServer, test_ca: TestCA) -> None:
    assert ipv6_server.url("/") == f"https://[::1]:{ipv6_server.port}/"
    result = curl(ipv6_server.url("/v6"), proxy_port=None, cacert=test_ca.cert_path)
    assert result.returncode == 0, result
    assert result.json["path"] == "/v6"


def test_status_override(test_ca: TestCA) -> None:
    cert = test_ca.issue(["127.0.0.2"], stem="status-override")
    with EchoServer("127.0.0.2", cert=cert, status=403) as server:
        result = curl(server.url("/"), proxy_port=None, cacert=test_ca.cert_path)
        assert result.returncode == 0, result
        assert result.status == 403
        server.status = 200
        assert curl(server.url("/"), proxy_port=None, cacert=test_ca.cert_path).status == 200


def test_raw_and_close_modes(other_raw_server: EchoServer) -> None:
    with socket.create_connection((other_raw_server.host, other_raw_server.port), 5) as sock:
        sock.sendall(b"\x00\x01raw bytes\xff")
        assert recv_exactly(sock, 12) == b"\x00\x01raw bytes\xff"
    with (
        EchoServer("127.0.0.3", mode="close") as closing,
        socket.create_connection((closing.host, closing.port), 5) as sock,
    ):
        sock.settimeout(5)
        try:
            data = sock.recv(100)
        except ConnectionResetError:
            data = b""
        assert data == b""


def test_free_port_has_no_listener() -> None:
    port = free_port("127.0.0.2")
    result = curl(f"https://127.0.0.2:{port}/", proxy_port=None, max_time=5)
    assert result.returncode == 7, result  # couldn't connect


# --- a plain mitmdump (no addon) -------------------------------------------------------------


def test_mitmdump_reports_real_port(plain_mitmdump: MitmdumpProcess) -> None:
    match = re.search(r"proxy listening at 127\.0\.0\.1:(\d+)", plain_mitmdump.output())
    assert match is not None
    assert int(match.group(1)) == plain_mitmdump.port != 0
    assert plain_mitmdump.ca_cert.exists()
    assert plain_mitmdump.returncode is None


@pytest.mark.parametrize("http", ["1.1", "2"])
def test_plain_mitmdump_intercepts(
    plain_mitmdump: MitmdumpProcess, chime_server: EchoServer, test_ca: TestCA, http: str
) -> None:
    # Clients of an intercepted connection must trust mitmproxy's CA ...
    ok = curl(
        chime_server.url(f"/via-mitm-{http}"),
        proxy_port=plain_mitmdump.port,
        cacert=plain_mitmdump.ca_cert,
        http=http,  # type: ignore[arg-type]
        headers=SPOOF,
    )
    assert ok.returncode == 0, ok
    assert ok.json["http_version"] == ("HTTP/2" if http == "2" else "HTTP/1.1")
    assert ok.values("x-foo") == ["one", "two", "three"]
    # ... and one that trusts only the real server's CA fails: this is how the tests tell
    # an intercepted connection from a passed-through one.
    refused = curl(
        chime_server.url("/"),
        proxy_port=plain_mitmdump.port,
        cacert=test_ca.cert_path,
        http=http,  # type: ignore[arg-type]
    )
    assert refused.returncode == 60, refused  # peer certificate cannot be authenticated


def test_plain_mitmdump_websocket(
    plain_mitmdump: MitmdumpProcess, chime_server: EchoServer
) -> None:
    exchange = websocket_roundtrip(
        chime_server.url("/ws", scheme="wss"),
        proxy_port=plain_mitmdump.port,
        cacert=plain_mitmdump.ca_cert,
        headers=[("X-Custom", "kept")],
    )
    assert exchange.values("x-custom") == ["kept"]
    assert exchange.echoes == ["hello", b"\x00\x01binary"]


def test_plain_mitmdump_websocket_real_cert_refused(
    plain_mitmdump: MitmdumpProcess, chime_server: EchoServer, test_ca: TestCA
) -> None:
    with pytest.raises(ssl.SSLError):
        tls_handshake_via_proxy(
            proxy_port=plain_mitmdump.port,
            host=chime_server.host,
            port=chime_server.port,
            cacert=test_ca.cert_path,
        ).close()


def test_keepalive_connection_helper(
    plain_mitmdump: MitmdumpProcess, chime_server: EchoServer
) -> None:
    with https_connection(
        proxy_port=plain_mitmdump.port,
        host=chime_server.host,
        port=chime_server.port,
        cacert=plain_mitmdump.ca_cert,
    ) as conn:
        status1, body1 = get_json(conn, "/ka1", [("X-Amzn-Chime-App-Keys", "Mine")])
        status2, body2 = get_json(conn, "/ka2")
    assert (status1, status2) == (200, 200)
    assert body1["connection_id"] == body2["connection_id"]
    assert header_names(body1, "x-amzn-chime-app-keys") == ["X-Amzn-Chime-App-Keys"]


def test_plain_mitmdump_tunnels_plain_http(
    plain_mitmdump: MitmdumpProcess, chime_plain_server: EchoServer
) -> None:
    absolute = curl(chime_plain_server.url("/abs"), proxy_port=plain_mitmdump.port)
    assert absolute.returncode == 0, absolute
    assert absolute.json["path"] == "/abs"
    tunnel = curl(chime_plain_server.url("/tun"), proxy_port=plain_mitmdump.port, proxytunnel=True)
    assert tunnel.returncode == 0, tunnel
    assert tunnel.json["path"] == "/tun"
    sock = open_tunnel(plain_mitmdump.port, chime_plain_server.host, chime_plain_server.port)
    with sock:
        sock.sendall(b"GET /raw HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert json.loads(body)["path"] == "/raw"


def test_wait_for_log(plain_mitmdump: MitmdumpProcess, chime_server: EchoServer) -> None:
    mark = plain_mitmdump.mark()
    curl(chime_server.url("/logged"), proxy_port=plain_mitmdump.port, cacert=plain_mitmdump.ca_cert)
    plain_mitmdump.wait_for_log(r"GET https://127\.0\.0\.2:\d+/logged", timeout=5, since=mark)
    with pytest.raises(AssertionError, match="no log line"):
        plain_mitmdump.wait_for_log("never printed", timeout=0.3, since=mark)


# --- start-up failures -----------------------------------------------------------------------


def test_run_expect_failure_sees_exit_code(mitm_confdir: Path) -> None:
    rc, output = run_expect_failure(
        confdir=mitm_confdir, script=None, extra_args=["--set", "block_global=maybe"]
    )
    assert rc == 1
    assert "boolean" in output.lower()


def test_run_expect_failure_sees_a_running_proxy(mitm_confdir: Path) -> None:
    rc, output = run_expect_failure(confdir=mitm_confdir, script=None, grace_after_listening=0.5)
    assert rc is None
    assert "listening at" in output


@pytest.fixture
def failing_script(tmp_path: Path) -> Iterator[Path]:
    script = tmp_path / "failing.py"
    script.write_text(
        "from mitmproxy import exceptions\n"
        "class Failing:\n"
        "    def load(self, loader):\n"
        "        loader.add_option('chime_allowlist', str, '', 'test')\n"
        "    def configure(self, updated):\n"
        "        raise exceptions.OptionsError('/x/allowlist.yaml:3: apps[0].tenant: unknown')\n"
        "addons = [Failing()]\n"
    )
    yield script


def test_start_error_after_listening_line_is_detected(
    mitm_confdir: Path, failing_script: Path
) -> None:
    """mitmdump prints "listening at" and only then exits 1: the harness must not call that up."""
    rc, output = run_expect_failure(confdir=mitm_confdir, script=failing_script)
    assert rc == 1
    assert "/x/allowlist.yaml:3:" in output
    with pytest.raises(MitmdumpStartError, match="exited during start-up"):
        MitmdumpProcess(confdir=mitm_confdir, script=failing_script).start()
