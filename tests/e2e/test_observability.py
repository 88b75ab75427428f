"""Safe roll-out: observe mode, per-network policies, 403 diagnostics, /metrics and JSON logs.

One mitmdump for the module, listening on 127.0.0.1, with clients told apart by their source
address (curl --interface):
  127.0.0.1  no networks entry: the top-level settings, mode observe
  127.0.0.5  network "pilot": enforce, the top-level apps
  127.0.0.6  network "sales": enforce, its own app and tenant
Chime addresses: 127.0.0.2 (answers 200) and 127.0.0.4 (answers 403 to everything).
"""

from __future__ import annotations

import http.client
import json
import re
import shlex
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http as http_flow
from mitmproxy import io

from tests.cli.support import run
from tests.support.asserts import assert_chime_headers
from tests.support.clients import CurlResult, curl, open_tunnel
from tests.support.config import write_ranges
from tests.support.files import mode, usual_umask
from tests.support.metrics import scrape as scrape_metrics
from tests.support.proxy import MitmdumpProcess, ProxyLauncher, run_expect_failure
from tests.support.servers import EchoServer, free_port
from tests.support.tls import TestCA

CHIME_IP = "127.0.0.2"
REFUSING_IP = "127.0.0.4"
PILOT_CLIENT = "127.0.0.5"
SALES_CLIENT = "127.0.0.6"

ALLOWLIST = """\
mode: observe
apps:
  - app_key: CorpKey
networks:
  - name: pilot
    clients: [127.0.0.5/32]
    mode: enforce
  - name: sales
    clients: [127.0.0.6/32, "fd00::6/128"]
    mode: enforce
    apps:
      - app_key: SalesKey
        tenants: [salesOrg]
destinations:
  ip_ranges: ranges.json
  cidrs: [127.0.0.2/32, 127.0.0.4/32]
"""


@dataclass(frozen=True)
class Running:
    proxy: MitmdumpProcess
    metrics_url: str
    json_log: Path
    allowlist: Path


@pytest.fixture(scope="module")
def refusing_server(test_ca: TestCA) -> Iterator[EchoServer]:
    cert = test_ca.issue([REFUSING_IP], stem="refusing")
    with EchoServer(REFUSING_IP, mode="tls", cert=cert, status=403, name="chime-403") as server:
        yield server


@pytest.fixture(scope="module")
def running(
    module_proxy_launcher: ProxyLauncher, tmp_path_factory: pytest.TempPathFactory
) -> Running:
    directory = tmp_path_factory.mktemp("observability")
    write_ranges(directory / "ranges.json", ["99.77.128.0/18"], sync_token="1787411825")
    allowlist = directory / "allowlist.yaml"
    allowlist.write_text(ALLOWLIST)
    json_log = directory / "chime.jsonl"
    port = free_port()
    proxy = module_proxy_launcher.start(
        allowlist,
        extra_args=[
            "--set",
            f"chime_metrics=127.0.0.1:{port}",
            "--set",
            f"chime_log_json={json_log}",
            "--set",
            "chime_reload_interval=0.1",
        ],
    )
    return Running(proxy, f"http://127.0.0.1:{port}/metrics", json_log, allowlist)


def request(
    running: Running,
    server: EchoServer,
    *,
    source: str | None = None,
    cacert: Path | None = None,
    path: str = "/",
    headers: tuple[str, ...] = (),
) -> CurlResult:
    extra = ["--interface", source] if source else []
    return curl(
        f"https://{server.host}:{server.port}{path}",
        proxy_port=running.proxy.port,
        cacert=cacert or running.proxy.ca_cert,
        headers=headers,
        extra_args=extra,
    )


def scrape(running: Running) -> dict[str, float]:
    return scrape_metrics(running.metrics_url)


def json_events(running: Running, event: str) -> list[dict[str, Any]]:
    lines = running.json_log.read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["event"] == event]


