"""Graceful shutdown under load (issue 18): SIGTERM with N intercepted WebSockets open.

For each entry (`chime-egress run`, `mitmdump -s addon/chime_headers.py`, and plain mitmdump
with `--modify-headers` as the reference that has no drain), N WebSockets join through the proxy
to a local TLS server and exchange a message each; then SIGTERM. Measured: how long until a new
connection is refused, until /ready says 503, until every WebSocket is closed, until the process
exits, and its exit code. The drain deadline (`chime_drain_seconds`) is the same for all.
With --closed-first S, the participants close their WebSockets first and the signal comes S
seconds later: the issue's own measurement (a proxy that had carried meetings, now idle).

    PYTHONPATH=$PWD/src python bench/bench_drain.py --participants 2000 --drain 10
    PYTHONPATH=$PWD/src python bench/bench_drain.py --participants 2000 --drain 10 --closed-first 2
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

from benchlib import print_provenance  # noqa: E402

from tests.support.config import App, write_config  # noqa: E402
from tests.support.crowd import Crowd  # noqa: E402
from tests.support.metrics import probe_status  # noqa: E402
from tests.support.proxy import (  # noqa: E402
    ADDON_SCRIPT,
    LAUNCHER,
    MitmdumpProcess,
)
from tests.support.servers import EchoServer, free_port  # noqa: E402
from tests.support.tls import TestCA  # noqa: E402

CHIME = "127.0.0.2"
GIVE_UP = 120.0  # seconds after the signal: a process still running then "did not exit"


@dataclass
class Result:
    entry: str
    joined: int
    join_seconds: float
    refused_after: float | None
    not_ready_after: float | None
    all_closed_after: float | None
    exit_after: float | None
    exit_code: int | None


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def measure(
    entry: str,
    participants: int,
    drain: float,
    ca: TestCA,
    server: EchoServer,
    work: Path,
    closed_first: float | None = None,
) -> Result:
    allowlist = write_config(work / entry / "config", [App("AppKey1")])
    metrics = free_port()
    extra = [
        "--set",
        f"chime_drain_seconds={drain:g}",
        "--set",
        f"chime_metrics=127.0.0.1:{metrics}",
    ]
    script: Path | str | None = LAUNCHER if entry == "chime-egress run" else ADDON_SCRIPT
    if entry == "mitmdump --modify-headers":
        script = None
        extra = ["--modify-headers", "/~q/X-Amzn-Chime-App-Keys/AppKey1"]
    proxy = MitmdumpProcess(
        confdir=work / "confdir",
        script=script,
        allowlist=allowlist if script is not None else None,
        upstream_ca=ca.cert_path,
        extra_args=extra,
        label=entry,
    )
    proxy.startup_timeout = 60
    proxy.start()
    url = f"wss://{CHIME}:{server.port}/drain"
    crowd = Crowd(url, proxy_port=proxy.port, cacert=proxy.ca_cert, concurrency=100)
    started = time.monotonic()
    crowd.join(participants, timeout=900)
    join_seconds = time.monotonic() - started
    assert crowd.exchange(timeout=300) == participants, "not every WebSocket answered"
    assert proxy.pid is not None
    if closed_first is not None:
        crowd.close()
        time.sleep(closed_first)
    signalled = time.monotonic()
    os.kill(proxy.pid, signal.SIGTERM)
    refused_after = not_ready_after = all_closed_after = exit_after = None
    while time.monotonic() - signalled < GIVE_UP:
        now = time.monotonic() - signalled
        if refused_after is None and refuses(proxy.port):
            refused_after = now
        if (
            not_ready_after is None
            and script is not None
            and probe_status(metrics, "/ready", timeout=2) != 200
        ):
            not_ready_after = now
        if closed_first is None and all_closed_after is None and crowd.closed() == participants:
            all_closed_after = now
        if proxy.returncode is not None:
            exit_after = now
            break
        time.sleep(0.02)
    code = proxy.returncode
    proxy.stop()
    crowd.stop()
    return Result(
        entry,
        participants,
        round(join_seconds, 1),
        _rounded(refused_after),
        _rounded(not_ready_after),
        _rounded(all_closed_after),
        _rounded(exit_after),
        code,
    )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=2000)
    parser.add_argument("--drain", type=float, default=10.0)
    parser.add_argument(
        "--entries",
        default="chime-egress run,mitmdump -s,mitmdump --modify-headers",
        help="comma-separated, from: chime-egress run, mitmdump -s, mitmdump --modify-headers",
    )
    parser.add_argument(
        "--closed-first",
        type=float,
        metavar="S",
        help="close every WebSocket first, signal S seconds later",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print_provenance(f"{os.cpu_count()} cores, Python {sys.version.split()[0]}")
    work = Path(tempfile.mkdtemp(prefix="bench-drain-"))
    ca = TestCA.create(work / "ca")
    results = []
    cert = ca.issue([CHIME], stem="chime")
    with EchoServer(CHIME, mode="tls", cert=cert, name="chime") as server:
        for entry in args.entries.split(","):
            results.append(
                measure(
                    entry.strip(),
                    args.participants,
                    args.drain,
                    ca,
                    server,
                    work,
                    args.closed_first,
                )
            )
    what = (
        f"{args.participants} open intercepted WebSockets"
        if args.closed_first is None
        else f"{args.participants} intercepted WebSockets closed {args.closed_first:g} s before"
    )
    print(
        f"\nSIGTERM with {what}, chime_drain_seconds={args.drain:g} (seconds after the signal):\n"
    )
    print(
        "| entry | joins took | new connections refused | /ready 503 | all closed | exit | code |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        cells = [r.refused_after, r.not_ready_after, r.all_closed_after, r.exit_after]
        shown = ["-" if c is None else f"{c:g}" for c in cells]
        print(f"| {r.entry} | {r.join_seconds:g} s | " + " | ".join(shown) + f" | {r.exit_code} |")
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
