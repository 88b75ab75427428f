"""`chime-egress health`: ask the running proxy's Chime addon for its state.

The probe sends `GET http://<check host>/health` to the proxy. The addon answers that request
itself (it is never forwarded) from its own state, so an answer proves the process accepts,
parses and answers, and that the addon is loaded with a configuration. Without the addon,
mitmproxy would try to forward the request to a name that does not resolve and answer 502: the
probe then reports the proxy unhealthy, which is exactly the state the probe exists to catch.
"""

from __future__ import annotations

import json
import re
import socket
import time
from dataclasses import dataclass

from .addresses import ProxyAddress

DEFAULT_CHECK_HOST = "chime-egress.invalid"
_MAX_HEALTH_RESPONSE = 256 * 1024


@dataclass(frozen=True)
class Health:
    healthy: bool
    detail: str


def health_request(check_host: str, path: str = "/health") -> bytes:
    return (
        f"GET http://{check_host}{path} HTTP/1.1\r\n"
        f"Host: {check_host}\r\n"
        "User-Agent: chime-egress-health\r\n"
        "Accept: application/json\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")


def probe_proxy(
    proxy: ProxyAddress, timeout: float, check_host: str = DEFAULT_CHECK_HOST
) -> Health:
    """Healthy when the proxy's Chime addon answers its health page with 200.

    `timeout` bounds the whole probe, not each read: a proxy that trickles its answer fails too.
    """
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((proxy.host, proxy.port), timeout=timeout) as sock:
            sock.sendall(health_request(check_host))
            data = b""
            while not _complete(data) and len(data) < _MAX_HEALTH_RESPONSE:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("timed out")
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as error:
        return Health(False, f"{proxy}: {error.strerror or error}")
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    status = re.match(r"^HTTP/1\.[01] (\d{3})", status_line)
    if status is None:
        shown = status_line[:80] or "nothing"
        return Health(False, f"{proxy}: answered {shown!r}, not HTTP")
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if not isinstance(document, dict) or document.get("addon") != "chime_headers":
        return Health(
            False,
            f"{proxy}: the Chime addon did not answer (HTTP {status.group(1)}): the proxy runs "
            "without it, or is not chime-egress",
        )
    summary = document.get("summary") or "no configuration"
    if status.group(1) != "200" or document.get("status") != "healthy":
        problems = "; ".join(str(p) for p in document.get("problems") or []) or "unhealthy"
        return Health(False, f"{proxy}: {problems}")
    return Health(True, f"{proxy}: chime-egress {document.get('version', '?')} ({summary})")


def _complete(data: bytes) -> bool:
    """Enough of the answer has arrived: the whole body, or bytes that are not HTTP at all."""
    if len(data) >= 5 and not data.startswith(b"HTTP/"):
        return True
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        return False
    length = re.search(rb"(?im)^content-length:[ \t]*(\d{1,9})[ \t]*$", head)
    return length is not None and len(body) >= int(length.group(1))
