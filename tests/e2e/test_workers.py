"""`chime-egress run --workers N`: several proxies behind one port, each one the whole addon.

Real processes on loopback: every worker injects exactly the configured headers, a reload of the
allowlist reaches every worker, the supervisor's metrics port shows every worker's series and
is ready only when all are, SIGTERM drains them all (exit 0), a worker that dies takes the
replica down (exit 1), and a bad configuration is refused once, before anything starts.
"""

from __future__ import annotations

import os
import re
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.asserts import assert_chime_headers
from tests.support.clients import curl
from tests.support.config import App, write_config
from tests.support.metrics import probe_status
from tests.support.proxy import (
    LAUNCHER,
    MitmdumpProcess,
    ProxyLauncher,
    assert_clean_start_up_failure,
    run_expect_failure,
)
from tests.support.servers import EchoServer, free_port

WORKERS = 2
CONNECTIONS = 40  # new connections: the chance that all reach one of two workers is 2**-39


def start(launcher: ProxyLauncher, allowlist: Path, metrics: int, *extra: str) -> MitmdumpProcess:
    proxy = launcher.start(
        allowlist,
        script=LAUNCHER,
        extra_args=[
            "--workers",
            str(WORKERS),
            "--set",
            f"chime_metrics=127.0.0.1:{metrics}",
            "--set",
            "chime_reload_interval=0.2",
            *extra,
        ],
    )
    # Each worker says it listens on the one port; wait for all of them.
    deadline = time.monotonic() + 60
    while len(re.findall(r"proxy listening at", proxy.output())) < WORKERS:
        assert time.monotonic() < deadline, proxy.describe()
        time.sleep(0.1)
    return proxy


def series(metrics: int, name: str) -> dict[str, float]:
    """{worker: value} of a counter (summed over its other labels) from the supervisor."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if match:
            worker = re.search(r'worker="(\d+)"', match.group(1))
            assert worker is not None, line
            values[worker.group(1)] = values.get(worker.group(1), 0.0) + float(match.group(2))
    return values


def fetch_many(proxy: MitmdumpProcess, server: EchoServer, app_keys: str) -> None:
    for index in range(CONNECTIONS):  # curl opens a new connection each time
        result = curl(server.url(f"/w/{index}"), proxy_port=proxy.port, cacert=proxy.ca_cert)
        assert result.status == 200, result
        assert_chime_headers(result.headers(), app_keys, None, context=result)


def test_every_worker_injects_and_every_worker_reloads(
    proxy_launcher: ProxyLauncher, tmp_path: Path, chime_server: EchoServer
) -> None:
    allowlist = write_config(tmp_path / "config", [App("AppKeyA")])
    metrics = free_port()
    proxy = start(proxy_launcher, allowlist, metrics)
    fetch_many(proxy, chime_server, "AppKeyA")
    injected = series(metrics, "chime_egress_requests_injected_total")
    assert sorted(injected) == ["0", "1"] and all(v > 0 for v in injected.values()), injected
    assert probe_status(metrics, "/ready") == 200 and probe_status(metrics, "/live") == 200

    write_config(tmp_path / "config", [App("AppKeyB")])
    deadline = time.monotonic() + 30
    while True:
        reloads = series(metrics, "chime_egress_reloads_total")
        if len(reloads) == WORKERS and all(v >= 1 for v in reloads.values()):
            break
        assert time.monotonic() < deadline, f"not every worker reloaded: {reloads}"
        time.sleep(0.2)
    fetch_many(proxy, chime_server, "AppKeyB")


def test_sigterm_drains_every_worker(
    proxy_launcher: ProxyLauncher, tmp_path: Path, chime_server: EchoServer
) -> None:
    allowlist = write_config(tmp_path / "config", [App("AppKeyA")])
    metrics = free_port()
    proxy = start(proxy_launcher, allowlist, metrics, "--set", "chime_drain_seconds=2")
    assert proxy.pid is not None
    os.kill(proxy.pid, signal.SIGTERM)
    deadline = time.monotonic() + 2 + 8 + 20
    while proxy.returncode is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proxy.returncode == 0, proxy.describe()
    assert len(re.findall(r"draining: no longer accepting", proxy.output())) == WORKERS


def test_a_worker_that_dies_takes_the_replica_down(
    proxy_launcher: ProxyLauncher, tmp_path: Path
) -> None:
    allowlist = write_config(tmp_path / "config", [App("AppKeyA")])
    metrics = free_port()
    proxy = start(proxy_launcher, allowlist, metrics)
    workers = _children(proxy.pid)
    assert len(workers) == WORKERS, workers
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while proxy.returncode is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proxy.returncode == 1, proxy.describe()
    proxy.wait_for_log(rf"worker pid {workers[0]} ended by itself")
    for pid in workers[1:]:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), f"worker {pid} still runs"


def test_a_bad_configuration_is_refused_once_before_any_worker_starts(
    mitm_confdir: Path, tmp_path: Path
) -> None:
    allowlist = tmp_path / "allowlist.yaml"
    allowlist.write_text("apps: [{app_key: A, tenants: [x]}]\ndestinations: {cidrs: []}\n")
    rc, output = run_expect_failure(
        confdir=mitm_confdir,
        script=LAUNCHER,
        allowlist=allowlist,
        extra_args=["--workers", str(WORKERS)],
        cwd=tmp_path,
    )
    assert rc == 1, output
    assert output.count("'x' is 1 character long") == 1, output
    assert_clean_start_up_failure(output)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_uvloop(
    proxy_launcher: ProxyLauncher, tmp_path: Path, chime_server: EchoServer, workers: str
) -> None:
    allowlist = write_config(tmp_path / "config", [App("AppKeyA")])
    proxy = proxy_launcher.start(
        allowlist, script=LAUNCHER, extra_args=["--event-loop", "uvloop", "--workers", workers]
    )
    result = curl(chime_server.url("/uvloop"), proxy_port=proxy.port, cacert=proxy.ca_cert)
    assert_chime_headers(result.headers(), "AppKeyA", None, context=result)


def _children(pid: int | None) -> list[int]:
    assert pid is not None
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii")
    return [int(child) for child in text.split()]


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text(encoding="ascii").split()[2] == "Z"
    except OSError:
        return True
