"""Requests per second through a real mitmdump: this addon against mitmproxy's own cost floors.

    python bench/bench_proxy.py [--seconds N] [--rounds N] [--connections N]
    python bench/bench_proxy.py --instructions [--configs abcde]   # needs valgrind

Runs mitmdump from the same environment as the Python running this script (so
`/tmp/v12/bin/python bench/bench_proxy.py` measures mitmproxy 12). Everything is on loopback:

  server  an asyncio HTTP/1.1 keep-alive server with TLS (its own throwaway CA), in a child
          process, listening on 127.0.0.2 (the "Chime" address) and 127.0.0.3 (any other site).
          It answers every request with a fixed small response and counts the requests that
          carry exactly the expected X-Amzn-Chime-* headers.
  client  this process (asyncio): --connections keep-alive connections per configuration
          through its proxy (CONNECT, TLS, then one GET after another on each, one request in
          flight per connection), counting the responses completed in each timed slice.
  proxy   one fresh mitmdump per configuration, with its own throwaway confdir (so its own
          CA), termlog_verbosity=warn and flow_detail=0, and the upstream verified against the
          server's CA. The four run side by side; each gets its connections opened and warmed,
          then only the configuration being measured has traffic. Two mitmdump processes with
          the same command differ by several percent in speed (measured: up to 10%), so the
          rounds are spread over --epochs sets of fresh processes. The commands are printed.

The machines are shared and noisy, so the configurations take turns in short slices of
--seconds, a,b,c,d then b,c,d,a ... for --rounds rounds, and the report gives the median
requests/s of each configuration and the ratios of the medians. For every slice it also shows
the CPU used by mitmdump, the client, the server and everything else on the machine (others:
someone else's load, i.e. noise), and mitmdump's CPU microseconds per request. Before each
slice it waits (up to --quiet-wait s) for the others to use at most --max-others cores, and
measures a slice again (up to --retries times) when they used more meanwhile; both stop
--budget s into the run, and no round starts that would end after --max-time s, so a run takes
at most about five minutes. Only complete rounds are reported.

Configurations:
  a  intercepted HTTPS with this addon (destination 127.0.0.2, in `cidrs`)
  b  plain mitmdump --modify-headers adding the same two headers (cost floor of injection)
  c  passed-through HTTPS with this addon (destination 127.0.0.3, not in `cidrs`)
  d  plain mitmdump --ignore-hosts '.*' (cost floor of passing through)
Goals (issue 2): median(a)/median(b) >= 0.95 and median(c)/median(d) >= 0.95.

  e  (optional, --configs abcde) b plus an -s script whose one addon has no hooks: what
     mitmproxy's dispatch of every event through a loaded script costs, before any addon work
  f  (optional, A/A control) exactly b's command in other processes: `--configs bf` shows how
     far apart two identical configurations come out on the machine at the time

--instructions: instead of timing, run each configuration in a fresh mitmdump under valgrind's
callgrind with instrumentation switched on only while a fixed number of requests runs, and
report machine instructions per request. Other people's load does not change that count, so
it resolves differences of a fraction of a percent that the timed mode cannot (two identical
mitmdump processes measured up to 10% apart in requests/s on these machines).

Checks (the run fails without them): in a and b the server saw the exact headers on every
request and the client saw mitmproxy's certificate; in c and d the client verified the server's
own certificate (trusting only the server's CA) and the server saw no Chime header.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import platform
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.support: the test suite's own throwaway CA

from benchlib import display_command, print_provenance  # noqa: E402

from tests.support.tls import TestCA  # noqa: E402

CHIME_HOST = "127.0.0.2"
OTHER_HOST = "127.0.0.3"
PROXY_HOST = "127.0.0.1"

# The allowlist of configurations a and c, and the headers it must produce (issue 2's grammar).
ALLOWLIST = f"""\
apps:
  - app_key: BenchAppKey1
    name: Bench app one
    tenants: [benchTenantA, benchTenantB]
  - app_key: BenchAppKey2
    tenants: [benchTenantC]
  - app_key: BenchAppKey3
destinations:
  cidrs: [{CHIME_HOST}/32]
