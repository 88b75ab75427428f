"""Hot reload: edits to the allowlist and to the ranges file take effect within 5 seconds, without a
restart and without dropping open connections; an invalid edit keeps the last good configuration.

Each test runs its own mitmdump, since each one edits the files under it.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.asserts import assert_chime_headers, assert_no_chime_headers_added
from tests.support.clients import (
    CurlResult,
    curl,
    get_json,
    header_values,
    https_connection,
    read_upgrade_echo,
    websocket,
)
from tests.support.config import (
    APP_KEYS_HEADER,
    AWS_CHIME_PREFIXES,
    TENANTS_HEADER,
    Allowlist,
    App,
    write_allowlist,
    write_config,
    write_ranges,
)
from tests.support.proxy import MitmdumpProcess, ProxyLauncher
from tests.support.servers import EchoServer
from tests.support.tls import TestCA

RELOAD_DEADLINE = 5.0  # seconds, from the contract
RANGES = "chime-ip-ranges.json"
SETTLE = 1.5  # seconds: more than one poll interval of the addon (about 1 s)

APPS_A = [App("AppKeyA", ["orgId"])]
APPS_B = [App("AppKeyA", ["orgId", "salesId"]), App("AppKeyB")]


def _path() -> str:
    return f"/reload/{uuid.uuid4().hex}"


def _start(
    launcher: ProxyLauncher,
    folder: Path,
    apps: list[App],
    cidrs: tuple[str, ...] = ("127.0.0.2/32",),
    *,
    settle: bool = True,
) -> tuple[MitmdumpProcess, Path]:
    """Start a proxy on a fresh config.

    ``settle`` waits until the proxy has run for SETTLE seconds, so that these tests exercise
    reloading itself; an edit made right after start-up has its own test.
    """
    allowlist = write_config(folder, apps, cidrs=cidrs, ranges_name=RANGES)
    proxy = launcher.start(allowlist, label="reload")
    proxy.wait_for_log(rf"allowlist loaded from {re.escape(str(allowlist))}", timeout=5)
    if settle:
        time.sleep(SETTLE)
    return proxy, allowlist


def _rewrite(allowlist: Path, apps: list[App], *, atomic: bool = False) -> None:
    Allowlist(apps=apps, cidrs=["127.0.0.2/32"], ip_ranges=RANGES).write(
        allowlist.parent, allowlist.name, atomic=atomic
    )


def _poll(
    fetch: Callable[[], CurlResult], accept: Callable[[CurlResult], bool], what: str
) -> float:
    """Repeat ``fetch`` until ``accept`` holds; fail after RELOAD_DEADLINE. Returns the delay."""
    start = time.monotonic()
    while True:
        result = fetch()
        if accept(result):
            return time.monotonic() - start
        if time.monotonic() - start > RELOAD_DEADLINE:
            raise AssertionError(f"{what} not in effect after {RELOAD_DEADLINE}s; last:\n{result}")
        time.sleep(0.1)


def _app_keys(result: CurlResult) -> list[str]:
    return result.values(APP_KEYS_HEADER) if isinstance(result.body, dict) else []


@pytest.mark.parametrize("atomic", [False, True], ids=["in-place", "replace-by-rename"])
def test_valid_edit_takes_effect(
    tmp_path: Path, proxy_launcher: ProxyLauncher, chime_server: EchoServer, atomic: bool
) -> None:
    proxy, allowlist = _start(proxy_launcher, tmp_path, APPS_A)
    pid = proxy.pid

    def fetch() -> CurlResult:
        return curl(chime_server.url(_path()), proxy_port=proxy.port, cacert=proxy.ca_cert)

    before = fetch()
    assert before.returncode == 0, before
    assert_chime_headers(before.headers(), "AppKeyA", "AppKeyA:orgId", context=before)

    mark = proxy.mark()
    _rewrite(allowlist, APPS_B, atomic=atomic)
    _poll(fetch, lambda r: _app_keys(r) == ["AppKeyA,AppKeyB"], "the edited allowlist")
    after = fetch()
    assert_chime_headers(after.headers(), "AppKeyA,AppKeyB", "AppKeyA:orgId,salesId", context=after)
    line = proxy.wait_for_log(
        rf"allowlist reloaded from {re.escape(str(allowlist))}.*", since=mark
    ).group(0)
    # The reload says what the edit did, not only the same counts as before.
    assert line.endswith("; changes: default: +app AppKeyB, +tenant AppKeyA:salesId"), line
    assert proxy.returncode is None and proxy.pid == pid  # no restart


def test_edit_right_after_start_is_not_missed(
    tmp_path: Path, proxy_launcher: ProxyLauncher, chime_server: EchoServer
) -> None:
    """An edit in the first poll interval after start-up must be picked up like any other.

    (A watcher that takes its baseline fingerprint at its first poll, rather than when the file
    was read, would treat this edit as already loaded and ignore it until the next one.)
    """
    proxy, allowlist = _start(proxy_launcher, tmp_path, APPS_A, settle=False)
    mark = proxy.mark()
    _rewrite(allowlist, APPS_B)

    def fetch() -> CurlResult:
        return curl(chime_server.url(_path()), proxy_port=proxy.port, cacert=proxy.ca_cert)

    _poll(fetch, lambda r: _app_keys(r) == ["AppKeyA,AppKeyB"], "an edit made right after start")
    proxy.wait_for_log(r"allowlist reloaded from", since=mark)


def test_invalid_edit_keeps_last_good_then_recovers(
    tmp_path: Path, proxy_launcher: ProxyLauncher, chime_server: EchoServer
) -> None:
    proxy, allowlist = _start(proxy_launcher, tmp_path, APPS_A)

    def fetch() -> CurlResult:
        return curl(chime_server.url(_path()), proxy_port=proxy.port, cacert=proxy.ca_cert)

    mark = proxy.mark()
    write_allowlist(
        tmp_path,
        f"""
        apps:
          - app_key: AppKeyB
            tenant: [salesId]
        destinations:
          ip_ranges: {RANGES}
          cidrs: [127.0.0.2/32]
        """,
    )
    failure = proxy.wait_for_log(r"reload failed", timeout=RELOAD_DEADLINE, since=mark)
    report = proxy.output()[failure.start() :]
    assert f"{allowlist}:3:" in report, f"the error must name the file and line 3:\n{report}"
    assert "tenant" in report
    for _ in range(3):  # the last good configuration stays in force
        result = fetch()
        assert result.returncode == 0, result
        assert_chime_headers(result.headers(), "AppKeyA", "AppKeyA:orgId", context=result)
        time.sleep(0.3)
    assert proxy.log_lines("allowlist reloaded from", since=mark) == []

    mark = proxy.mark()
    _rewrite(allowlist, APPS_B)
    _poll(fetch, lambda r: _app_keys(r) == ["AppKeyA,AppKeyB"], "the fixed allowlist")
    proxy.wait_for_log(r"allowlist reloaded from", since=mark)
    assert proxy.returncode is None


def test_ranges_file_edit(
    tmp_path: Path,
    proxy_launcher: ProxyLauncher,
    chime_server: EchoServer,
    other_server: EchoServer,
    test_ca: TestCA,
) -> None:
    proxy, _ = _start(proxy_launcher, tmp_path, APPS_A, cidrs=())
    ranges = tmp_path / RANGES
    # 127.0.0.2 is not Chime yet: passed through.
    assert (
        curl(chime_server.url("/"), proxy_port=proxy.port, cacert=test_ca.cert_path).returncode == 0
    )

    def fetch(server: EchoServer, cacert: Path) -> Callable[[], CurlResult]:
        return lambda: curl(server.url(_path()), proxy_port=proxy.port, cacert=cacert)

    mark = proxy.mark()
    write_ranges(ranges, [*AWS_CHIME_PREFIXES, "127.0.0.2/32", "127.0.0.3/32"], sync_token="2000")
    _poll(
        fetch(other_server, proxy.ca_cert),
        lambda r: _app_keys(r) == ["AppKeyA"],
        "127.0.0.3 added to the ranges file",
    )
    intercepted = fetch(chime_server, proxy.ca_cert)()
    assert_chime_headers(intercepted.headers(), "AppKeyA", "AppKeyA:orgId", context=intercepted)
    proxy.wait_for_log(r"allowlist reloaded from", since=mark)

    write_ranges(ranges, [*AWS_CHIME_PREFIXES, "127.0.0.2/32"], sync_token="3000", atomic=True)
    _poll(
        fetch(other_server, test_ca.cert_path),
        lambda r: r.returncode == 0 and _app_keys(r) == [],
        "127.0.0.3 removed from the ranges file",
    )

    # A broken ranges file is refused; the table in force stays.
    mark = proxy.mark()
    ranges.write_text('{"syncToken": "4000", "prefixes": [', encoding="utf-8")
    proxy.wait_for_log(r"reload failed", timeout=RELOAD_DEADLINE, since=mark)
    result = fetch(chime_server, proxy.ca_cert)()
    assert_chime_headers(result.headers(), "AppKeyA", "AppKeyA:orgId", context=result)
    passed = fetch(other_server, test_ca.cert_path)()
    assert passed.returncode == 0, passed
    assert_no_chime_headers_added(passed.headers(), context=passed)


def test_open_websocket_survives_reload(
    tmp_path: Path, proxy_launcher: ProxyLauncher, chime_server: EchoServer
) -> None:
    proxy, allowlist = _start(proxy_launcher, tmp_path, APPS_A)
    url = chime_server.url(_path(), scheme="wss")
    with websocket(url, proxy_port=proxy.port, cacert=proxy.ca_cert) as conn:
        first = read_upgrade_echo(conn)
        assert header_values(first, APP_KEYS_HEADER) == ["AppKeyA"]
        conn.send("before")
        assert conn.recv(timeout=5) == "before"

        mark = proxy.mark()
        _rewrite(allowlist, APPS_B)
        proxy.wait_for_log(r"allowlist reloaded from", timeout=RELOAD_DEADLINE, since=mark)

        for i in range(3):
            conn.send(f"after {i}")
            assert conn.recv(timeout=5) == f"after {i}"
    # A new WebSocket gets the new headers.
    with websocket(url, proxy_port=proxy.port, cacert=proxy.ca_cert) as conn:
        second = read_upgrade_echo(conn)
    assert header_values(second, APP_KEYS_HEADER) == ["AppKeyA,AppKeyB"]
    assert header_values(second, TENANTS_HEADER) == ["AppKeyA:orgId,salesId"]


def test_keepalive_connection_survives_reload_and_gets_new_headers(
    tmp_path: Path, proxy_launcher: ProxyLauncher, chime_server: EchoServer
) -> None:
    proxy, allowlist = _start(proxy_launcher, tmp_path, APPS_A)
    with https_connection(
        proxy_port=proxy.port,
        host=chime_server.host,
        port=chime_server.port,
        cacert=proxy.ca_cert,
    ) as conn:
        _, before = get_json(conn, _path())
        assert_chime_headers(before["headers"], "AppKeyA", "AppKeyA:orgId", context=before)

        mark = proxy.mark()
        _rewrite(allowlist, APPS_B, atomic=True)
        proxy.wait_for_log(r"allowlist reloaded from", timeout=RELOAD_DEADLINE, since=mark)

        _, after = get_json(conn, _path())
    assert after["connection_id"] == before["connection_id"], "the connection was dropped"
    # Each request gets the configuration current at the time of that request.
    assert_chime_headers(
        after["headers"], "AppKeyA,AppKeyB", "AppKeyA:orgId,salesId", context=after
    )
