"""Sending hand-made request bytes through the proxy, and judging what reached the upstream.

A test writes exactly the bytes an attacker would (split at chosen offsets, with pauses between
the parts), through a CONNECT tunnel (plain or TLS, with or without ALPN) or straight to the
proxy (absolute-form), then asks :func:`assert_every_request_exact` whether any request that
reached the recording upstream could be read with other Chime headers than the configured ones.
"""

from __future__ import annotations

import itertools
import re
import socket
import ssl
import time
from collections.abc import Sequence
from pathlib import Path

import h2.config  # type: ignore[import-untyped, unused-ignore]
import h2.connection  # type: ignore[import-untyped, unused-ignore]
import h2.events  # type: ignore[import-untyped, unused-ignore]

from .clients import open_tunnel
from .proxy import LISTEN_HOST
from .recorder import Parsed, RecordingServer, chime_problems, read_arrivals
from .tls import client_context

APP_KEYS = "AppKey1"
TENANTS = "AppKey1:orgId"
PAUSE = 0.4  # long enough for mitmproxy to decide on the first part alone


def send_parts(
    sock: socket.socket | ssl.SSLSocket,
    parts: Sequence[bytes],
    pause: float = PAUSE,
    *,
    first_answer: bool = False,
) -> bytes:
    """Send each part (pausing between them), then read until EOF or a quiet 1.5 s.

    ``first_answer``: stop as soon as one whole response (head and Content-Length body) is in.
    """
    try:
        for index, part in enumerate(parts):
            if index:
                time.sleep(pause)
            sock.sendall(part)
    except (ConnectionError, ssl.SSLError, OSError):
        pass  # the proxy may refuse before the last part: what it answered is read below
    sock.settimeout(1.5)
    answer = bytearray()
    try:
        while not (first_answer and _whole_response(answer)) and (chunk := sock.recv(65536)):
            answer.extend(chunk)
    except (TimeoutError, ConnectionError, ssl.SSLError, OSError):
        pass
    return bytes(answer)


def _whole_response(data: bytearray) -> bool:
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    length = re.search(rb"(?im)^content-length:[ \t]*(\d+)", data[:head_end])
    return length is not None and len(data) >= head_end + 4 + int(length.group(1))


def through_tunnel(
    proxy_port: int,
    host: str,
    port: int,
    parts: Sequence[bytes],
    *,
    tls_ca: Path | None = None,
    alpn: Sequence[str] = (),
    pause: float = PAUSE,
    first_answer: bool = False,
) -> bytes:
    """CONNECT host:port, optionally TLS trusting ``tls_ca`` (ALPN ``alpn``), then the parts."""
    raw = open_tunnel(proxy_port, host, port)
    sock: socket.socket | ssl.SSLSocket = raw
    try:
        if tls_ca is not None:
            sock = client_context(tls_ca, alpn=alpn).wrap_socket(raw, server_hostname=host)
        return send_parts(sock, parts, pause, first_answer=first_answer)
    finally:
        sock.close()


def to_proxy(
    proxy_port: int, parts: Sequence[bytes], pause: float = PAUSE, *, first_answer: bool = False
) -> bytes:
    """The parts sent to the proxy itself (absolute-form requests), and its answer."""
    with socket.create_connection((LISTEN_HOST, proxy_port), timeout=10) as sock:
        return send_parts(sock, parts, pause, first_answer=first_answer)


def split_at(data: bytes, *offsets: int) -> list[bytes]:
    """``data`` cut at ``offsets`` (ascending)."""
    bounds = [0, *offsets, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def status_codes(answer: bytes) -> list[int]:
    """The status code of every HTTP/1 response in ``answer``."""
    return [int(m.group(1)) for m in re.finditer(rb"HTTP/1\.[01] (\d{3})", answer)]


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


def h2_exchange(
    proxy_port: int,
    host: str,
    port: int,
    tls_ca: Path,
    headers: Sequence[tuple[bytes, bytes]],
    *,
    body: bytes = b"",
    trailers: Sequence[tuple[bytes, bytes]] = (),
) -> int | None:
    """One HTTP/2 request through a CONNECT tunnel, its fields sent exactly as given.

    Nothing is validated or normalised on the way out (the h2 library is told not to), so a
    test can send what a hostile client would. Returns the response status (None: no answer,
    the stream or the connection was reset).
    """
    config = h2.config.H2Configuration(
        client_side=True,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
    )
    conn = h2.connection.H2Connection(config=config)
    raw = open_tunnel(proxy_port, host, port)
    sock = client_context(tls_ca, alpn=("h2",)).wrap_socket(raw, server_hostname=host)
    try:
        if sock.selected_alpn_protocol() != "h2":
            raise AssertionError(f"the proxy did not speak h2: {sock.selected_alpn_protocol()}")
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        end_after_headers = not body and not trailers
        conn.send_headers(stream, list(headers), end_stream=end_after_headers)
        if body:
            conn.send_data(stream, body, end_stream=not trailers)
        if trailers:
            conn.send_headers(stream, list(trailers), end_stream=True)
        sock.sendall(conn.data_to_send())
        sock.settimeout(5)
        while True:
            data = sock.recv(65536)
            if not data:
                return None
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    return int(dict(event.headers or [])[b":status"])
                if isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
                    return None
            sock.sendall(conn.data_to_send())
    except (TimeoutError, ConnectionError, ssl.SSLError):
        return None
    finally:
        sock.close()