"""
APP_KEYS = "BenchAppKey1,BenchAppKey2,BenchAppKey3"
TENANTS = "BenchAppKey1:benchTenantA,benchTenantB;BenchAppKey2:benchTenantC"
# `[/flow-filter]/name/value`; ~q matches requests (the values contain no "/").
MODIFY_HEADERS = (
    f"/~q/X-Amzn-Chime-App-Keys/{APP_KEYS}",
    f"/~q/X-Amzn-Chime-Tenants/{TENANTS}",
)

MAX_REQUESTS_PER_SLICE = 1_000_000  # per connection: a bound besides the clock
RESPONSE_BODY = b"ok\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
    + str(len(RESPONSE_BODY)).encode()
    + b"\r\n\r\n"
    + RESPONSE_BODY
)


# ---------------------------------------------------------------------------------------------
# Throwaway PKI


def make_pki(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.2 and 127.0.0.3; returns (ca, cert, key) files."""
    ca = TestCA.create(folder, common_name="bench CA")
    server = ca.issue([CHIME_HOST, OTHER_HOST], stem="server")
    return ca.cert_path, server.cert_path, server.key_path


# ---------------------------------------------------------------------------------------------
# Server (child process: `bench_proxy.py --serve CERT KEY`)


@dataclass
class ServerStats:
    connections: int = 0
    requests: int = 0
    with_expected_headers: int = 0  # exactly one copy of each header, with exactly our values
    with_any_chime_header: int = 0


_EXPECTED = {
    b"x-amzn-chime-app-keys": APP_KEYS.encode(),
    b"x-amzn-chime-tenants": TENANTS.encode(),
}


class ServerProtocol(asyncio.Protocol):
    def __init__(self, stats: dict[str, ServerStats], name: str) -> None:
        self.all_stats = stats
        self.stats = stats[name]
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.stats.connections += 1

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        replies = []
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            replies.append(self.handle(buffer[:end]))
            buffer = buffer[end + 4 :]
        self.buffer = buffer
        if replies and self.transport is not None:
            self.transport.write(b"".join(replies))

    def handle(self, head: bytes) -> bytes:
        if head.startswith(b"GET /__stats"):  # control requests, plain HTTP, not counted
            body = json.dumps({k: vars(v) for k, v in self.all_stats.items()}).encode()
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        stats = self.stats
        stats.requests += 1
        if b"chime" in head.lower():
            found: dict[bytes, list[bytes]] = {}
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name.startswith(b"x-amzn-chime-"):
                    found.setdefault(name, []).append(value.strip())
            if found:
                stats.with_any_chime_header += 1
                if found == {name: [value] for name, value in _EXPECTED.items()}:
                    stats.with_expected_headers += 1
        return RESPONSE


def server_main(cert: str, key: str) -> None:
    async def run() -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        context.set_alpn_protocols(["http/1.1"])
        stats = {"chime": ServerStats(), "other": ServerStats(), "control": ServerStats()}
        loop = asyncio.get_running_loop()

        servers = {}
        for name, host, tls in (
            ("chime", CHIME_HOST, True),
            ("other", OTHER_HOST, True),
            ("control", CHIME_HOST, False),
        ):
            servers[name] = await loop.create_server(
                lambda name=name: ServerProtocol(stats, name),
                host,
                0,
                ssl=context if tls else None,
                backlog=256,
            )
        ports = {name: server.sockets[0].getsockname()[1] for name, server in servers.items()}
        print(json.dumps(ports), flush=True)
        # Stop when the parent goes away (stdin closes) or after a hard limit.
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader.read(), timeout=3600)

    asyncio.run(run())


# ---------------------------------------------------------------------------------------------
# Client


