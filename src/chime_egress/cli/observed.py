"""What observe mode saw: the proxy's JSON log lines summed up per Chime host name.

Before enforcing, an admin needs to know which apps are in use. The proxy cannot see AppKeys
(they live inside Chime's meeting data), but the TLS server names and the clients tell which
services and which teams to ask. This reads the `connection_observed` and `request_observed`
(plain HTTP, one per request) records, and for comparison `connection_intercepted` and
`chime_403`, that `chime_log_json` writes.

`summarize` is the pure part; `add_observed_commands` adds the `chime-egress observed` command,
which reads the files and prints the summary. Host names and clients came from clients: the text
table shows them escaped (`untrusted.printable`); the JSON output keeps them as logged. Records
are split at "\n" only, as the proxy writes them: str.splitlines would also split at U+0085,
U+2028 and the like inside a record that another writer left unescaped.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..untrusted import printable
from .support import (
    EXIT_INVALID,
    EXIT_OK,
    add_command,
    epilog,
    format_argument,
    print_columns,
    print_error,
    typed,
)

OBSERVED = "connection_observed"
REQUEST_OBSERVED = "request_observed"  # plain HTTP of an observed client: no connection record
INTERCEPTED = "connection_intercepted"
REFUSED = "chime_403"


@dataclass
class HostSummary:
    host: str  # the TLS server name, else the destination address
    connections: int = 0
    requests: int = 0  # observed plain-HTTP requests
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
            "observed_requests": self.requests,
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
        return sorted(
            self.hosts.values(),
            key=lambda h: (-(h.connections + h.requests + h.intercepted), h.host),
        )


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


def json_lines(text: str) -> list[str]:
    """The lines of a JSON lines file: split at LF only (JSON text has no raw LF inside)."""
    return text.split("\n")


def _add(summary: Summary, record: dict[str, object]) -> None:
    event = record.get("event")
    if event not in (OBSERVED, REQUEST_OBSERVED, INTERCEPTED, REFUSED):
        return
    # 403 and plain-HTTP records carry the request's host name; connection records the server
    # name (if the client sent one) and the destination address.
    names = ("host", "sni", "destination") if event == REQUEST_OBSERVED else ("sni", "destination")
    host = next((_text(record.get(n)) for n in (*names, "host") if _text(record.get(n))), "?")
    entry = summary.hosts.setdefault(host, HostSummary(host))
    if event == OBSERVED:
        entry.connections += 1
        entry.bytes_from_clients += _number(record.get("bytes_from_client"))
        entry.bytes_from_servers += _number(record.get("bytes_from_server"))
    elif event == REQUEST_OBSERVED:
        entry.requests += 1
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


# The `observed` command


def add_observed_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `observed` to the chime-egress command line."""
    observed = add_command(
        commands,
        "observed",
        summary="sum up what observe mode saw, per Chime host name, from the JSON log",
        description=(
            "Read the proxy's JSON log lines (written with --set chime_log_json=FILE) and sum\n"
            "up its Chime connections per TLS server name (else destination address): observed\n"
            "connections and plain-HTTP requests, the bytes each way, the clients and networks\n"
            "they came from, first and last seen; and, for comparison, intercepted connections\n"
            "and 403s from Chime.\n"
            "Busiest host first. The server names and clients tell which apps are in use and\n"
            "whom to ask for their AppKeys before enforcing."
        ),
        epilog=epilog(ok="summary printed", invalid="a file cannot be read"),
    )
    observed.add_argument("logs", nargs="+", metavar="FILE", help="JSON log files ('-': stdin)")
    format_argument(observed, "json is a list of hosts")
    observed.add_argument(
        "--clients",
        type=typed(_positive),
        default=5,
        metavar="N",
        help="client addresses listed per host in the text format (default: 5)",
    )
    observed.set_defaults(handler=_observed)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _observed(args: argparse.Namespace) -> int:
    sources: list[tuple[str, list[str]]] = []
    for name in args.logs:
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            print_error(f"{name}: cannot read: {error}")
            return EXIT_INVALID
        sources.append((name, json_lines(text)))
    summary = summarize(sources)
    for name, line, why in summary.unreadable[:10]:
        print_error(f"{name}:{line}: skipped: {why}")
    if len(summary.unreadable) > 10:
        print_error(f"... and {len(summary.unreadable) - 10} more lines skipped")
    hosts = summary.ordered()
    if args.format == "json":
        print(json.dumps([host.to_json() for host in hosts], indent=2))
        return EXIT_OK
    if not hosts:
        print(f"no Chime connections in {summary.lines_read} log lines")
        return EXIT_OK
    rows = [
        (
            "host",
            "observed",
            "requests",
            "intercepted",
            "403",
            "from clients",
            "from servers",
            "clients",
        )
    ]
    for host in hosts:
        shown = [printable(client) for client in sorted(host.clients)[: args.clients]]
        more = f" (+{len(host.clients) - len(shown)})" if len(host.clients) > len(shown) else ""
        rows.append(
            (
                printable(host.host),
                str(host.connections),
                str(host.requests),
                str(host.intercepted),
                str(host.refusals),
                _bytes(host.bytes_from_clients),
                _bytes(host.bytes_from_servers),
                f"{', '.join(shown)}{more}",
            )
        )
    print_columns(rows)
    return EXIT_OK


def _bytes(count: int) -> str:
    if count < 1000:
        return f"{count} B"
    value = float(count)
    for unit in ("KB", "MB", "GB"):
        value /= 1000
        if value < 1000 or unit == "GB":
            break
    return f"{value:.1f} {unit}"