def test_observe_mode_passes_chime_through_undecrypted_and_records_it(
    running: Running, chime_server: EchoServer, test_ca: TestCA
) -> None:
    since = running.proxy.mark()
    # curl trusts only the servers' own CA: the handshake succeeds only if the proxy did not
    # decrypt (it would present a certificate from its own CA).
    result = request(
        running, chime_server, cacert=test_ca.cert_path, headers=("X-Amzn-Chime-App-Keys: Mine",)
    )
    assert result.status == 200, result
    received = result.json
    assert_no_injection(received)
    match = running.proxy.wait_for_log(
        r"chime: observed 127\.0\.0\.1:\d+ -> 127\.0\.0\.2:\d+ "
        r"\[127\.0\.0\.2\] matched 127\.0\.0\.2/32 \(network default, mode observe\): "
        r"(?P<sent>\d+) bytes sent, (?P<received>\d+) received in [\d.]+s",
        since=since,
    )
    assert int(match["sent"]) > 300 and int(match["received"]) > 300  # TLS both ways
    record = wait_for_json_event(running, "connection_observed", destination="127.0.0.2")
    assert record["network"] == "default" and record["mode"] == "observe"
    assert record["bytes_from_client"] == int(match["sent"])
    assert record["client"].startswith("127.0.0.1:")
    assert record["duration_seconds"] >= 0


def test_observe_mode_records_the_tls_server_name(
    running: Running, chime_server: EchoServer, test_ca: TestCA
) -> None:
    since = running.proxy.mark()
    context = ssl.create_default_context(cafile=str(test_ca.cert_path))
    context.check_hostname = False  # the name is only for the SNI; the CA check stays on
    tunnel = open_tunnel(running.proxy.port, chime_server.host, chime_server.port)
    with context.wrap_socket(tunnel, server_hostname="observed.chime.test") as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: observed.chime.test\r\nConnection: close\r\n\r\n")
        assert tls.recv(12) == b"HTTP/1.1 200"
    running.proxy.wait_for_log(
        r"chime: observed 127\.0\.0\.1:\d+ -> 127\.0\.0\.2:\d+ \(SNI observed\.chime\.test\) ",
        since=since,
    )
    record = wait_for_json_event(running, "connection_observed", sni="observed.chime.test")
    assert record["destination"] == "127.0.0.2"
    assert record["host"] == f"127.0.0.2:{chime_server.port}"


def assert_no_injection(received: dict[str, Any]) -> None:
    names = {name.lower() for name, _ in received["headers"]}
    values = [
        value for name, value in received["headers"] if name.lower() == "x-amzn-chime-app-keys"
    ]
    assert values == ["Mine"], received  # the client's own header, untouched
    assert "x-amzn-chime-tenants" not in names