class Connection:
    """One keep-alive client connection, through the proxy (CONNECT + TLS) or direct."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int
    ) -> None:
        self.reader = reader
        self.writer = writer
        ssl_object = writer.get_extra_info("ssl_object")
        self.peer_cert: bytes = ssl_object.getpeercert(binary_form=True)
        self.request = (
            f"GET /bench HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: chime-egress-bench\r\n"
            "Accept: */*\r\n\r\n"
        ).encode()

    @classmethod
    async def open(
        cls, proxy: tuple[str, int] | None, target: tuple[str, int], context: ssl.SSLContext
    ) -> Connection:
        host, port = target
        if proxy is None:
            reader, writer = await asyncio.open_connection(host, port, ssl=context)
            return cls(reader, writer, host, port)
        reader, writer = await asyncio.open_connection(*proxy)
        writer.write(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"CONNECT refused: {head[:80]!r}")
        await writer.start_tls(context, server_hostname=host)
        return cls(reader, writer, host, port)

    async def run(self, end: float, result: list[int], limit: int = MAX_REQUESTS_PER_SLICE) -> None:
        """Request after request until `end`; counts the responses (the last one may complete
        after `end`: the slice's rate is all responses over the time until the last one, so
        the proxy is busy for the whole of the time measured)."""
        reader, writer, request, clock = self.reader, self.writer, self.request, time.perf_counter
        done = 0
        try:
            for _ in range(min(limit, MAX_REQUESTS_PER_SLICE)):
                if clock() >= end:
                    break
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"unexpected response {head[:80]!r}")
                at = head.find(b"ontent-Length:")
                if at < 0:
                    at = head.lower().find(b"ontent-length:")
                length = int(head[at + 14 : head.index(b"\r\n", at)])
                if length:
                    await reader.readexactly(length)
                done += 1
        finally:
            result.append(done)

    def close(self) -> None:
        self.writer.close()


async def run_slice(connections: list[Connection], seconds: float) -> int:
    """Requests completed on all `connections`, sent during the next `seconds` (hard limit of
    the whole slice: `seconds` + 15 s)."""
    end = time.perf_counter() + seconds
    counts: list[int] = []
    await asyncio.wait_for(
        asyncio.gather(*(connection.run(end, counts) for connection in connections)),
        timeout=seconds + 15,
    )
    return sum(counts)


def client_context(cafile: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cafile))
    context.set_alpn_protocols(["http/1.1"])
    return context


# ---------------------------------------------------------------------------------------------
# Proxies and measurement


@dataclass(frozen=True)
class Config:
    key: str
    title: str
    target: str  # CHIME_HOST or OTHER_HOST
    intercepted: bool
    args: tuple[str, ...]


# Config e: an -s script whose one addon has no hooks, i.e. what mitmproxy's script dispatch
# costs any -s addon before it does anything.
NO_HOOKS_SCRIPT = """\
class NoHooks:
    pass


