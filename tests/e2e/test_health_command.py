"""`chime-egress health`, the container health check, against a real running mitmdump.

The probe must say healthy for the proxy with the addon (mitmproxy 11 and 12), unhealthy for
anything else on the port, and must not make the proxy connect anywhere.
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
    assert result.stdout.startswith(f"healthy: 127.0.0.1:{proxy.port}: mitmproxy ")
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
    assert "an HTTP server that is not mitmproxy" in result.stderr


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
