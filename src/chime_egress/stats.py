"""Counters of what the proxy did, for the `chime.stats` command and the logs."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Counters:
    connections_intercepted: int = 0
    connections_passed_through: int = 0
    media_connections_passed_through: int = 0
    requests_injected: int = 0
    client_headers_stripped: int = 0
    requests_refused: int = 0
    reloads_succeeded: int = 0
    reloads_failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