addons = [NoHooks()]
"""


def configurations(allowlist: Path, no_hooks_script: Path) -> list[Config]:
    addon = (
        "-s",
        str(REPO / "addon" / "chime_headers.py"),
        "--set",
        f"chime_allowlist={allowlist}",
        # The bench's servers are on loopback, which the addon refuses unless allowed.
        "--set",
        f"chime_local_destinations={CHIME_HOST}/32,{OTHER_HOST}/32",
    )
    modify: tuple[str, ...] = ()
    for spec in MODIFY_HEADERS:
        modify += ("--modify-headers", spec)
    return [
        Config("a", "intercepted HTTPS, this addon", CHIME_HOST, True, addon),
        Config("b", "intercepted HTTPS, --modify-headers", CHIME_HOST, True, modify),
        Config("c", "passed-through HTTPS, this addon", OTHER_HOST, False, addon),
        Config(
            "d",
            "passed-through HTTPS, --ignore-hosts '.*'",
            OTHER_HOST,
            False,
            ("--ignore-hosts", ".*"),
        ),
        Config(
            "e",
            "intercepted HTTPS, --modify-headers + an -s script without hooks",
            CHIME_HOST,
            True,
            (*modify, "-s", str(no_hooks_script)),
        ),
        Config(
            "f", "intercepted HTTPS, --modify-headers again (A/A control)", CHIME_HOST, True, modify
        ),
    ]


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def mitmdump_command(config: Config, port: int, confdir: Path, ca: Path) -> list[str]:
    mitmdump = Path(sys.executable).with_name("mitmdump")
    return [
        str(mitmdump),
        "--listen-host",
        PROXY_HOST,
        "--listen-port",
        str(port),
        "--set",
        f"confdir={confdir}",
        "--set",
        f"ssl_verify_upstream_trusted_ca={ca}",
        "--set",
        "termlog_verbosity=warn",
        "--set",
        "flow_detail=0",
        *config.args,
    ]


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (and its waited-for children), in clock ticks."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def busy_ticks() -> int:
    """Ticks all CPUs spent in processes (user, nice, system) or stolen by the hypervisor.

    Interrupt and softirq time is left out: loopback networking of our own traffic lands there.
    """
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (
        int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return user + nice + system + steal


async def wait_quiet(limit: float, max_wait: float) -> float:
    """Wait (at most `max_wait` s) until the machine's CPU use, while we are idle, is at most
    `limit` cores over a 0.25 s sample; returns the seconds waited."""
    hz = os.sysconf("SC_CLK_TCK")
    started = time.monotonic()
    while True:
        before = busy_ticks()
        await asyncio.sleep(0.25)
        if (busy_ticks() - before) / hz / 0.25 <= limit:
            break
        if time.monotonic() - started >= max_wait:
            break
    return time.monotonic() - started


def wait_listening(process: subprocess.Popen[bytes], port: int, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mitmdump exited with {process.returncode}")
        try:
            with socket.create_connection((PROXY_HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("mitmdump did not start listening")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def server_stats(control_port: int) -> dict[str, dict[str, int]]:
    with socket.create_connection((CHIME_HOST, control_port), timeout=5) as sock:
        sock.sendall(b"GET /__stats HTTP/1.1\r\nHost: bench\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += sock.recv(65536)
    result: dict[str, dict[str, int]] = json.loads(body)
    return result


@dataclass
class Proxy:
    config: Config
    command: list[str]
    process: subprocess.Popen[bytes]
    log: Path
    confdir: Path
    connections: list[Connection] = field(default_factory=list)


@dataclass
class Slice:
    config: str
    round: int
    epoch: int  # which set of mitmdump processes
    rps: float
    proxy_cpu: float  # share of one core used during the slice, by mitmdump
    client_cpu: float  # by this process
    server_cpu: float  # by the test server
    others_cpu: float  # by everything else on the machine (other people's work: noise)
    proxy_us_per_request: float
    checks: list[str]


def start_proxy(config: Config, workdir: Path, ca: Path, epoch: int) -> Proxy:
    confdir = workdir / f"confdir-{config.key}-{epoch}"
    port = free_port(PROXY_HOST)
    command = mitmdump_command(config, port, confdir, ca)
    log = workdir / f"mitmdump-{config.key}-{epoch}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    return Proxy(config, command, process, log, confdir)


def stop_proxies(proxies: list[Proxy]) -> None:
    for proxy in proxies:
        for connection in proxy.connections:
            connection.close()
        proxy.connections = []
    for proxy in proxies:
        stop(proxy.process)


def check_connection(config: Config, connection: Connection, server_cert: bytes) -> list[str]:
    if config.intercepted and connection.peer_cert == server_cert:
        return ["client saw the server's own certificate on an intercepted connection"]
    if not config.intercepted and connection.peer_cert != server_cert:
        return ["client did not see the server's own certificate on a passed-through connection"]
    return []


async def measure_slice(
    proxy: Proxy,
    round_number: int,
    epoch: int,
    seconds: float,
    ports: dict[str, int],
    server_pid: int,
) -> Slice:
    config = proxy.config
    listener = "chime" if config.target == CHIME_HOST else "other"
    before = server_stats(ports["control"])[listener]
    hz = os.sysconf("SC_CLK_TCK")
    proxy_ticks, server_ticks, busy = (
        cpu_ticks(proxy.process.pid),
        cpu_ticks(server_pid),
        busy_ticks(),
    )
    client_cpu, wall = time.process_time(), time.perf_counter()
    requests = await run_slice(proxy.connections, seconds)
    wall = time.perf_counter() - wall
    client = time.process_time() - client_cpu
    proxy_s = (cpu_ticks(proxy.process.pid) - proxy_ticks) / hz
    server_s = (cpu_ticks(server_pid) - server_ticks) / hz
    others_s = max(0.0, (busy_ticks() - busy) / hz - proxy_s - server_s - client)
    after = server_stats(ports["control"])[listener]
    seen = {key: after[key] - before[key] for key in after}
    checks = []
    if proxy.process.poll() is not None:
        checks.append("mitmdump died")
    if seen["requests"] < requests:
        checks.append(f"server saw {seen['requests']} requests, the client counted {requests}")
    if config.intercepted and seen["with_expected_headers"] != seen["requests"]:
        checks.append(
            f"only {seen['with_expected_headers']}/{seen['requests']} requests carried "
            "exactly the expected Chime headers"
        )
    if not config.intercepted and seen["with_any_chime_header"]:
        checks.append(f"{seen['with_any_chime_header']} passed-through requests had Chime headers")
    return Slice(
        config=config.key,
        round=round_number,
        epoch=epoch,
        rps=requests / wall,
        proxy_cpu=proxy_s / wall,
        client_cpu=client / wall,
        server_cpu=server_s / wall,
        others_cpu=others_s / wall,
        proxy_us_per_request=proxy_s / requests * 1e6 if requests else float("nan"),
        checks=checks,
    )


def machine() -> str:
    import mitmproxy.version

    return (
        f"nproc {len(os.sched_getaffinity(0))}, Python {platform.python_version()}, "
        f"mitmproxy {mitmproxy.version.VERSION}, OpenSSL {ssl.OPENSSL_VERSION.split()[1]}, "
        f"{platform.platform()}"
    )


def ratio_report(slices: list[Slice], left: str, right: str) -> tuple[str, float]:
    a = [s for s in slices if s.config == left]
    b = [s for s in slices if s.config == right]
    ratio = statistics.median(s.rps for s in a) / statistics.median(s.rps for s in b)
    paired = [x.rps / y.rps for x, y in zip(a, b, strict=True)]
    per_set = [
        statistics.median(s.rps for s in a if s.epoch == epoch)
        / statistics.median(s.rps for s in b if s.epoch == epoch)
        for epoch in sorted({s.epoch for s in a})
    ]
    cpu = statistics.median(s.proxy_us_per_request for s in b) / statistics.median(
        s.proxy_us_per_request for s in a
    )
    text = (
        f"{left}/{right} = {ratio:.3f}"
        + (
            f"  (goal >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'})"
            if (left, right) in (("a", "b"), ("c", "d"))
            else ""
        )
        + f"\n    median of the per-round ratios {statistics.median(paired):.3f} "
        f"(min {min(paired):.3f}, max {max(paired):.3f}); "
        f"by mitmdump CPU per request ({right} over {left}): {cpu:.3f}"
        f"\n    per set of mitmdump processes: {', '.join(f'{r:.3f}' for r in per_set)}"
    )
    return text, ratio


async def bench(args: argparse.Namespace) -> int:
    started = datetime.datetime.now().astimezone()
    run_start = time.monotonic()
    print_provenance(machine(), started)
    if not args.instructions:
        print(
            f"load: {args.connections} keep-alive connections per configuration, HTTP/1.1 GET, "
            f"one request at a time per connection; {args.rounds} rounds x {args.seconds:g} s "
            "per configuration, order rotated each round"
        )
    workdir = Path(tempfile.mkdtemp(prefix="chime-bench-"))
    ca, cert, key = make_pki(workdir)
    server_cert = server_cert_der(cert)
    allowlist = workdir / "allowlist.yaml"
    allowlist.write_text(ALLOWLIST)
    no_hooks = workdir / "no_hooks_addon.py"
    no_hooks.write_text(NO_HOOKS_SCRIPT)
    configs = [c for c in configurations(allowlist, no_hooks) if c.key in args.configs]
    if args.instructions:
        return await instructions(args, configs, workdir, (ca, cert, key), started)

    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(cert), str(key)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    proxies: list[Proxy] = []
    slices: list[Slice] = []
    failures: list[str] = []
    waited = 0.0  # seconds spent waiting for other people's load to pass
    total_redone = 0  # slices measured again because others used the CPU meanwhile
    noisy = 0  # slices kept although others used more than --max-others
    rounds_done = 0
    epoch = 0
    commands: dict[str, list[str]] = {}
    try:
        assert server.stdout is not None
        ports = json.loads(server.stdout.readline())

        # How fast are client and server without a proxy? Must be far above every proxy figure.
        # Best of three slices: this is a capacity, and other people's load only lowers it.
        direct = [
            await Connection.open(None, (CHIME_HOST, ports["chime"]), client_context(ca))
            for _ in range(args.connections)
        ]
        await run_slice(direct, args.warmup)
        direct_runs = []
        for _ in range(3):
            waited += await wait_quiet(args.max_others, args.quiet_wait)
            cpu, wall = time.process_time(), time.perf_counter()
            count = await run_slice(direct, args.seconds)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            direct_runs.append((count / wall, cpu / count * 1e6))
        for connection in direct:
            connection.close()
        direct_rps, direct_us = max(direct_runs)
        print(
            f"\ndirect, client -> server without proxy: {direct_rps:,.0f} rps, best of 3 "
            f"(client CPU {direct_us:.0f} µs per request)"
        )

        async def open_epoch(epoch: int) -> list[Proxy]:
            """A fresh mitmdump per configuration, own confdir (so own CA), connections warm."""
            started = [start_proxy(config, workdir, ca, epoch) for config in configs]
            for proxy in started:
                port = int(proxy.command[proxy.command.index("--listen-port") + 1])
                wait_listening(proxy.process, port)
            for proxy in started:
                port = int(proxy.command[proxy.command.index("--listen-port") + 1])
                cafile = (
                    proxy.confdir / "mitmproxy-ca-cert.pem"
                    if proxy.config.intercepted
                    else ca  # trusting only the server's CA proves nothing was decrypted
                )
                target = (
                    proxy.config.target,
                    ports["chime" if proxy.config.target == CHIME_HOST else "other"],
                )
                proxy.connections = [
                    await Connection.open((PROXY_HOST, port), target, client_context(cafile))
                    for _ in range(args.connections)
                ]
                for connection in proxy.connections:
                    failures.extend(check_connection(proxy.config, connection, server_cert))
                await run_slice(proxy.connections, args.warmup)
            return started

        print(
            "\nround epoch config      rps    CPU: mitmdump client server others  µs/req  "
            "redone  checks"
        )
        round_estimate = len(configs) * (args.seconds + 0.4)
        epoch_estimate = len(configs) * (args.warmup + 1.5)
        rounds_per_epoch = max(1, -(-args.rounds // args.epochs))
        for round_number in range(1, args.rounds + 1):
            elapsed = time.monotonic() - run_start
            new_epoch = (round_number - 1) % rounds_per_epoch == 0
            needed = round_estimate + (epoch_estimate if new_epoch else 0)
            if round_number > 1 and elapsed + needed > args.max_time:
                print(
                    f"(time limit --max-time {args.max_time:g} s: stopping after "
                    f"{round_number - 1} complete rounds)"
                )
                break
            if new_epoch:
                stop_proxies(proxies)
                epoch += 1
                proxies = await open_epoch(epoch)
                if epoch == 1:
                    commands = {p.config.key: p.command for p in proxies}
            rounds_done = round_number
            shift = (round_number - 1) % len(proxies)
            for proxy in proxies[shift:] + proxies[:shift]:
                redone = 0
                while True:
                    in_budget = time.monotonic() - run_start < args.budget
                    if in_budget:
                        waited += await wait_quiet(args.max_others, args.quiet_wait)
                    measured = await measure_slice(
                        proxy, round_number, epoch, args.seconds, ports, server.pid
                    )
                    if (
                        measured.others_cpu <= args.max_others
                        or redone >= args.retries
                        or not in_budget
                    ):
                        break
                    redone += 1
                total_redone += redone
                noisy += measured.others_cpu > args.max_others
                slices.append(measured)
                failures += measured.checks
                print(
                    f"{round_number:5} {epoch:5} {measured.config:6} {measured.rps:8,.0f} "
                    f"{measured.proxy_cpu:14.0%} {measured.client_cpu:6.0%} "
                    f"{measured.server_cpu:6.0%} {measured.others_cpu:6.0%} "
                    f"{measured.proxy_us_per_request:7,.0f}  {redone:6}  "
                    f"{'; '.join(measured.checks) or 'ok'}",
                    flush=True,
                )
    finally:
        stop_proxies(proxies)
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)

    slices.sort(key=lambda s: (s.round, s.config))
    print(
        f"\n{rounds_done} rounds, {epoch} sets of fresh mitmdump processes, "
        f"{time.monotonic() - run_start:.0f} s; noise control: "
        f"waited {waited:.0f} s in all for the machine to be quiet "
        f"(others <= {args.max_others:g} core); {total_redone} slices redone; "
        f"{noisy} of {len(slices)} slices kept with others above {args.max_others:g} core"
    )
    print("median per configuration (requests/s; mitmdump CPU µs per request):")
    for config in configs:
        mine = [s for s in slices if s.config == config.key]
        print(
            f"  {config.key}  {statistics.median(s.rps for s in mine):8,.0f} rps  "
            f"{statistics.median(s.proxy_us_per_request for s in mine):6,.0f} µs/req  "
            f"{config.title}"
        )
    print("ratios (median rps over median rps):")
    keys = {c.key for c in configs}
    for left, right in (("a", "b"), ("c", "d"), ("e", "b"), ("f", "b")):
        if {left, right} <= keys:
            print("  " + ratio_report(slices, left, right)[0])
    print("\nmitmdump commands of the first set (port and confdir differ in each set):")
    for key_, command in commands.items():
        print(f"  {key_}: {display_command(command)}")
    print(
        "\nchecks: "
        + (
            f"FAILED ({len(failures)}): {failures[:5]}; files kept in {workdir}"
            if failures
            else "all passed (headers on every intercepted request, server certificate on every "
            "passed-through connection, no Chime header on passed-through requests)"
        )
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "date": started.isoformat(timespec="seconds"),
                    "argv": sys.argv,
                    "direct_rps": direct_rps,
                    "waited_seconds": waited,
                    "slices_redone": total_redone,
                    "noisy_slices_kept": noisy,
                    "rounds_done": rounds_done,
                    "slices": [vars(s) for s in slices],
                    "commands": commands,
                    "failures": failures,
                },
                indent=2,
            )
        )
    if not failures:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failures else 0


# ---------------------------------------------------------------------------------------------
# Instructions per request (valgrind's callgrind): immune to the machine's noise


async def fixed_requests(connections: list[Connection], per_connection: int) -> int:
    """Exactly `per_connection` requests on each connection (hard limit: 15 minutes)."""
    counts: list[int] = []
    await asyncio.wait_for(
        asyncio.gather(
            *(connection.run(math.inf, counts, per_connection) for connection in connections)
        ),
        timeout=900,
    )
    return sum(counts)


def callgrind_total(out: Path) -> int:
    """Instructions counted in callgrind's dumps of `out` (the largest 'summary'/'totals')."""
    total = 0
    for dump in out.parent.glob(out.name + "*"):
        for line in dump.read_text(errors="replace").splitlines():
            if line.startswith(("summary:", "totals:")):
                total = max(total, int(line.split()[1]))
    return total


