"""Graceful shutdown: SIGTERM stops accepting at once, lets meetings finish, exits 0, never hangs.

The real proxy (the `chime-egress run` launcher and `mitmdump -s addon/chime_headers.py`) holds
0, 50 or 2,000 intercepted WebSockets to the TLS server on 127.0.0.2, and passed-through raw
tunnels. What is checked: no new connection is accepted after the signal, readiness (the metrics
port's /ready) turns 503 at once while liveness stays 200, open WebSockets keep working until
the drain deadline, are closed at it, and the process exits 0 within the deadline plus the
documented 8 s; a second signal ends it at once. How long each step took is printed (-s shows
it); the drain of 2,000 connections is benchmarked in BENCHMARKS.md, not asserted here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.clients import open_tunnel, recv_exactly
from tests.support.config import App, write_config
from tests.support.crowd import Crowd
from tests.support.proxy import LAUNCHER, MitmdumpProcess, ProxyLauncher
from tests.support.servers import EchoServer, free_port

ENTRIES = [pytest.param(LAUNCHER, id="chime-egress-run"), pytest.param(None, id="mitmdump-s")]
AFTER_DEADLINE = 8.0  # the most the process may take past chime_drain_seconds (docs)


@pytest.fixture
def allowlist(tmp_path: Path) -> Path:
    return write_config(tmp_path / "config", [App("AppKey1")])


def start(
    launcher: ProxyLauncher, allowlist: Path, entry: str | None, drain: float, metrics: int
) -> MitmdumpProcess:
    extra = [
        "--set",
        f"chime_drain_seconds={drain:g}",
        "--set",
        f"chime_metrics=127.0.0.1:{metrics}",
    ]
    if entry == LAUNCHER:
        return launcher.start(allowlist, script=LAUNCHER, extra_args=extra)
    return launcher.start(allowlist, extra_args=extra)


def probe(port: int, path: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def signal_and_wait_for_drain(
    proxy: MitmdumpProcess, signum: signal.Signals = signal.SIGTERM
) -> float:
    """SIGTERM (or `signum`); returns when the proxy says it is draining (the time it took)."""
    mark = proxy.mark()
    started = time.monotonic()
    assert proxy.pid is not None
    os.kill(proxy.pid, signum)
    proxy.wait_for_log(rf"{signum.name}: draining: no longer accepting", since=mark, timeout=10)
    return time.monotonic() - started


def wait_for_exit(proxy: MitmdumpProcess, within: float) -> float:
    started = time.monotonic()
    while proxy.returncode is None and time.monotonic() - started < within:
        time.sleep(0.05)
    assert proxy.returncode is not None, f"still running {within:g} s after the signal"
    return time.monotonic() - started


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("entry", ENTRIES)
def test_no_connections_exits_0_promptly(
    proxy_launcher: ProxyLauncher, allowlist: Path, entry: str | None, signum: signal.Signals
) -> None:
    metrics = free_port()
    proxy = start(proxy_launcher, allowlist, entry, drain=20, metrics=metrics)
    assert probe(metrics, "/ready")[0] == 200
    signal_and_wait_for_drain(proxy, signum)
    took = wait_for_exit(proxy, AFTER_DEADLINE)  # nothing to wait for: well before 20 s
    assert proxy.returncode == 0, proxy.describe()
    print(f"exit {took:.2f} s after draining began (no connections)")


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("participants", [50, 2000], ids=["50-websockets", "2000-websockets"])
def test_open_websockets_are_drained_then_closed(
    proxy_launcher: ProxyLauncher,
    allowlist: Path,
    chime_server: EchoServer,
    entry: str | None,
    participants: int,
) -> None:
    metrics = free_port()
    drain = 6.0
    proxy = start(proxy_launcher, allowlist, entry, drain=drain, metrics=metrics)
    url = f"wss://{chime_server.host}:{chime_server.port}/drain"
    with Crowd(url, proxy_port=proxy.port, cacert=proxy.ca_cert, concurrency=100) as crowd:
        crowd.join(participants, timeout=600)
        assert crowd.exchange() == participants
        signalled = time.monotonic()
        to_drain = signal_and_wait_for_drain(proxy)
        # At once: nothing new is accepted, readiness is 503, liveness 200.
        assert not accepts(proxy.port), "a new connection was accepted while draining"
        status, document = probe(metrics, "/ready")
        assert status == 503 and document["draining"] is True, document
        assert probe(metrics, "/live")[0] == 200
        not_ready = time.monotonic() - signalled
        # The meetings go on until the deadline (a sample of them, to keep well inside it)...
        assert crowd.exchange(timeout=drain - 1, sample=20) == 20
        # ... and are closed at it; the process exits 0.
        assert crowd.wait_all_closed(timeout=drain + 60) == participants
        wait_for_exit(proxy, drain + AFTER_DEADLINE + 60)
        exited = time.monotonic() - signalled
    assert proxy.returncode == 0, proxy.describe()
    # The bound, plus what a busy machine takes to deliver the signal and reap the process.
    assert exited < drain + AFTER_DEADLINE + 5, f"exited {exited:.1f} s after the signal"
    print(
        f"{participants} WebSockets: draining after {to_drain:.2f} s, not ready after "
        f"{not_ready:.2f} s, exit code 0 after {exited:.1f} s (drain {drain:g} s)"
    )


@pytest.mark.parametrize("entry", ENTRIES)
def test_connections_that_end_by_themselves_end_the_drain_early(
    proxy_launcher: ProxyLauncher,
    allowlist: Path,
    chime_server: EchoServer,
    entry: str | None,
) -> None:
    proxy = start(proxy_launcher, allowlist, entry, drain=120, metrics=free_port())
    url = f"wss://{chime_server.host}:{chime_server.port}/drain"
    with Crowd(url, proxy_port=proxy.port, cacert=proxy.ca_cert) as crowd:
        crowd.join(50)
        signal_and_wait_for_drain(proxy)
        crowd.close()
        wait_for_exit(proxy, 60)  # long before the 120 s deadline
    assert proxy.returncode == 0
    proxy.wait_for_log(r"50 connection\(s\) ended by themselves, 0 closed at the deadline")


@pytest.mark.parametrize("entry", ENTRIES)
def test_passed_through_tunnels_are_drained_too(
    proxy_launcher: ProxyLauncher,
    allowlist: Path,
    other_raw_server: EchoServer,
    entry: str | None,
) -> None:
    metrics = free_port()
    proxy = start(proxy_launcher, allowlist, entry, drain=3, metrics=metrics)
    tunnel = open_tunnel(proxy.port, other_raw_server.host, other_raw_server.port)
    with tunnel:
        tunnel.sendall(b"before")
        assert recv_exactly(tunnel, 6) == b"before"
        took = signal_and_wait_for_drain(proxy)
        assert not accepts(proxy.port), "a new connection was accepted while draining"
        assert probe(metrics, "/ready")[0] == 503
        tunnel.sendall(b"during")  # still relayed while draining
        assert recv_exactly(tunnel, 6) == b"during"
        print(f"a passed-through tunnel: draining after {took:.2f} s")
        tunnel.settimeout(3 + AFTER_DEADLINE + 30)
        assert tunnel.recv(100) == b""  # closed at the deadline
    wait_for_exit(proxy, 3 + AFTER_DEADLINE + 30)
    assert proxy.returncode == 0


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_second_signal_exits_at_once(
    proxy_launcher: ProxyLauncher,
    allowlist: Path,
    chime_server: EchoServer,
    entry: str | None,
) -> None:
    proxy = start(proxy_launcher, allowlist, entry, drain=300, metrics=free_port())
    url = f"wss://{chime_server.host}:{chime_server.port}/drain"
    with Crowd(url, proxy_port=proxy.port, cacert=proxy.ca_cert) as crowd:
        crowd.join(20)
        signal_and_wait_for_drain(proxy)
        assert proxy.pid is not None
        os.kill(proxy.pid, signal.SIGINT)
        wait_for_exit(proxy, 10)  # not the 300 s of the drain
    assert proxy.returncode == 128 + signal.SIGINT