def wait_for_json_event(running: Running, event: str, **expected: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while True:
        for record in json_events(running, event):
            if all(record.get(key) == value for key, value in expected.items()):
                return record
        if time.monotonic() > deadline:
            raise AssertionError(f"no {event} {expected} in {running.json_log.read_text()}")
        time.sleep(0.05)


def test_the_observed_command_sums_up_the_log(
    running: Running, chime_server: EchoServer, test_ca: TestCA
) -> None:
    result = request(running, chime_server, cacert=test_ca.cert_path)  # observed
    assert result.status == 200, result
    wait_for_json_event(running, "connection_observed", destination=CHIME_IP)
    summary = run("observed", "--format", "json", running.json_log)
    assert summary.returncode == 0, summary.stderr
    hosts = {entry["host"]: entry for entry in json.loads(summary.stdout)}
    chime = hosts[CHIME_IP]
    assert chime["observed_connections"] >= 1
    assert chime["bytes_from_clients"] > 0 and chime["bytes_from_servers"] > 0
    assert "127.0.0.1" in chime["clients"] and "default" in chime["networks"]
    text = run("observed", running.json_log)
    assert text.returncode == 0 and text.stdout.startswith("host ")


def test_the_observed_command_counts_plain_http_requests(
    running: Running, chime_plain_server: EchoServer
) -> None:
    # Plain HTTP of an observed client: one request_observed record per request, no connection.
    url = f"http://{chime_plain_server.host}:{chime_plain_server.port}/plain"
    for _ in range(2):
        result = curl(url, proxy_port=running.proxy.port)
        assert result.status == 200, result
    wait_for_json_event(running, "request_observed", destination=CHIME_IP)
    summary = run("observed", "--format", "json", running.json_log)
    hosts = {entry["host"]: entry for entry in json.loads(summary.stdout)}
    assert hosts[CHIME_IP]["observed_requests"] >= 2, hosts


def test_network_override_applies_to_its_clients_only(
    running: Running, chime_server: EchoServer
) -> None:
    pilot = request(running, chime_server, source=PILOT_CLIENT)
    assert pilot.status == 200, pilot
    assert_chime_headers(pilot.json["headers"], "CorpKey", None)
    sales = request(running, chime_server, source=SALES_CLIENT)
    assert sales.status == 200, sales
    assert_chime_headers(sales.json["headers"], "SalesKey", "SalesKey:salesOrg")
    # The default client is observed: with the proxy's CA only, its handshake must fail.
    default = request(running, chime_server)
    assert default.returncode != 0 and default.status == 0, default


def test_a_403_from_chime_is_explained(running: Running, refusing_server: EchoServer) -> None:
    since = running.proxy.mark()
    result = request(running, refusing_server, source=SALES_CLIENT, path="/meetings/abc?x=1")
    assert result.status == 403, result
    line = running.proxy.wait_for_log(r"chime: Chime answered 403 to .*", since=since)[0]
    assert f"{SALES_CLIENT}:" in line
    assert f"{REFUSING_IP}/meetings/abc?x=1" in line
    assert "network sales (127.0.0.6/32, fd00::6/128), mode enforce" in line
    assert "X-Amzn-Chime-App-Keys: SalesKey" in line
    assert "X-Amzn-Chime-Tenants: SalesKey:salesOrg" in line
    assert "not listed for network sales" in line and "salesOrg" in line
    # The suggested command, run as given (from another folder), checks the proxy's own file.
    command = re.search(r"check a meeting with: (chime-egress explain .*?) \[--tenant ID\]", line)
    assert command is not None, line
    words = shlex.split(command.group(1).replace("KEY", "SalesKey"))
    assert words[1:3] == ["explain", "--config"] and Path(words[3]).is_absolute()
    explained = run(*words[1:], "--tenant", "otherOrg", cwd=Path("/"))
    assert explained.returncode == 3, explained  # 403, as Chime said
    assert f"network sales, from {words[3]}" in explained.stdout
    record = wait_for_json_event(running, "chime_403", network="sales")
    assert record["level"] == "WARNING"
    assert record["path"] == "/meetings/abc?x=1"
    assert record["app_keys"] == "SalesKey" and record["tenants"] == "SalesKey:salesOrg"
    assert "tenants-other-tenants" in record["hint"]


def test_metrics_are_served_and_move(
    running: Running, chime_server: EchoServer, refusing_server: EchoServer, test_ca: TestCA
) -> None:
    before = scrape(running)
    request(running, chime_server, source=PILOT_CLIENT)
    request(running, chime_server, cacert=test_ca.cert_path)
    request(running, refusing_server, source=PILOT_CLIENT)
    after = scrape(running)

    def moved(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    assert moved('chime_egress_connections_total{network="pilot",outcome="intercepted"}') == 2
    assert moved('chime_egress_connections_total{network="default",outcome="observed"}') == 1
    assert moved('chime_egress_requests_injected_total{network="pilot"}') == 2
    # An IP literal is not a chime.aws name: counted under "other", never as a label of its own.
    assert moved('chime_egress_chime_403_responses_total{host="other",network="pilot"}') == 1
    assert after['chime_egress_apps_configured{mode="enforce",network="sales"}'] == 1
    assert after['chime_egress_apps_configured{mode="observe",network="default"}'] == 0
    assert after["chime_egress_ranges_sync_token"] == 1787411825
    assert after["chime_egress_config_age_seconds"] >= 0
    assert after['chime_egress_reloads_total{result="failed"}'] == 0


def test_reload_is_counted_and_changes_the_mode(
    running: Running, chime_server: EchoServer, test_ca: TestCA
) -> None:
    # An observed keep-alive connection, open across the switch to enforce mode.
    context = ssl.create_default_context(cafile=str(test_ca.cert_path))
    tunnel = open_tunnel(running.proxy.port, chime_server.host, chime_server.port)
    observed = context.wrap_socket(tunnel, server_hostname=chime_server.host)
    connection = http.client.HTTPConnection(chime_server.host, chime_server.port)
    connection.sock = observed
    connection.request("GET", "/before")
    assert connection.getresponse().read()
    time.sleep(0.3)  # the configuration in force is now visibly older than a fresh one

    before = scrape(running)
    since = running.proxy.mark()
    running.allowlist.write_text(ALLOWLIST.replace("mode: observe", "mode: enforce", 1))
    running.proxy.wait_for_log(r"chime: allowlist reloaded", since=since, timeout=10)
    after = scrape(running)
    assert after['chime_egress_reloads_total{result="succeeded"}'] == (
        before['chime_egress_reloads_total{result="succeeded"}'] + 1
    )
    assert after["chime_egress_config_age_seconds"] < before["chime_egress_config_age_seconds"]

    # The observed connection may not carry on without headers: it is closed at its next data.
    with pytest.raises((http.client.HTTPException, OSError)):
        connection.request("GET", "/after")
        connection.getresponse().read()
    connection.close()
    running.proxy.wait_for_log(r"chime: closing observed connection 127\.0\.0\.1:\d+", since=since)
    enforced = request(running, chime_server)
    assert enforced.status == 200, enforced
    assert_chime_headers(enforced.json["headers"], "CorpKey", None)

    # A broken edit is not in force, and the metrics say so until it is fixed.
    since = running.proxy.mark()
    running.allowlist.write_text(ALLOWLIST.replace("mode: observe", "mode: observes", 1))
    running.proxy.wait_for_log(r"chime: reload failed", since=since, timeout=10)
    assert scrape(running)["chime_egress_config_file_invalid"] == 1
    since = running.proxy.mark()
    running.allowlist.write_text(ALLOWLIST)
    running.proxy.wait_for_log(r"chime: allowlist reloaded", since=since, timeout=10)
    assert scrape(running)["chime_egress_config_file_invalid"] == 0


def test_saved_flows_name_the_network_and_stay_readable(
    proxy_launcher: ProxyLauncher, chime_server: EchoServer, tmp_path: Path
) -> None:
    write_ranges(tmp_path / "ranges.json", ["99.77.128.0/18"])
    allowlist = tmp_path / "allowlist.yaml"
    allowlist.write_text(ALLOWLIST)
    flows = tmp_path / "flows.mitm"
    proxy = proxy_launcher.start(allowlist, extra_args=["-w", str(flows)])
    result = curl(
        chime_server.url("/saved"),
        proxy_port=proxy.port,
        cacert=proxy.ca_cert,
        extra_args=["--interface", SALES_CLIENT],
    )
    assert result.status == 200, result
    proxy.stop()  # flushes the file
    assert "Addon error" not in proxy.output(), proxy.output()
    with flows.open("rb") as file:
        [flow] = [f for f in io.FlowReader(file).stream() if isinstance(f, http_flow.HTTPFlow)]
    assert flow.request.path == "/saved"
    assert flow.metadata["chime_egress.network"] == "sales"


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("chime_metrics=port9108", "chime_metrics must be PORT or HOST:PORT"),
        ("chime_metrics=127.0.0.1:70000", "outside 1-65535"),
        ("chime_log_json=/nonexistent-folder/chime.jsonl", "chime_log_json:"),
    ],
)
def test_bad_observability_options_stop_start_up(
    option: str, message: str, mitm_confdir: Path, tmp_path: Path
) -> None:
    allowlist = tmp_path / "allowlist.yaml"
    allowlist.write_text("apps: [{app_key: K}]\ndestinations: {cidrs: [127.0.0.2/32]}\n")
    failed = run_expect_failure(
        confdir=mitm_confdir, allowlist=allowlist, extra_args=["--set", option]
    )
    assert failed.returncode not in (None, 0), failed.output
    assert message in failed.output, failed.output