async def instructions(
    args: argparse.Namespace,
    configs: list[Config],
    workdir: Path,
    pki: tuple[Path, Path, Path],
    started: datetime.datetime,
) -> int:
    """Each configuration in a fresh mitmdump under callgrind, instrumentation switched on only
    while a fixed number of requests runs: machine instructions per request, which the load of
    other people's work on the machine does not change."""
    ca, cert, key = pki
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: install valgrind (apt-get install valgrind)")
            return 2
    per_connection = {True: args.instr_requests, False: args.instr_requests * 8}
    version = subprocess.run(["valgrind", "--version"], capture_output=True, text=True, timeout=60)
    print(
        f"load: {args.instr_connections} keep-alive connections per configuration, HTTP/1.1 "
        f"GET; counted: {args.instr_requests} requests per connection intercepted, "
        f"{args.instr_requests * 8} passed through, after 5 uncounted; "
        f"{args.instr_rounds} rounds; {version.stdout.strip()}"
    )
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(cert), str(key)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    results: dict[str, list[float]] = {c.key: [] for c in configs}
    commands: dict[str, list[str]] = {}
    failures: list[str] = []
    try:
        assert server.stdout is not None
        ports = json.loads(server.stdout.readline())
        print("\nround config  instructions/request  (startup s, measured s)")
        for round_number in range(1, args.instr_rounds + 1):
            for config in configs:
                name = f"{config.key}-{round_number}"
                confdir = workdir / f"confdir-{name}"
                out = workdir / f"callgrind-{name}.out"
                port = free_port(PROXY_HOST)
                command = mitmdump_command(config, port, confdir, ca)
                commands.setdefault(config.key, command)
                began = time.monotonic()
                with (workdir / f"mitmdump-{name}.log").open("wb") as log:
                    process = subprocess.Popen(
                        [
                            "valgrind",
                            "--tool=callgrind",
                            "--instr-atstart=no",
                            f"--callgrind-out-file={out}",
                            *command,
                        ],
                        cwd=REPO,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                connections: list[Connection] = []
                try:
                    wait_listening(process, port, limit=300)
                    cafile = confdir / "mitmproxy-ca-cert.pem" if config.intercepted else ca
                    target = (
                        config.target,
                        ports["chime" if config.target == CHIME_HOST else "other"],
                    )
                    connections = [
                        await Connection.open((PROXY_HOST, port), target, client_context(cafile))
                        for _ in range(args.instr_connections)
                    ]
                    before = server_stats(ports["control"])
                    await fixed_requests(connections, 5)
                    ready = time.monotonic()
                    control = ["callgrind_control", "-i", "on", str(process.pid)]
                    subprocess.run(control, capture_output=True, timeout=300, check=True)
                    count = await fixed_requests(connections, per_connection[config.intercepted])
                    control[2] = "off"
                    subprocess.run(control, capture_output=True, timeout=300, check=True)
                    subprocess.run(
                        ["callgrind_control", "-d", str(process.pid)],
                        capture_output=True,
                        timeout=300,
                        check=True,
                    )
                    measured = time.monotonic() - ready
                    listener = "chime" if config.target == CHIME_HOST else "other"
                    after = server_stats(ports["control"])[listener]
                    seen = {k: after[k] - before[listener][k] for k in after}
                    if config.intercepted and seen["with_expected_headers"] != seen["requests"]:
                        failures.append(f"{name}: not every request carried the headers")
                    if not config.intercepted and seen["with_any_chime_header"]:
                        failures.append(f"{name}: Chime headers on passed-through requests")
                    for connection in connections:
                        failures += check_connection(config, connection, server_cert_der(cert))
                finally:
                    for connection in connections:
                        connection.close()
                    stop(process)
                total = callgrind_total(out)
                per_request = total / count
                results[config.key].append(per_request)
                print(
                    f"{round_number:5} {config.key:6} {per_request:20,.0f}  "
                    f"({ready - began:.0f}, {measured:.0f})  {config.title}",
                    flush=True,
                )
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)

    medians = {key: statistics.median(values) for key, values in results.items() if values}
    print("\nmedian instructions per request:")
    for config in configs:
        if config.key in medians:
            print(f"  {config.key}  {medians[config.key]:12,.0f}  {config.title}")
    print("ratios: X/Y = instructions per request of Y over those of X, i.e. what the requests/s")
    print("ratio X/Y would be if both ran at the same instructions per second:")
    for left, right in (("a", "b"), ("c", "d"), ("e", "b"), ("a", "e"), ("f", "b")):
        if left in medians and right in medians:
            ratio = medians[right] / medians[left]
            goal = (
                f"  (goal >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'})"
                if (left, right) in (("a", "b"), ("c", "d"))
                else ""
            )
            print(f"  {left}/{right} = {ratio:.4f}{goal}")
    print("\nmitmdump commands (run under valgrind --tool=callgrind --instr-atstart=no):")
    for key_, command in commands.items():
        print(f"  {key_}: {display_command(command)}")
    print(
        "\nchecks: "
        + (
            f"FAILED: {failures[:5]}; files kept in {workdir}"
            if failures
            else "all passed (headers on every intercepted request, server certificate on every "
            "passed-through connection, no Chime header on passed-through requests)"
        )
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "date": started.isoformat(timespec="seconds"),
                    "argv": sys.argv,
                    "instructions_per_request": results,
                    "commands": commands,
                    "failures": failures,
                },
                indent=2,
            )
        )
    if not failures:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failures else 0


