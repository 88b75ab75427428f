"""`chime-egress run --workers N`: N proxy processes behind one port, to use every core.

One mitmproxy process runs on one core. The supervisor checks the whole configuration once
(exactly as a single proxy would, so a bad allowlist is still one message and exit code 1),
makes sure the CA exists (so that N workers starting together do not each make one), then starts
N workers, each a complete `chime-egress run` with the same options. They listen on the same
port with SO_REUSEPORT: the kernel spreads new connections over them. Each worker loads and
watches the allowlist itself, so a reload reaches all of them.

The supervisor serves `chime_metrics`' address itself: /metrics is every worker's series with a
`worker` label, /ready is 200 only when every worker is ready, /live only when every worker
runs. Each worker serves its own on a loopback port of its own.

A signal is passed to every worker (each drains as one proxy does); the supervisor exits when
they have, with 0 if they all exited 0. A worker that ends by itself, which no healthy worker
does, stops the others and the supervisor exits 1: the orchestrator restarts the replica whole,
rather than it running on with fewer workers than it was sized for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator

from mitmproxy.certs import CertStore
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from .endpoint import LIVE_PATH, READY_PATH
from .launcher import PROG, WORKER_ENV, LaunchOptions, prepare
from .metrics import MetricsServer, parse_listen_address

logger = logging.getLogger("chime_egress")

CA_BASENAME = "mitmproxy"  # mitmproxy's own name for its CA files in the confdir
_PROBE_TIMEOUT = 2.0


async def supervise(launch: LaunchOptions) -> int:
    arguments, metrics_setting = _split_metrics(launch.mitmdump)
    metrics_address = parse_listen_address(metrics_setting or "")
    # The whole configuration checked as one proxy would (its messages, exit code 1), without
    # the metrics port, which the supervisor serves itself.
    master = await prepare(arguments)
    if isinstance(master, int):
        return master
    options = master.options
    try:
        problem = _unsupported(options.mode)
        if problem:
            print(f"{PROG}: --workers: {problem}", file=sys.stderr)
            return 1
        CertStore.from_store(os.path.expanduser(options.confdir), CA_BASENAME, options.key_size)
        reserved, port = _reserve_port(options.listen_host, options.listen_port)
    finally:
        await master.done()  # the configuration check's addons: stop their threads and files
    _log_to_stderr()
    worker_ports = [_free_loopback_port() for _ in range(launch.workers)]
    processes: list[asyncio.subprocess.Process] = []
    for index, metrics_port in enumerate(worker_ports):
        command = [
            sys.executable,
            "-m",
            "chime_egress.cli",
            "run",
            f"--event-loop={launch.event_loop}",
            *arguments,
            "--listen-port",
            str(port),
            "--set",
            f"chime_metrics=127.0.0.1:{metrics_port}",
        ]
        environment = {**os.environ, WORKER_ENV: str(index)}
        processes.append(await asyncio.create_subprocess_exec(*command, env=environment))
    reserved.close()  # every worker holds the port now
    logger.info(f"chime: {launch.workers} workers on port {port}")
    server = None
    if metrics_address is not None:
        server = _serve_aggregate(metrics_address, worker_ports)
    try:
        return await _wait(processes)
    finally:
        if server is not None:
            server.stop()


def _unsupported(modes: Iterable[str]) -> str | None:
    for mode in modes:
        name = mode.split(":", 1)[0].split("@", 1)[0]
        if name not in ("regular", "upstream", "socks5", "reverse", "transparent"):
            return f"mode {mode} does not share its port between processes; use one worker"
    return None


def _reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """A socket bound with SO_REUSEPORT (not listening) that holds the port for the workers.

    With `--listen-port 0` it picks the port every worker then listens on.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
    return sock, int(sock.getsockname()[1])


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _log_to_stderr() -> None:
    """The supervisor's own lines, shaped like mitmproxy's (its log handler is gone by now)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s.%(msecs)03d] %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _split_metrics(arguments: list[str]) -> tuple[list[str], str | None]:
    """The command line without `--set chime_metrics=...` (each worker gets a port of its own),
    and that setting's value (the last one), if any."""
    kept: list[str] = []
    value: str | None = None
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        if argument == "--set" and index + 1 < len(arguments):
            spec, taken = arguments[index + 1], 2
        elif argument.startswith("--set="):
            spec, taken = argument.removeprefix("--set="), 1
        else:
            spec, taken = "", 1
        name, _, setting = spec.partition("=")
        if name == "chime_metrics":
            value = setting
        else:
            kept.extend(arguments[index : index + taken])
        index += taken
    return kept, value


async def _wait(processes: list[asyncio.subprocess.Process]) -> int:
    stopping = False
    loop = asyncio.get_running_loop()

    def forward(signum: int) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, forward, signum)
    waiting = {asyncio.ensure_future(process.wait()): process for process in processes}
    failed = False
    while waiting:
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        for finished in done:
            process = waiting.pop(finished)
            code = process.returncode
            if not stopping:
                logger.error(
                    f"chime: worker pid {process.pid} ended by itself (exit code {code}); "
                    "stopping the others"
                )
                failed = True
                forward(signal.SIGTERM)
            elif code != 0:
                failed = True
    return 1 if failed else 0


# The supervisor's /metrics, /ready and /live


class _WorkerMetrics(Collector):
    """Every worker's series, each with a `worker` label, as one exposition."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for index, port in enumerate(self.ports):
            try:
                text = _get(port, "/metrics")[1].decode("utf-8")
            except OSError:
                continue  # a worker that cannot answer shows in /live; its series are absent
            for family in text_string_to_metric_families(text):
                target = merged.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    labels = {**sample.labels, "worker": str(index)}
                    target.samples.append(sample._replace(labels=labels))
        yield from merged.values()


def _serve_aggregate(address: tuple[str, int], ports: list[int]) -> MetricsServer:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_WorkerMetrics(ports))

    def every(path: str) -> tuple[int, bytes]:
        answers = []
        for port in ports:
            try:
                answers.append(_get(port, path))
            except OSError as error:
                answers.append((503, str(error).encode()))
        status = 200 if all(code == 200 for code, _ in answers) else 503
        body = b"[" + b",".join(body.strip() or b"null" for _, body in answers) + b"]\n"
        return status, body

    probes = {READY_PATH: lambda: every(READY_PATH), LIVE_PATH: lambda: every(LIVE_PATH)}
    return MetricsServer(registry, *address, probes=probes)


def _get(port: int, path: str) -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=_PROBE_TIMEOUT) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())
