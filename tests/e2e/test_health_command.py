"""`chime-egress health`, the container health check, against a real running mitmdump.

The probe must say healthy for the proxy with the addon (mitmproxy 11 and 12), unhealthy for a
proxy without the addon (the fail-open state the container health check exists to catch), for
one enforcing the shipped example AppKeys, and for anything else on the port; and it must not
make the proxy connect anywhere.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.config import App, write_config
from tests.support.proxy import MitmdumpProcess, ProxyLauncher, clean_env
from tests.support.servers import EchoServer, free_port

COMMAND = Path(sys.executable).parent / "chime-egress"


def health(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(COMMAND), "health", *args],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def proxy(
    module_proxy_launcher: ProxyLauncher, tmp_path_factory: pytest.TempPathFactory
) -> MitmdumpProcess:
    allowlist = write_config(tmp_path_factory.mktemp("health"), [App("AppKey1")])
    return module_proxy_launcher.start(allowlist, label="health")


def test_healthy(proxy: MitmdumpProcess) -> None:
    since = proxy.mark()
    result = health("--proxy", f"127.0.0.1:{proxy.port}")
    assert result.returncode == 0, result
    assert result.stdout.startswith(f"healthy: 127.0.0.1:{proxy.port}: chime-egress ")
    assert "1 app," in result.stdout
    assert result.stderr == ""
    # The probe made the proxy answer by itself: no upstream connection, no error logged.
    time.sleep(0.3)
    log = proxy.output()[since:]
    assert "server connect" not in log
    assert "error" not in log.lower()
    assert "chime: refusing" not in log


def test_quiet_prints_nothing(proxy: MitmdumpProcess) -> None:
    result = health("--quiet", "--proxy", f"127.0.0.1:{proxy.port}", "--timeout", "5")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_nothing_listening() -> None:
    port = free_port()
    result = health("--proxy", f"127.0.0.1:{port}", "--timeout", "2")
    assert result.returncode == 1
    assert result.stderr.startswith(f"unhealthy: 127.0.0.1:{port}: ")
    assert "refused" in result.stderr.lower()
    assert result.stdout == ""


def test_not_http(other_raw_server: EchoServer) -> None:
    # A TCP echo sends our own request back: not an HTTP response.
    result = health("--proxy", f"{other_raw_server.host}:{other_raw_server.port}", "--timeout", "3")
    assert result.returncode == 1
    assert "not HTTP" in result.stderr


def test_http_but_not_mitmproxy(other_plain_server: EchoServer) -> None:
    result = health(
        "--proxy", f"{other_plain_server.host}:{other_plain_server.port}", "--timeout", "3"
    )
    assert result.returncode == 1
    assert "the Chime addon did not answer" in result.stderr


def test_mitmdump_without_the_addon_is_unhealthy(proxy_launcher: ProxyLauncher) -> None:
    bare = proxy_launcher.start(None, script=None, label="no addon")
    result = health("--proxy", f"127.0.0.1:{bare.port}", "--timeout", "10")
    assert result.returncode == 1, result
    assert "the Chime addon did not answer" in result.stderr


def test_enforcing_the_shipped_example_keys_is_unhealthy(
    proxy_launcher: ProxyLauncher, tmp_path: Path
) -> None:
    allowlist = write_config(tmp_path, [App("ExampleAppKey1", ("exampleOrgId",))])
    example = proxy_launcher.start(allowlist, label="example keys")
    result = health("--proxy", f"127.0.0.1:{example.port}")
    assert result.returncode == 1, result
    assert "shipped example AppKeys" in result.stderr


def test_observing_with_the_shipped_example_keys_is_healthy(
    proxy_launcher: ProxyLauncher, tmp_path: Path
) -> None:
    allowlist = write_config(tmp_path, [App("ExampleAppKey1")], mode="observe")
    observing = proxy_launcher.start(allowlist, label="observe")
    result = health("--proxy", f"127.0.0.1:{observing.port}")
    assert result.returncode == 0, result


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """Accepts connections and never answers (a hung proxy)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.2)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in accepted:
        conn.close()
    server.close()


@pytest.fixture
def trickling_listener() -> Iterator[int]:
    """Answers one byte of an HTTP response every 0.3 s, forever (a hung proxy that is alive)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                for byte in iter(lambda: b"H", None):
                    if stop.wait(0.3):
                        break
                    try:
                        conn.sendall(byte)
                    except OSError:
                        break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    server.close()


def test_trickling_proxy_times_out_as_a_whole(trickling_listener: int) -> None:
    started = time.monotonic()
    result = health("--proxy", f"127.0.0.1:{trickling_listener}", "--timeout", "1")
    assert result.returncode == 1
    assert "timed out" in result.stderr
    assert time.monotonic() - started < 10


def test_hung_proxy_times_out(silent_listener: int) -> None:
    started = time.monotonic()
    result = health("--proxy", f"127.0.0.1:{silent_listener}", "--timeout", "1")
    assert result.returncode == 1
    assert "timed out" in result.stderr
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("value", ["0", "-1", "x", "301"])
def test_bad_timeout(value: str) -> None:
    result = health("--timeout", value)
    assert result.returncode == 2
    assert "seconds" in result.stderr