def test_a_metrics_port_in_use_stops_start_up(
    running: Running, mitm_confdir: Path, tmp_path: Path
) -> None:
    allowlist = tmp_path / "allowlist.yaml"
    allowlist.write_text("apps: [{app_key: K}]\ndestinations: {cidrs: [127.0.0.2/32]}\n")
    taken = running.metrics_url.split("/")[2]
    failed = run_expect_failure(
        confdir=mitm_confdir, allowlist=allowlist, extra_args=["--set", f"chime_metrics={taken}"]
    )
    assert failed.returncode not in (None, 0), failed.output
    assert f"chime_metrics: cannot listen on {taken}" in failed.output, failed.output


# The reviewer's Host (issue 16): an SGR colour, an OSC window title ended by BEL; then C1 and
# Unicode line breaks, sent as UTF-8.
EVIL_HOST = "e\x1b[31mvil\x1b]0;pwned\x07\x85\u2028\x9b.chime.aws"


def send_with_host(
    running: Running, server: EchoServer, host: str, source: str, path: str = "/x"
) -> bytes:
    """One HTTP/1.1 request with Host `host`, through a CONNECT tunnel from `source`; the answer."""
    sock = socket.create_connection(
        ("127.0.0.1", running.proxy.port), timeout=10, source_address=(source, 0)
    )
    authority = f"{server.host}:{server.port}"
    sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
    assert b" 200 " in sock.recv(4096)
    context = ssl.create_default_context(cafile=str(running.proxy.ca_cert))
    context.check_hostname = False
    with context.wrap_socket(sock) as tls:
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        tls.sendall(request.encode())
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    return answer


