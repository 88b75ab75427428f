"""What passing Chime media through, and relaying WebSockets as bytes, saves in proxy CPU.

    python bench/bench_media.py [--megabytes 64] [--messages 3000] [--rounds 3]

Two measurements, each comparing two configurations of the same mitmdump + addon, interleaved
over several rounds in one run (the machines are shared; compare ratios, not absolute figures):

1. A bulk non-HTTP TLS stream (as TURN/TLS media is) to a Chime address, SNI ice.bench.m.chime.aws,
   no ALPN: passed through (default media_hosts) versus decrypted (media_hosts: []), and versus
   observed (mode: observe, relayed by the byte-counting ObservingRelay). Reported as bytes
   relayed per CPU-second of the mitmdump process.
2. WebSocket echo messages on an intercepted Chime connection: chime_websocket_relay=websocket
   (mitmproxy parses every frame) versus tcp (bytes relayed after the upgrade). Reported as
   messages per second and mitmdump CPU-microseconds per message.

Everything runs on loopback: servers on 127.0.0.2, the proxy on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchlib import print_provenance  # noqa: E402

from tests.support.clients import open_tunnel, websocket  # noqa: E402
from tests.support.config import App, write_config  # noqa: E402
from tests.support.proxy import ProxyLauncher  # noqa: E402
from tests.support.servers import EchoServer  # noqa: E402
from tests.support.tls import TestCA, client_context  # noqa: E402

CHIME_IP = "127.0.0.2"
TURN_HOST = "ice.bench.m.chime.aws"
CHUNK = 64 * 1024
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


class SinkServer:
    """TLS server that reads a stream to its end and answers with the byte count."""

    def __init__(self, cert_path: Path, key_path: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert_path), str(key_path))
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            total = 0
            expected = int((await reader.readline()).strip())
            while total < expected and (data := await reader.read(1 << 20)):
                total += len(data)
            writer.write(f"{total}\n".encode())
            await writer.drain()
            writer.close()

        async def main() -> None:
            server = await asyncio.start_server(handle, CHIME_IP, 0, ssl=self.context)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            await server.serve_forever()

        self.loop.run_until_complete(main())


def bulk_transfer(proxy_port: int, sink_port: int, cafile: Path, megabytes: int) -> None:
    raw = open_tunnel(proxy_port, CHIME_IP, sink_port, timeout=60)
    tls = client_context(cafile, alpn=()).wrap_socket(raw, server_hostname=TURN_HOST)
    size = megabytes * 1024 * 1024
    chunk = os.urandom(CHUNK)
    with tls:
        tls.sendall(f"{size}\n".encode())
        for _ in range(size // CHUNK):
            tls.sendall(chunk)
        answer = tls.recv(64)
    assert int(answer.strip()) == size, answer


def websocket_echoes(proxy_port: int, server: EchoServer, cafile: Path, messages: int) -> None:
    url = server.url("/bench", scheme="wss")
    with websocket(url, proxy_port=proxy_port, cacert=cafile, timeout=30) as conn:
        upgrade = conn.recv(timeout=10)
        assert "X-Amzn-Chime-App-Keys" in str(upgrade), "headers missing on the upgrade"
        payload = "m" * 200
        for _ in range(messages):
            conn.send(payload)
            assert conn.recv(timeout=10) == payload


@contextmanager
def proxy(launcher: ProxyLauncher, directory: Path, extra: str, *args: str) -> Iterator[int]:
    allowlist = write_config(
        directory, [App("AppKey1", tenants=["orgId"])], cidrs=[f"{CHIME_IP}/32"]
    )
    allowlist.write_text(allowlist.read_text() + extra)
    process = launcher.start(allowlist, extra_args=["--set", "flow_detail=0", *args])
    try:
        yield process.port
    finally:
        process.stop()


def measure(
    launcher: ProxyLauncher, directory: Path, extra: str, args: tuple[str, ...], work: object
) -> tuple[float, float]:
    """(wall seconds, mitmdump CPU seconds) for `work(port)` through a fresh proxy."""
    with proxy(launcher, directory, extra, *args) as port:
        pid = launcher.processes[-1].pid
        assert pid is not None
        cpu_before, start = cpu_seconds(pid), time.perf_counter()
        work(port)  # type: ignore[operator]
        return time.perf_counter() - start, cpu_seconds(pid) - cpu_before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=64)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print_provenance(f"{os.cpu_count()} cores, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        ca = TestCA.create(root / "ca")
        cert = ca.issue([TURN_HOST, CHIME_IP], stem="media")
        sink = SinkServer(cert.cert_path, cert.key_path)
        confdir = root / "confdir"
        confdir.mkdir()
        launcher = ProxyLauncher(confdir, ca.cert_path, root)
        mitm_ca = confdir / "mitmproxy-ca-cert.pem"
        results: dict[str, list[tuple[float, float]]] = {}
        with EchoServer(CHIME_IP, mode="tls", cert=cert, name="ws") as ws_server:
            for round_number in range(args.rounds):
                for label, extra, cafile in (
                    ("bulk passed through", "", ca.cert_path),
                    ("bulk decrypted", "  media_hosts: []\n", mitm_ca),
                    ("bulk observed", "mode: observe\n", ca.cert_path),
                ):
                    folder = root / f"{label}-{round_number}".replace(" ", "-")
                    results.setdefault(label, []).append(
                        measure(
                            launcher,
                            folder,
                            extra,
                            (),
                            lambda port, cafile=cafile: bulk_transfer(
                                port, sink.port, cafile, args.megabytes
                            ),
                        )
                    )
                for relay in ("websocket", "tcp"):
                    label = f"websocket relay={relay}"
                    folder = root / f"ws-{relay}-{round_number}"
                    results.setdefault(label, []).append(
                        measure(
                            launcher,
                            folder,
                            "",
                            ("--set", f"chime_websocket_relay={relay}"),
                            lambda port: websocket_echoes(port, ws_server, mitm_ca, args.messages),
                        )
                    )
        report(results, args)
    return 0


def report(results: dict[str, list[tuple[float, float]]], args: argparse.Namespace) -> None:
    size = args.megabytes * 1024 * 1024
    print(f"rounds: {args.rounds}, bulk {args.megabytes} MiB, {args.messages} WebSocket echoes")
    per_cpu: dict[str, float] = {}
    for label in ("bulk passed through", "bulk decrypted", "bulk observed"):
        values = [size / max(cpu, 1 / TICKS) for _, cpu in results[label]]
        per_cpu[label] = statistics.median(values)
        print(f"{label:28} {per_cpu[label] / 1e6:10.1f} MB per mitmdump CPU-second (median)")
    ratio = per_cpu["bulk passed through"] / per_cpu["bulk decrypted"]
    print(f"{'bulk: pass-through / decrypted':28} {ratio:10.1f}x bytes per CPU-second")
    observed = per_cpu["bulk observed"] / per_cpu["bulk passed through"]
    print(f"{'bulk: observed / pass-through':28} {observed:10.2f}x bytes per CPU-second")
    rates: dict[str, float] = {}
    for relay in ("websocket", "tcp"):
        label = f"websocket relay={relay}"
        rate = statistics.median(args.messages / wall for wall, _ in results[label])
        cpu = statistics.median(cpu / args.messages * 1e6 for _, cpu in results[label])
        rates[relay] = rate
        print(f"{label:28} {rate:10.0f} echoes/s, {cpu:6.0f} mitmdump CPU-us per echo (median)")
    print(f"{'websocket: tcp / websocket':28} {rates['tcp'] / rates['websocket']:10.2f}x echoes/s")


if __name__ == "__main__":
    socket.setdefaulttimeout(60)
    raise SystemExit(main())
