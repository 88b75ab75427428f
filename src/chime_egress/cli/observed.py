"""What observe mode saw: the proxy's JSON log lines summed up per Chime host name.

Before enforcing, an admin needs to know which apps are in use. The proxy cannot see AppKeys
(they live inside Chime's meeting data), but the TLS server names and the clients tell which
services and which teams to ask. This reads the `connection_observed` (and, for comparison,
`connection_intercepted` and `chime_403`) records that `chime_log_json` writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

OBSERVED = "connection_observed"
INTERCEPTED = "connection_intercepted"
REFUSED = "chime_403"


@dataclass
class HostSummary:
    host: str  # the TLS server name, else the destination address
    connections: int = 0
    intercepted: int = 0
    refusals: int = 0
    bytes_from_clients: int = 0
    bytes_from_servers: int = 0
    clients: set[str] = field(default_factory=set)  # client addresses, without ports
    networks: set[str] = field(default_factory=set)
    first_seen: str = ""
    last_seen: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "host": self.host,
            "observed_connections": self.connections,
            "intercepted_connections": self.intercepted,
            "chime_403": self.refusals,
            "bytes_from_clients": self.bytes_from_clients,
            "bytes_from_servers": self.bytes_from_servers,
            "clients": sorted(self.clients),
            "networks": sorted(self.networks),
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
        }


@dataclass
class Summary:
    hosts: dict[str, HostSummary] = field(default_factory=dict)
    lines_read: int = 0
    unreadable: list[tuple[str, int, str]] = field(default_factory=list)  # (file, line, why)

    def ordered(self) -> list[HostSummary]:
        """Busiest first: the hosts most connections went to."""
        return sorted(self.hosts.values(), key=lambda h: (-(h.connections + h.intercepted), h.host))


def summarize(sources: Iterable[tuple[str, Iterable[str]]]) -> Summary:
    """Sum up (file name, lines) pairs of JSON log lines; other events are skipped."""
    summary = Summary()
    for name, lines in sources:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            summary.lines_read += 1
            try:
                record = json.loads(line)
            except ValueError as error:
                summary.unreadable.append((name, number, f"not JSON: {error}"))
                continue
            if not isinstance(record, dict):
                summary.unreadable.append((name, number, "not a JSON object"))
                continue
            _add(summary, record)
    return summary


def _add(summary: Summary, record: dict[str, object]) -> None:
    event = record.get("event")
    if event not in (OBSERVED, INTERCEPTED, REFUSED):
        return
    # 403 records carry the request's host (no port); connection records the server name and
    # the destination address.
    host = (
        _text(record.get("sni"))
        or _text(record.get("destination"))
        or _text(record.get("host"))
        or "?"
    )
    entry = summary.hosts.setdefault(host, HostSummary(host))
    if event == OBSERVED:
        entry.connections += 1
        entry.bytes_from_clients += _number(record.get("bytes_from_client"))
        entry.bytes_from_servers += _number(record.get("bytes_from_server"))
    elif event == INTERCEPTED:
        entry.intercepted += 1
    else:
        entry.refusals += 1
    if client := _text(record.get("client")):
        entry.clients.add(client.rsplit(":", 1)[0])  # "address:port", IPv6 unbracketed
    if network := _text(record.get("network")):
        entry.networks.add(network)
    if seen := _text(record.get("time")):
        entry.first_seen = min(entry.first_seen or seen, seen)
        entry.last_seen = max(entry.last_seen, seen)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _number(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
