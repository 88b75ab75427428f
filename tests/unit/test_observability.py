"""Pure parts of observability: the metrics registry, JSON log lines, the 403 hint."""

from __future__ import annotations

import json
import logging
import socket
import struct
import time
import urllib.request
from pathlib import Path

import pytest

from chime_egress.policy.allowlist import App, parse_allowlist
from chime_egress.policy.client_policy import compile_client_policies, compile_client_policy
from chime_egress.policy.diagnostics import refusal_hint
from chime_egress.proxy.jsonlog import (
    JsonLineFormatter,
    fields,
    open_json_log,
    parse_json_log_target,
)
from chime_egress.proxy.metrics import (
    INTERCEPTED,
    MAX_403_HOSTS,
    Metrics,
    MetricsServer,
    parse_listen_address,
)
from tests.support.files import mode, usual_umask


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("  ", None),
        ("9108", ("127.0.0.1", 9108)),
        ("0.0.0.0:9108", ("0.0.0.0", 9108)),
        ("[::1]:9108", ("::1", 9108)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_listen_address_forms(text: str, expected: tuple[str, int] | None) -> None:
    assert parse_listen_address(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("port", "must be PORT or HOST:PORT"),
        (":9108", "no host before ':'"),
        ("127.0.0.1:0", "outside 1-65535"),
        ("127.0.0.1:65536", "outside 1-65535"),
    ],
)
def test_bad_listen_addresses_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_listen_address(text)


STAGED = """\
mode: observe
apps: [{app_key: A}, {app_key: B}]
networks:
  - {name: pilot, clients: [10.0.0.0/8], mode: enforce}
destinations: {cidrs: []}
"""


def test_snapshot_reflects_counts_and_configuration() -> None:
    metrics = Metrics()
    allowlist = parse_allowlist(STAGED, Path("a.yaml"))
    metrics.configuration_loaded(compile_client_policies(allowlist), "1787411825")
    metrics.connections.labels("pilot", INTERCEPTED).inc()
    metrics.connections.labels("pilot", INTERCEPTED).inc()
    metrics.chime_403.labels("pilot", "signal.chime.aws").inc()
    snapshot = metrics.snapshot()
    assert snapshot["connections_total"] == {"network=pilot,outcome=intercepted": 2}
    assert snapshot["chime_403_responses_total"] == {"host=signal.chime.aws,network=pilot": 1}
    assert snapshot["apps_configured"] == {
        "mode=observe,network=default": 0,  # observe sends nothing
        "mode=enforce,network=pilot": 2,
    }
    assert snapshot["ranges_sync_token"] == 1787411825
    assert snapshot["reloads_total"] == {"result=failed": 0, "result=succeeded": 0}
    assert 0 <= snapshot["config_age_seconds"] < 60
    assert not any(name.endswith("_created") for name in snapshot)
    assert snapshot["process_resident_memory_bytes"] > 0  # the process collector's series


def test_a_reload_that_drops_a_network_drops_its_app_count() -> None:
    metrics = Metrics()
    metrics.configuration_loaded(
        compile_client_policies(parse_allowlist(STAGED, Path("a.yaml"))), None
    )
    plain = parse_allowlist("apps: [{app_key: A}]\ndestinations: {cidrs: []}\n", Path("a.yaml"))
    metrics.configuration_loaded(compile_client_policies(plain), None)
    assert metrics.snapshot()["apps_configured"] == {"mode=enforce,network=default": 1}
    assert metrics.snapshot()["ranges_sync_token"] == 0


def test_metrics_server_serves_the_registry_and_stops() -> None:
    metrics = Metrics()
    metrics.requests_injected.labels("default").inc(3)
    server = MetricsServer(metrics.registry, "127.0.0.1", _free_port())
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        assert 'chime_egress_requests_injected_total{network="default"} 3.0' in text
        assert "# TYPE chime_egress_connections_total counter" in text
    finally:
        server.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)


def test_a_probe_that_resets_the_connection_leaves_no_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # HAProxy's httpchk resets its check connection as soon as it has the status line.
    server = MetricsServer(Metrics().registry, "127.0.0.1", _free_port())
    try:
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as probe:
                probe.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # A well-behaved scrape after them is still answered, and then every handler has run.
        time.sleep(0.5)
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
    finally:
        server.stop()
    assert "Traceback" not in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _record(message: str, **extra: object) -> logging.LogRecord:
    logger = logging.getLogger("chime_egress.test")
    return logger.makeRecord(
        logger.name, logging.WARNING, __file__, 1, message, (), None, extra=extra or None
    )


def test_json_line_carries_the_fields_and_the_text() -> None:
    record = _record(
        "chime: Chime answered 403", **fields("chime_403", host="h", tenants=None, bytes=3)
    )
    line = JsonLineFormatter().format(record)
    assert "\n" not in line
    document = json.loads(line)
    assert document["event"] == "chime_403"
    assert document["level"] == "WARNING"
    assert document["host"] == "h" and document["bytes"] == 3
    assert "tenants" not in document  # None values are left out
    assert document["message"] == "chime: Chime answered 403"
    assert document["time"].endswith("+00:00")


def test_json_line_of_a_plain_record_and_of_an_odd_value() -> None:
    plain = json.loads(JsonLineFormatter().format(_record("multi\nline")))
    assert plain["event"] == "log" and plain["message"] == "multi\nline"
    odd = json.loads(JsonLineFormatter().format(_record("x", **fields("e", path=Path("/a")))))
    assert odd["path"] == "/a"


