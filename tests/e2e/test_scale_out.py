"""The scale-out path, run for real: Debian's HAProxy with deploy/haproxy.cfg in front of replicas.

The shipped configuration runs as it is but for Docker's DNS (tests/support/haproxy.py): its
health check (`/ready` on each replica's metrics port), balancing and timeouts are the shipped ones.

Checked: every replica injects exactly the configured headers; a reload reaches every replica;
and a rollout: one replica drains (SIGTERM), HAProxy takes it out at once, new clients reach the
other, and a meeting's WebSocket on the draining replica is closed once and reconnects through
HAProxy (the time that takes is printed: what a rollout costs a meeting).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.asserts import assert_chime_headers
from tests.support.clients import curl
from tests.support.config import App, write_config
from tests.support.crowd import Crowd
from tests.support.haproxy import local_haproxy_config
from tests.support.metrics import probe_status
from tests.support.proxy import LAUNCHER, LISTEN_HOST, MitmdumpProcess, ProxyLauncher
from tests.support.servers import EchoServer, free_port

REPLICAS = 2
CONNECTIONS = 40  # the chance that all reach one of two replicas is negligible


class Replica:
    def __init__(self, proxy: MitmdumpProcess, metrics: int) -> None:
        self.proxy = proxy
        self.metrics = metrics

    def injected(self) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=10) as r:
            text = r.read().decode()
        return sum(
            float(match)
            for match in re.findall(
                r"^chime_egress_requests_injected_total\{.*\} (\S+)$", text, re.M
            )
        )

    def ready(self) -> int:
        return probe_status(self.metrics, "/ready")


@pytest.fixture
def haproxy_binary() -> str:
    found = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(found).exists():
        pytest.fail("these tests need Debian's haproxy (.ci/run installs it)")
    return found


def start_replicas(launcher: ProxyLauncher, allowlist: Path, drain: float) -> list[Replica]:
    replicas = []
    for index in range(REPLICAS):
        metrics = free_port()
        proxy = launcher.start(
            allowlist,
            script=LAUNCHER,
            label=f"replica {index}",
            extra_args=[
                "--set",
                f"chime_metrics=127.0.0.1:{metrics}",
                "--set",
                "chime_reload_interval=0.2",
                "--set",
                f"chime_drain_seconds={drain:g}",
            ],
        )
        replicas.append(Replica(proxy, metrics))
    return replicas


@pytest.fixture
def balance(haproxy_binary: str, tmp_path: Path) -> Iterator[Callable[[list[Replica]], int]]:
    """Starts HAProxy with the shipped configuration in front of the replicas and returns its
    port once they are ready and HAProxy counts them up; HAProxy is stopped at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(replicas: list[Replica]) -> int:
        port = free_port()
        config = tmp_path / "haproxy.cfg"
        servers = [(replica.proxy.port, replica.metrics) for replica in replicas]
        config.write_text(local_haproxy_config(port, servers), encoding="utf-8")
        started.append(run_haproxy(haproxy_binary, config, port))
        wait_until(lambda: all(r.ready() == 200 for r in replicas), "replicas ready")
        time.sleep(4.5)  # HAProxy's `rise 2` at `inter 2s`
        return port

    yield start
    for process in started:
        process.terminate()
        process.wait(10)


def run_haproxy(binary: str, config: Path, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [binary, "-db", "-f", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection((LISTEN_HOST, port), timeout=1).close()
            return process
        except OSError:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            assert time.monotonic() < deadline, "HAProxy did not listen"
            time.sleep(0.1)


def wait_until(condition: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what} not within {timeout}s"
        time.sleep(0.1)


def fetch_many(port: int, server: EchoServer, cacert: Path, app_keys: str) -> None:
    for index in range(CONNECTIONS):  # curl: a new connection each time
        result = curl(server.url(f"/lb/{index}"), proxy_port=port, cacert=cacert)
        assert result.status == 200, result
        assert_chime_headers(result.headers(), app_keys, None, context=result)


def test_every_replica_injects_and_reloads_behind_haproxy(
    proxy_launcher: ProxyLauncher,
    balance: Callable[[list[Replica]], int],
    tmp_path: Path,
    chime_server: EchoServer,
) -> None:
    allowlist = write_config(tmp_path / "config", [App("AppKeyA")])
    replicas = start_replicas(proxy_launcher, allowlist, drain=20)
    port = balance(replicas)
    cacert = replicas[0].proxy.ca_cert  # one CA shared by every replica (one confdir)
    fetch_many(port, chime_server, cacert, "AppKeyA")
    assert all(replica.injected() > 0 for replica in replicas)

    write_config(tmp_path / "config", [App("AppKeyB")])
    for replica in replicas:
        replica.proxy.wait_for_log(r"allowlist reloaded from", timeout=30)
    before = [replica.injected() for replica in replicas]
    fetch_many(port, chime_server, cacert, "AppKeyB")
    # Every replica served some of them, each with the new key (fetch_many checks each).
    assert all(r.injected() > count for r, count in zip(replicas, before, strict=True))


def test_a_rollout_costs_a_meeting_one_reconnect(
    proxy_launcher: ProxyLauncher,
    balance: Callable[[list[Replica]], int],
    tmp_path: Path,
    chime_server: EchoServer,
) -> None:
    allowlist = write_config(tmp_path / "config", [App("AppKeyA")])
    drain = 3.0
    replicas = start_replicas(proxy_launcher, allowlist, drain=drain)
    port = balance(replicas)
    cacert = replicas[0].proxy.ca_cert
    url = f"wss://{chime_server.host}:{chime_server.port}/meeting"
    with Crowd(url, proxy_port=port, cacert=cacert) as meetings:
        meetings.join(20)  # spread over both replicas by leastconn
        assert meetings.exchange() == 20
        leaving = replicas[0]
        assert leaving.proxy.pid is not None
        os.kill(leaving.proxy.pid, signal.SIGTERM)
        wait_until(lambda: leaving.ready() != 200, "the draining replica not ready", 5)
        # New clients keep arriving through HAProxy, all served by the other replica.
        fetch_many(port, chime_server, cacert, "AppKeyA")
        # The draining replica's meetings are closed once, at its deadline; each reconnects.
        closed_at = time.monotonic()
        wait_until(lambda: meetings.closed() > 0, "a meeting closed", drain + 30)
        closed = meetings.closed()
        assert 0 < closed < 20
        with Crowd(url, proxy_port=port, cacert=cacert) as reconnected:
            started = time.monotonic()
            reconnected.join(1)  # one meeting's reconnection: CONNECT, TLS, the upgrade
            took = time.monotonic() - started
            reconnected.join(closed - 1)
            assert reconnected.exchange() == closed
        print(
            f"rollout: {closed} of 20 meetings were on the replica that drained, closed "
            f"once at its {drain:g} s deadline; a reconnection through HAProxy took "
            f"{took * 1000:.0f} ms (closed {time.monotonic() - closed_at:.1f} s ago)"
        )
        wait_until(lambda: leaving.proxy.returncode is not None, "the replica exit", 20)
        assert leaving.proxy.returncode == 0
