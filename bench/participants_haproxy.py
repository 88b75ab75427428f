"""HAProxy with deploy/haproxy.cfg in front of N proxy replicas: a target of bench_participants.py.

    python bench/bench_participants.py signaling --participants 2000 --targets direct,proxy,ha2 \\
        --proxy-command 'ha2=python bench/participants_haproxy.py --replicas 2 --port {port} \\
        -- chime-egress run --listen-host 127.0.0.1 --set confdir={confdir} \\
        --set chime_allowlist={allowlist} --set ssl_verify_upstream_trusted_ca={upstream_ca} \\
        --set chime_local_destinations={chime}/32'

Each replica is the command after `--` with its own `--listen-port` and `chime_metrics` added
(all share {confdir}'s CA and the allowlist, as replicas in production do). Once every replica
says /ready, HAProxy replaces this process, listening on --port with the shipped configuration
(tests/support/haproxy.py: loopback servers in place of Docker's DNS; the health checks,
`leastconn` and timeouts as shipped). Everything stays in the benchmark's session, so its CPU
and memory figures cover HAProxy and every replica, and stopping the session stops them all.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.haproxy import local_haproxy_config  # noqa: E402
from tests.support.metrics import probe_status  # noqa: E402
from tests.support.servers import free_port  # noqa: E402


def resolve(word: str) -> str:
    """A bare command name from this Python's bin folder first (the venv being measured)."""
    beside = Path(sys.executable).parent / word
    return str(beside) if "/" not in word and beside.exists() else word


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--port", type=int, required=True, help="where HAProxy listens")
    parser.add_argument("--haproxy", default=shutil.which("haproxy") or "/usr/sbin/haproxy")
    parser.add_argument("replica", nargs=argparse.REMAINDER, help="-- the replica's command")
    args = parser.parse_args()
    command = args.replica[1:] if args.replica[:1] == ["--"] else args.replica
    if not command:
        parser.error("give the replica's command after --")
    command = [resolve(command[0]), *command[1:]]

    servers: list[tuple[int, int]] = []
    replicas: list[subprocess.Popen[bytes]] = []
    for _ in range(args.replicas):
        port, metrics = free_port(), free_port()
        replicas.append(
            subprocess.Popen(
                [
                    *command,
                    "--listen-port",
                    str(port),
                    "--set",
                    f"chime_metrics=127.0.0.1:{metrics}",
                ]
            )
        )
        servers.append((port, metrics))
    deadline = time.monotonic() + 60
    while not all(probe_status(m, "/ready", timeout=2) == 200 for _, m in servers):
        if time.monotonic() > deadline or any(r.poll() is not None for r in replicas):
            for replica in replicas:
                replica.kill()
            print("participants_haproxy: a replica did not become ready", file=sys.stderr)
            return 1
        time.sleep(0.1)
    config = Path(tempfile.mkdtemp(prefix="bench-haproxy-")) / "haproxy.cfg"
    config.write_text(local_haproxy_config(args.port, servers), encoding="utf-8")
    sys.stdout.flush()
    # HAProxy takes this process's place: the replicas stay its children, in the same session.
    os.execv(args.haproxy, [args.haproxy, "-db", "-f", str(config)])


if __name__ == "__main__":
    sys.exit(main())
