"""What a slow LDAP directory does to everybody else's traffic, and what a cached identity costs.

    python bench/bench_identity.py [--freeze 3] [--probes 200]

1. Stall under a frozen directory. A real slapd on loopback is frozen (SIGSTOP: it accepts
   connections and answers nothing) while one user (bob) logs in; meanwhile another user
   (carol), authenticated before the freeze, sends small messages over her open tunnel to a
   raw echo server (127.0.0.3, passed through). Measured: the round-trip times of carol's
   messages during the freeze, and how bob's login ends. Two configurations of mitmdump with
   this addon:
     mitmproxy  mitmproxy's own `proxyauth=ldap:...` (its check searches and binds inside the
                event loop, without a timeout)
     addon      the allowlist's `identity.proxy_auth: ldap` (asked in worker threads, with a
                2-second deadline)
2. In-process cost per call of what runs for every connection once an identity is cached:
   the cached credential check (HMAC + TTL cache) and the choice of the policy among 20
   identities entries and 20 networks; and what a proxy without an identity section now runs
   per request on top of before (the identity hook, the choice through `Identities`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import timeit
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from benchlib import print_provenance  # noqa: E402
from mitmproxy.test import tflow  # noqa: E402

from chime_egress.policy.allowlist import parse_allowlist  # noqa: E402
from chime_egress.policy.client_policy import compile_client_policies  # noqa: E402
from chime_egress.policy.compiled import load_policy  # noqa: E402
from chime_egress.policy.identity import Identity  # noqa: E402
from chime_egress.proxy.current import CurrentPolicy  # noqa: E402
from chime_egress.proxy.identity import Identities, Resolver  # noqa: E402
from chime_egress.proxy.metrics import Metrics  # noqa: E402
from chime_egress.proxy.peers import client_address  # noqa: E402
from tests.support.directory import (  # noqa: E402
    PASSWORDS,
    PEOPLE,
    SERVICE_DN,
    SERVICE_PASSWORD,
    Slapd,
)
from tests.support.proxy import MitmdumpProcess  # noqa: E402

ECHO_HOST = "127.0.0.3"


def echo_server() -> int:
    server = socket.socket()
    server.bind((ECHO_HOST, 0))
    server.listen(16)

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return int(server.getsockname()[1])


def connect(proxy_port: int, port: int, user: str, timeout: float) -> tuple[socket.socket, int]:
    """CONNECT with Basic credentials; (socket, status)."""
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout)
    token = base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()
    sock.sendall(
        f"CONNECT {ECHO_HOST}:{port} HTTP/1.1\r\nHost: {ECHO_HOST}:{port}\r\n"
        f"Proxy-Authorization: Basic {token}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    status = int(head.split(b" ", 2)[1]) if head.count(b" ") >= 2 else 0
    return sock, status


def stall(
    name: str, proxy: MitmdumpProcess, slapd: Slapd, port: int, args: argparse.Namespace
) -> None:
    tunnel, status = connect(proxy.port, port, "carol", timeout=30)
    assert status == 200, f"{name}: carol's CONNECT answered {status}"
    tunnel.sendall(b"warm")
    assert tunnel.recv(16) == b"warm"
    slapd.pause()
    thaw = threading.Timer(args.freeze, slapd.resume)  # whatever the probes are waiting for
    thaw.start()
    outcome: dict[str, object] = {}

    def login() -> None:
        started = time.monotonic()
        try:
            sock, code = connect(proxy.port, port, "bob", timeout=args.freeze + 30)
            sock.close()
            outcome["status"] = code
        except OSError as error:
            outcome["status"] = f"error {error}"
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=login)
    thread.start()
    time.sleep(0.2)  # bob's CONNECT is waiting for the directory now
    rtts: list[float] = []
    tunnel.settimeout(args.freeze + 30)
    deadline = time.monotonic() + args.freeze
    while time.monotonic() < deadline and len(rtts) < args.probes:
        sent = time.monotonic()
        tunnel.sendall(b"ping")
        tunnel.recv(16)
        rtts.append(time.monotonic() - sent)
        time.sleep(max(0.0, args.freeze / args.probes - rtts[-1]))
    thaw.join()
    thread.join(args.freeze + 40)
    tunnel.close()
    rtts_ms = sorted(r * 1000 for r in rtts)
    print(
        f"  {name:<10} carol's round trips during the freeze: {len(rtts_ms)} messages, "
        f"median {statistics.median(rtts_ms):.2f} ms, max {rtts_ms[-1]:.1f} ms; "
        f"bob's login: {outcome.get('status')} after {float(outcome['seconds']):.2f} s"  # type: ignore[arg-type]
    )


def allowlist(folder: Path, slapd: Slapd, identity: bool) -> Path:
    (folder / "bind-password").write_text(SERVICE_PASSWORD + "\n")
    text = "apps: [{app_key: BenchKey}]\ndestinations: {cidrs: [127.0.0.2/32]}\n"
    if identity:
        text += (
            "identity:\n  proxy_auth: ldap\n  ldap:\n"
            f"    url: {slapd.url}\n    bind_dn: {SERVICE_DN}\n"
            f"    bind_password_file: bind-password\n    user_base: {PEOPLE}\n"
            "    timeout_seconds: 2\n"
        )
    path = folder / "allowlist.yaml"
    path.write_text(text)
    return path


def measure_stall(args: argparse.Namespace) -> None:
    print(f"1. A frozen directory for {args.freeze:g} s (median of carol's echo round trips):")
    port = echo_server()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with Slapd(folder / "slapd") as slapd:
            spec = (
                f"ldap:127.0.0.1:{slapd.port}:{SERVICE_DN}:{SERVICE_PASSWORD}:{PEOPLE}"
                "?search_filter_key=uid"
            )
            quiet = ["--set", "flow_detail=0"]
            for name, identity, extra in (
                ("mitmproxy", False, ["--set", f"proxyauth={spec}"]),
                ("addon", True, []),
            ):
                (folder / name).mkdir()
                with MitmdumpProcess(
                    confdir=folder / name / "confdir",
                    allowlist=allowlist(folder / name, slapd, identity),
                    extra_args=[*quiet, *extra],
                    label=name,
                ) as proxy:
                    print(f"  $ {' '.join(proxy.command)}")
                    stall(name, proxy, slapd, port, args)


def measure_calls() -> None:
    print("2. Per call, in process (best of 5 x 20,000 calls):")
    entries = (
        "".join(f"  - {{name: i{n}, groups: [g{n}], mode: enforce}}\n" for n in range(20))
        + "  - {name: last, users: [zoe], mode: enforce}\n"
    )
    networks = "".join(
        f"  - {{name: n{n}, clients: [10.{n}.0.0/16], mode: enforce}}\n" for n in range(20)
    )
    text = (
        "apps: [{app_key: BenchKey}]\n"
        "identity: {trusted_header: {parents: [10.255.0.1/32], groups: X-G}}\n"
        f"identities:\n{entries}networks:\n{networks}"
        "destinations: {cidrs: [127.0.0.2/32]}\n"
    )
    clients = compile_client_policies(parse_allowlist(text, Path("bench.yaml")))
    last = Identity("zoe", frozenset({"h1", "h2", "h3"}), "bench")
    select = timeit.Timer(lambda: clients.select(last, "10.19.1.1"))
    by_address = timeit.Timer(lambda: clients.select(None, "10.19.1.1"))
    with tempfile.TemporaryDirectory() as tmp:
        digest = base64.b64encode(hashlib.sha1(b"password").digest()).decode()
        (Path(tmp) / "users.htpasswd").write_text(f"zoe:{{SHA}}{digest}\n")
        settings = parse_allowlist(
            "apps: [{app_key: K}]\n"
            "identity: {proxy_auth: htpasswd, htpasswd: users.htpasswd}\n"
            "destinations: {cidrs: [127.0.0.2/32]}\n",
            Path(tmp) / "bench.yaml",
        ).identity
    assert settings is not None
    resolver = Resolver(settings, Metrics())
    loop = asyncio.new_event_loop()

    async def cached() -> bool:
        return await resolver.authenticate("zoe", "password")

    assert loop.run_until_complete(cached())  # the first check, in a worker: then cached
    check = timeit.Timer(lambda: loop.run_until_complete(cached()))
    # What a proxy without an identity section now runs per request and per CONNECT: the policy
    # choice through Identities instead of by address directly, and the CONNECT's record (the
    # addon skips the requestheaders hook without a section). With a section, a request in an
    # identified tunnel pays the hook that strips the identity headers.
    current = CurrentPolicy()
    current.publish(load_policy(_plain_allowlist()))
    identities = Identities(current, Metrics())
    flow = tflow.tflow()
    client = flow.client_conn
    address = client_address(client)
    plain = timeit.Timer(lambda: current.policy.clients.for_client(address))
    through = timeit.Timer(lambda: identities.client_policy(client, flow))

    def run(coroutine: Coroutine[Any, Any, None]) -> None:
        with contextlib.suppress(StopIteration):
            coroutine.send(None)  # these return at once: no event loop needed

    header_settings = parse_allowlist(
        "apps: [{app_key: K}]\n"
        "identity: {trusted_header: {parents: [10.0.0.1/32], groups: X-Authenticated-Groups}}\n"
        "destinations: {cidrs: [127.0.0.2/32]}\n",
        Path("bench.yaml"),
    ).identity
    tunneled = Identities(current, Metrics())
    tunneled.update(header_settings)
    run(tunneled.http_connect(flow))  # the tunnel's CONNECT: nobody to ask from this client

    def hook() -> None:
        run(tunneled.requestheaders(flow))

    def connect_hook() -> None:
        run(identities.http_connect(flow))

    for label, timer in (
        ("select: 21st identities entry, by user", select),
        ("select: nobody known, 20th network", by_address),
        ("cached credential check (incl. one event-loop run)", check),
        ("no identity section: policy by address directly", plain),
        ("no identity section: the same through Identities", through),
        ("identity section, in a tunnel: the requestheaders hook", timeit.Timer(hook)),
        ("no identity section: the http_connect hook", timeit.Timer(connect_hook)),
    ):
        best = min(timer.repeat(5, 20_000)) / 20_000
        print(f"  {label:<56} {best * 1e6:.2f} us")
    loop.close()
    resolver.close()
    tunneled.close()


def _plain_allowlist() -> Path:
    folder = Path(tempfile.mkdtemp())
    path = folder / "allowlist.yaml"
    path.write_text("apps: [{app_key: K}]\ndestinations: {cidrs: [127.0.0.2/32]}\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--freeze", type=float, default=3.0, help="seconds the directory hangs")
    parser.add_argument("--probes", type=int, default=200, help="messages sent during it")
    args = parser.parse_args()
    import mitmproxy.version

    print_provenance(
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"mitmproxy {mitmproxy.version.VERSION}"
    )
    measure_stall(args)
    measure_calls()


if __name__ == "__main__":
    main()
