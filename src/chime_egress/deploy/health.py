"""`chime-egress health`: ask the running proxy for an answer of its own."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

from .addresses import ProxyAddress


@dataclass(frozen=True)
class Health:
    healthy: bool
    detail: str


HEALTH_REQUEST = (
    b"GET /chime-egress-health HTTP/1.1\r\n"
    b"User-Agent: chime-egress-health\r\n"
    b"Connection: close\r\n\r\n"
)
_MAX_HEALTH_RESPONSE = 64 * 1024


def probe_proxy(proxy: ProxyAddress, timeout: float) -> Health:
    """Ask the proxy itself for an HTTP answer, without it connecting anywhere.

    The request has no Host header and no absolute URL, so mitmproxy cannot know a destination:
    it answers 400 itself, from its own event loop, with `Server: mitmproxy ...`. That proves the
    process accepts, parses and answers; no upstream is contacted and nothing is forwarded.
    """
    try:
        with socket.create_connection((proxy.host, proxy.port), timeout=timeout) as sock:
            sock.sendall(HEALTH_REQUEST)
            data = b""
            while b"\r\n\r\n" not in data and len(data) < _MAX_HEALTH_RESPONSE:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError as error:
        return Health(False, f"{proxy}: {error.strerror or error}")
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    status_line, *header_lines = head.split("\r\n")
    status = re.match(r"^HTTP/1\.[01] (\d{3})", status_line)
    if status is None:
        shown = status_line[:80] or "nothing"
        return Health(False, f"{proxy}: answered {shown!r}, not HTTP")
    server = ""
    for line in header_lines:
        name, _, value = line.partition(":")
        if name.strip().lower() == "server":
            server = value.strip()
    if not server.lower().startswith("mitmproxy"):
        return Health(False, f"{proxy}: an HTTP server that is not mitmproxy ({server or '?'})")
    return Health(True, f"{proxy}: {server} answered (HTTP {status.group(1)}, as expected)")
