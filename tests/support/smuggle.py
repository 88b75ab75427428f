"""Sending hand-made request bytes through the proxy, and judging what reached the upstream.

A test writes exactly the bytes an attacker would (split at chosen offsets, with pauses between
the parts), through a CONNECT tunnel (plain or TLS, with or without ALPN) or straight to the
proxy (absolute-form), then asks :func:`assert_every_request_exact` whether any request that
reached the recording upstream could be read with other Chime headers than the configured ones.
"""

from __future__ import annotations

import itertools
import socket
import ssl
import time
from collections.abc import Sequence
from pathlib import Path

from .clients import open_tunnel
from .proxy import LISTEN_HOST
from .recorder import Parsed, RecordingServer, chime_problems, read_arrivals
from .tls import client_context

APP_KEYS = "AppKey1"
TENANTS = "AppKey1:orgId"
PAUSE = 0.4  # long enough for mitmproxy to decide on the first part alone


def send_parts(
    sock: socket.socket | ssl.SSLSocket, parts: Sequence[bytes], pause: float = PAUSE
) -> bytes:
    """Send each part (pausing between them), then read the answer until EOF or a quiet second."""
    for index, part in enumerate(parts):
        if index:
            time.sleep(pause)
        sock.sendall(part)
    sock.settimeout(1.5)
    answer = bytearray()
    try:
        while chunk := sock.recv(65536):
            answer.extend(chunk)
    except (TimeoutError, ConnectionError, ssl.SSLError, OSError):
        pass
    return bytes(answer)


def through_tunnel(
    proxy_port: int,
    host: str,
    port: int,
    parts: Sequence[bytes],
    *,
    tls_ca: Path | None = None,
    alpn: Sequence[str] = (),
    pause: float = PAUSE,
) -> bytes:
    """CONNECT host:port, optionally TLS trusting ``tls_ca`` (ALPN ``alpn``), then the parts."""
    raw = open_tunnel(proxy_port, host, port)
    sock: socket.socket | ssl.SSLSocket = raw
    try:
        if tls_ca is not None:
            sock = client_context(tls_ca, alpn=alpn).wrap_socket(raw, server_hostname=host)
        return send_parts(sock, parts, pause)
    finally:
        sock.close()


def to_proxy(proxy_port: int, parts: Sequence[bytes], pause: float = PAUSE) -> bytes:
    """The parts sent to the proxy itself (absolute-form requests), and its answer."""
    with socket.create_connection((LISTEN_HOST, proxy_port), timeout=10) as sock:
        return send_parts(sock, parts, pause)


def split_at(data: bytes, *offsets: int) -> list[bytes]:
    """``data`` cut at ``offsets`` (ascending)."""
    bounds = [0, *offsets, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def status_codes(answer: bytes) -> list[int]:
    """The status code of every HTTP/1 response in ``answer``."""
    codes = []
    for line in answer.split(b"\r\n"):
        if line.startswith(b"HTTP/1.") and len(line) >= 12 and line[9:12].isdigit():
            codes.append(int(line[9:12]))
    return codes


def assert_every_request_exact(
    recorder: RecordingServer,
    *,
    app_keys: str = APP_KEYS,
    tenants: str | None = TENANTS,
    at_least: int = 0,
    context: object = "",
) -> list[Parsed]:
    """Every request any judge reads at the upstream carries exactly the configured headers.

    ``at_least``: how many requests (as h11, or h2, reads them) must have arrived.
    """
    arrivals = recorder.arrivals()
    parsed = read_arrivals(arrivals)
    problems = [p for request in parsed for p in chime_problems(request, app_keys, tenants)]
    shown = [(a.alpn, bytes(a.raw), a.h2_blocks) for a in arrivals]
    assert not problems, f"{problems}\narrived: {shown}\n{context}"
    counted = [p for p in parsed if p.parser in ("h11", "h2")]
    assert len(counted) >= at_least, f"expected {at_least} requests, got {shown}\n{context}"
    return parsed