def test_json_handler_appends_one_line_per_record(tmp_path: Path) -> None:
    target = tmp_path / "log.jsonl"
    target.write_text('{"earlier": true}\n')
    handler = open_json_log(str(target))
    try:
        handler.emit(_record("one", **fields("a")))
        handler.emit(_record("two", **fields("b")))
        # flushed per record: readable before the handler is closed
        lines = target.read_text().splitlines()
    finally:
        handler.close()
    assert [json.loads(line).get("event") for line in lines] == [None, "a", "b"]


def test_json_log_follows_rotation(tmp_path: Path) -> None:
    target = tmp_path / "log.jsonl"
    handler = open_json_log(str(target))
    try:
        handler.emit(_record("before", **fields("a")))
        target.rename(tmp_path / "log.jsonl.1")  # what logrotate does
        handler.emit(_record("after", **fields("b")))
    finally:
        handler.close()
    assert json.loads((tmp_path / "log.jsonl.1").read_text())["message"] == "before"
    assert json.loads(target.read_text())["message"] == "after"


def test_403_host_labels_are_bounded() -> None:
    metrics = Metrics()
    metrics.count_403("n", "Signal.M3.UE1.app.chime.aws.")
    metrics.count_403("n", "random.example")  # not Chime: a client's choice
    for index in range(MAX_403_HOSTS + 5):
        metrics.count_403("n", f"h{index}.chime.aws")
    counts = metrics.snapshot()["chime_403_responses_total"]
    assert counts["host=signal.m3.ue1.app.chime.aws,network=n"] == 1
    assert counts["host=other,network=n"] == 1 + 6  # random.example, and the names over the cap
    assert len(counts) == MAX_403_HOSTS + 1


def test_json_log_target_forms(tmp_path: Path) -> None:
    assert parse_json_log_target("") is None
    assert parse_json_log_target("-") == "-"
    assert parse_json_log_target(str(tmp_path / "x.jsonl")) == str(tmp_path / "x.jsonl")
    with pytest.raises(ValueError, match="is a folder"):
        parse_json_log_target(str(tmp_path))
    with pytest.raises(OSError):
        open_json_log(str(tmp_path / "missing" / "x.jsonl"))


def test_refusal_hint_names_the_apps_and_the_tenant_rules_when_there_are_tenants() -> None:
    policy = compile_client_policy(
        "sales",
        "enforce",
        (App("K1", None, ("t1", "t2"), 1), App("K2", None, (), 2)),
    )
    hint = refusal_hint(policy, "10.0.0.5", "/etc/chime egress/allowlist.yaml")
    assert "not listed for network sales (AppKeys K1, K2)" in hint
    assert "app-keys-not-listed" in hint
    assert "listed with tenants (K1: t1, t2)" in hint
    assert "tenants-other-tenants" in hint and "tenants-session-without-tenants" in hint
    # The running file, quoted for the shell, so the command checks what the proxy enforces.
    assert (
        "chime-egress explain --config '/etc/chime egress/allowlist.yaml' --client 10.0.0.5 "
        "--app-key KEY [--tenant ID]"
    ) in hint


def test_refusal_hint_without_tenants_only_suspects_the_app() -> None:
    apps = tuple(App(f"K{index}", None, (), index) for index in range(7))
    hint = refusal_hint(compile_client_policy("default", "enforce", apps), "::1", "a.yaml")
    assert "K0, K1, K2, K3, K4, ... (7 in all)" in hint
    assert "tenants" not in hint.split("; check")[0]


def test_stream_target_writes_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    handler = open_json_log("-")
    handler.emit(_record("hello", **fields("e")))
    handler.close()
    assert json.loads(capsys.readouterr().out)["message"] == "hello"


# --- client-supplied text and client data on disk (issue 16) ----------------------------------

EVIL_HOST = "e\x1b[31mvil\x1b]0;pwned\x07.chime.aws"


def test_a_json_log_record_stays_one_printable_line_whatever_the_host() -> None:
    host = EVIL_HOST + "\x85\u2028\u2029\x9b"
    line = JsonLineFormatter().format(_record("chime: x", **fields("chime_403", host=host)))
    assert line.isprintable(), "U+0085, U+2028 and C1 controls must not be written raw"
    assert len(line.splitlines()) == 1
    assert json.loads(line)["host"] == host, "the field keeps the host exactly as sent"


def test_a_host_that_is_not_a_dns_name_never_labels_a_metric() -> None:
    metrics = Metrics()
    for host in (EVIL_HOST, 'a"b.chime.aws', "a\\b.chime.aws", "a b.chime.aws", "é.chime.aws"):
        metrics.count_403("n", host)
    metrics.count_403("n", "signal.m3.ue1.app.chime.aws")
    counts = metrics.snapshot()["chime_403_responses_total"]
    assert counts == {"host=other,network=n": 5, "host=signal.m3.ue1.app.chime.aws,network=n": 1}
    exposition = metrics.exposition().decode("ascii")
    assert all(line.isprintable() for line in exposition.split("\n"))


def test_the_json_log_is_created_0600_also_after_rotation(tmp_path: Path) -> None:
    target = tmp_path / "log.jsonl"
    with usual_umask():
        handler = open_json_log(str(target))
    try:
        handler.emit(_record("before", **fields("a")))
        first = mode(target)
        target.rename(tmp_path / "log.jsonl.1")
        with usual_umask():
            handler.emit(_record("after", **fields("b")))
    finally:
        handler.close()
    assert (first, mode(target)) == (0o600, 0o600)