def server_cert_der(cert: Path) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(Encoding.DER)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=1.5,
        help="timed seconds per configuration per round (default 1.5)",
    )
    parser.add_argument("--rounds", type=int, default=20, help="rounds of a,b,c,d (default 20)")
    parser.add_argument(
        "--connections",
        type=int,
        default=32,
        help="keep-alive connections per configuration (default 32)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="untimed seconds of load on each configuration before round 1",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=5,
        help="sets of fresh mitmdump processes the rounds are spread over (default 5): "
        "identical mitmdump processes differ by several percent, so each configuration "
        "needs several",
    )
    parser.add_argument(
        "--configs",
        default="abcd",
        help="configurations to run, from abcdef (e: --modify-headers plus an -s script whose "
        "addon has no hooks, the cost of being an -s script at all; f: b again, an A/A "
        "control); default abcd",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="instead of requests/s, count machine instructions per request with valgrind's "
        "callgrind (needs valgrind; about 40 s per intercepted configuration per round)",
    )
    parser.add_argument(
        "--instr-rounds", type=int, default=1, help="(--instructions) rounds (default 1)"
    )
    parser.add_argument(
        "--instr-requests",
        type=int,
        default=25,
        help="(--instructions) counted requests per connection, intercepted; 8 times as many "
        "passed through (default 25)",
    )
    parser.add_argument(
        "--instr-connections", type=int, default=8, help="(--instructions) connections"
    )
    parser.add_argument(
        "--max-others",
        type=float,
        default=0.2,
        help="CPU (in cores) that other processes may use during a slice before it is redone, "
        "and below which the machine counts as quiet before a slice (default 0.2)",
    )
    parser.add_argument(
        "--retries", type=int, default=2, help="times a noisy slice is measured again (default 2)"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=5.0,
        help="longest wait for a quiet machine before each slice (default 5 s)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=150.0,
        help="seconds into the run after which no more waiting or redoing happens (default 150)",
    )
    parser.add_argument(
        "--max-time",
        type=float,
        default=270.0,
        help="no round starts that would end later than this many seconds into the run "
        "(default 270); the rounds done are reported",
    )
    parser.add_argument("--json", type=Path, help="also write every slice as JSON to this file")
    parser.add_argument("--serve", nargs=2, metavar=("CERT", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        server_main(*args.serve)
        return 0
    if not (1 <= args.rounds <= 100 and 0.2 <= args.seconds <= 60 and 1 <= args.connections <= 256):
        parser.error("--rounds 1..100, --seconds 0.2..60, --connections 1..256")
    if not 1 <= args.epochs <= args.rounds:
        parser.error("--epochs: 1..--rounds")
    if not set(args.configs) <= set("abcdef") or not args.configs:
        parser.error("--configs: letters from abcdef")
    if not (1 <= args.instr_rounds <= 10 and 1 <= args.instr_requests <= 1000):
        parser.error("--instr-rounds 1..10, --instr-requests 1..1000")
    if not 1 <= args.instr_connections <= 64:
        parser.error("--instr-connections 1..64")
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