# A request target with the same sequences: refused as well, never forwarded.
EVIL_PATH = "/x\x1b[31m\x1b]0;pwned\x07"


@pytest.mark.parametrize(
    ("host", "path", "shown"),
    [
        (EVIL_HOST, "/x", "e\\x1b[31mvil\\x1b]0;pwned\\x07\\x85\\u2028\\x9b.chime.aws"),
        # The reason quotes the target (repr), and the line escapes that quote again.
        ("meet.chime.aws", EVIL_PATH, "request target '/x\\\\x1b[31m\\\\x1b]0;pwned"),
    ],
    ids=["host", "path"],
)
def test_client_text_is_refused_and_reaches_the_logs_escaped(
    running: Running, refusing_server: EchoServer, host: str, path: str, shown: str
) -> None:
    """A Host or request target holding control characters never reaches Chime (a server could
    read it otherwise, issue 12); the refusal's log lines show it escaped, and the JSON log
    keeps one record a line. (Refused with 400, it reaches no metric label either: the one
    label a client's host could reach is tested in tests/unit/test_observability.py.)"""
    since = running.proxy.mark()
    answer = send_with_host(running, refusing_server, host, PILOT_CLIENT, path=path)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    line = running.proxy.wait_for_log(r"chime: rejecting request from [^\n]*", since=since)[0]
    assert shown in line, line
    # Nothing the client sent reaches the terminal raw: no chime line holds a control character.
    chime_lines = [text for text in running.proxy.output()[since:].split("\n") if "chime:" in text]
    assert chime_lines and all(text.isprintable() for text in chime_lines), chime_lines
    raw = running.json_log.read_bytes().decode("utf-8")
    assert all(text.isprintable() for text in raw.split("\n")), "a record broke its line"
    assert json_events(running, "request_rejected"), raw


def test_the_json_log_is_created_0600_also_after_rotation(
    proxy_launcher: ProxyLauncher, chime_server: EchoServer, tmp_path: Path
) -> None:
    write_ranges(tmp_path / "ranges.json", ["99.77.128.0/18"])
    allowlist = tmp_path / "allowlist.yaml"
    allowlist.write_text(ALLOWLIST)
    json_log = tmp_path / "log" / "chime.jsonl"
    json_log.parent.mkdir()
    with usual_umask():  # mitmdump inherits it
        proxy = proxy_launcher.start(allowlist, extra_args=["--set", f"chime_log_json={json_log}"])
    assert mode(json_log) == 0o600
    json_log.rename(json_log.with_suffix(".1"))  # what logrotate does
    result = curl(
        chime_server.url("/x"),
        proxy_port=proxy.port,
        cacert=proxy.ca_cert,
        extra_args=["--interface", PILOT_CLIENT],
    )
    assert result.status == 200, result
    deadline = time.monotonic() + 5
    while not json_log.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mode(json_log) == 0o600
