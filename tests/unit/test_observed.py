"""Summing up observe mode's JSON log lines per Chime host name."""

from __future__ import annotations

import json

from chime_egress.cli.observed import json_lines, summarize


def line(event: str, **fields: object) -> str:
    return json.dumps({"time": "2026-11-23T10:00:00.000+00:00", "event": event, **fields})


def test_connections_are_summed_per_server_name_busiest_first() -> None:
    lines = [
        line(
            "connection_observed",
            client="10.0.0.1:5000",
            network="default",
            sni="signal.chime.aws",
            destination="99.77.128.1",
            bytes_from_client=100,
            bytes_from_server=1000,
        ),
        line(
            "connection_observed",
            client="10.0.0.2:5001",
            network="lab",
            sni="signal.chime.aws",
            destination="99.77.128.2",
            bytes_from_client=5,
            bytes_from_server=7,
            time="2026-11-23T11:00:00.000+00:00",
        ),
        line(
            "connection_observed",
            client="2001:db8::9:6000",  # IPv6 without brackets, as the proxy writes it
            network="default",
            destination="99.77.128.3",
            bytes_from_client=1,
            bytes_from_server=2,
        ),
        line("connection_intercepted", client="10.0.0.3:1", network="hq", sni="signal.chime.aws"),
        line("chime_403", client="10.0.0.3:2", network="hq", host="signal.chime.aws"),
        line("config_loaded", summary="ignored"),
        "",
    ]
    summary = summarize([("a.jsonl", lines)])
    [busy, quiet] = summary.ordered()
    assert busy.host == "signal.chime.aws"
    assert (busy.connections, busy.intercepted, busy.refusals) == (2, 1, 1)
    assert (busy.bytes_from_clients, busy.bytes_from_servers) == (105, 1007)
    assert busy.clients == {"10.0.0.1", "10.0.0.2", "10.0.0.3"}
    assert busy.networks == {"default", "lab", "hq"}
    assert busy.first_seen.startswith("2026-11-23T10") and busy.last_seen.startswith(
        "2026-11-23T11"
    )
    assert quiet.host == "99.77.128.3" and quiet.clients == {"2001:db8::9"}
    assert summary.lines_read == 6 and summary.unreadable == []


def test_unreadable_lines_are_reported_not_fatal() -> None:
    summary = summarize([("b.jsonl", ["{nope", "[1, 2]", line("connection_observed", sni="x")])])
    assert [(name, number) for name, number, _ in summary.unreadable] == [
        ("b.jsonl", 1),
        ("b.jsonl", 2),
    ]
    [only] = summary.ordered()
    assert only.host == "x" and only.connections == 1 and only.bytes_from_clients == 0


def test_plain_http_requests_of_observed_clients_are_counted_by_host_name() -> None:
    # Plain HTTP has no connection record of its own: one request_observed record per request.
    lines = [
        line(
            "request_observed",
            client="10.0.0.1:5000",
            network="default",
            mode="observe",
            host="meet.chime.aws",
            destination="99.77.128.1",
            prefix="99.77.128.0/18",
        )
        for _ in range(3)
    ]
    lines.append(line("connection_observed", client="10.0.0.2:1", sni="meet.chime.aws"))
    (host,) = summarize([("log", lines)]).ordered()
    assert host.host == "meet.chime.aws"
    assert (host.requests, host.connections) == (3, 1)
    assert host.clients == {"10.0.0.1", "10.0.0.2"}
    assert host.to_json()["observed_requests"] == 3


ODD = ("\u2028", "\x85", "\x1c")


def test_records_are_split_at_line_feeds_only() -> None:
    # A host holding U+2028 and U+0085, written raw by a JSON writer that leaves them: still one
    # record each, where str.splitlines would have broken both apart and skipped the pieces.
    text = "\n".join(
        json.dumps(
            {"event": "connection_observed", "sni": f"a{odd}b.chime.aws"}, ensure_ascii=False
        )
        for odd in ("\u2028", "\x85", "\x1c")
    )
    summary = summarize([("log.jsonl", json_lines(text + "\n"))])
    assert summary.unreadable == []
    assert sorted(host.host for host in summary.ordered()) == [
        "a\x1cb.chime.aws",
        "a\x85b.chime.aws",
        "a\u2028b.chime.aws",
    ]
