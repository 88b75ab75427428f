"""Fail closed for the whole life of the process: no state where the proxy runs without the addon.

Each fault is put in place while a real Chime-bound request is sent through the real proxy (both
`mitmdump -s addon/chime_headers.py` and the `chime-egress run` launcher where the fault applies
to both), then mended, and every request must either be refused or reach the "Chime" server on
127.0.0.2 with exactly the configured headers. Start-up errors must be the message alone: no
traceback, no "listening" line, exit code 1.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support.asserts import assert_chime_headers
from tests.support.clients import CurlResult, curl, get_json, header_values, https_connection
from tests.support.config import App, write_config
from tests.support.proxy import (
    ADDON_SCRIPT,
    LAUNCHER,
    REPO_ROOT,
    TEST_LOCAL_DESTINATIONS,
    MitmdumpProcess,
    ProxyLauncher,
    assert_clean_start_up_failure,
    run_expect_failure,
)
from tests.support.servers import EchoServer

SCRIPTS = Path(__file__).resolve().parent / "scripts"
CONTROL = SCRIPTS / "control.py"
TAMPER = SCRIPTS / "tamper.py"
PASSTHROUGH = SCRIPTS / "passthrough.py"
APP_KEYS = "AppKey1"
TENANTS = "AppKey1:orgId"
ENTRIES = [pytest.param("script", id="mitmdump-s"), pytest.param(LAUNCHER, id="chime-egress-run")]
FAST_RELOAD = ["--set", "chime_reload_interval=0.2"]


@pytest.fixture
def allowlist(tmp_path: Path) -> Path:
    return write_config(tmp_path / "config", [App(APP_KEYS, ("orgId",))])


@pytest.fixture
def shim(tmp_path: Path) -> Path:
    """A copy of the entry script that a test may break or delete (never the repository's)."""
    copy = tmp_path / "checkout" / "addon" / "chime_headers.py"
    copy.parent.mkdir(parents=True)
    shutil.copy(ADDON_SCRIPT, copy)
    return copy


def entry_script(entry: str, shim: Path) -> Path | str:
    return shim if entry == "script" else LAUNCHER


def fetch(proxy: MitmdumpProcess, server: EchoServer, path: str = "/lifetime") -> CurlResult:
    return curl(server.url(path), proxy_port=proxy.port, cacert=proxy.ca_cert)


def assert_enforced(proxy: MitmdumpProcess, server: EchoServer, what: str) -> None:
    """A Chime-bound request now carries exactly the configured headers (HTTP/1.1 and HTTP/2)."""
    for version in ("1.1", "2"):
        result = curl(
            server.url(f"/lifetime/{version}"),
            proxy_port=proxy.port,
            cacert=proxy.ca_cert,
            http=version,
        )
        assert result.returncode == 0 and result.status == 200, f"{what}: {result}"
        assert_chime_headers(
            result.headers(), APP_KEYS, TENANTS, http2=version == "2", context=f"{what}: {result}"
        )


def touch_later(path: Path, text: str) -> None:
    """Write `text` and move the mtime on, so mitmproxy's watcher (mtime-based) sees a change."""
    path.write_text(text, encoding="utf-8")
    later = time.time() + 2
    os.utime(path, (later, later))


# The -s script while the process runs


def test_script_removed_leaves_the_addon_in_force(
    proxy_launcher: ProxyLauncher, allowlist: Path, shim: Path, chime_server: EchoServer
) -> None:
    proxy = proxy_launcher.start(allowlist, script=shim)
    assert_enforced(proxy, chime_server, "at start")
    mark = proxy.mark()
    shim.unlink()
    proxy.wait_for_log(r"mitmproxy unloaded .*chime_headers\.py.*stays in force", since=mark)
    assert_enforced(proxy, chime_server, "with the script gone")
    shutil.copy(ADDON_SCRIPT, shim)  # back again: mitmproxy never reloads a removed script
    time.sleep(1.5)
    assert_enforced(proxy, chime_server, "with the script back")


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param("def broken(:\n", id="syntax-error"),
        pytest.param("import module_that_is_not_installed\n", id="import-error"),
        pytest.param("", id="empty"),
        pytest.param("raise RuntimeError('half-written')\n", id="raises"),
    ],
)
def test_script_broken_leaves_the_addon_in_force(
    proxy_launcher: ProxyLauncher,
    allowlist: Path,
    shim: Path,
    chime_server: EchoServer,
    broken: str,
) -> None:
    good = shim.read_text(encoding="utf-8")
    proxy = proxy_launcher.start(allowlist, script=shim)
    assert_enforced(proxy, chime_server, "at start")
    mark = proxy.mark()
    touch_later(shim, broken)
    proxy.wait_for_log(r"mitmproxy unloaded .*stays in force", since=mark, timeout=10)
    assert_enforced(proxy, chime_server, "while the script is broken")
    mark = proxy.mark()
    touch_later(shim, good)
    proxy.wait_for_log(r"loaded again; the addon loaded at start-up stays", since=mark, timeout=10)
    assert_enforced(proxy, chime_server, "once the script is mended")
    assert proxy.output().count("allowlist loaded from") == 1  # one addon, never a second


def test_package_that_cannot_load_again_leaves_the_addon_in_force(
    proxy_launcher: ProxyLauncher, allowlist: Path, tmp_path: Path, chime_server: EchoServer
) -> None:
    """The script reloads beside a package that now fails to import (a half-done upgrade)."""
    checkout = tmp_path / "upgrade"
    shutil.copytree(REPO_ROOT / "src", checkout / "src")
    (checkout / "addon").mkdir()
    script = checkout / "addon" / "chime_headers.py"
    shutil.copy(ADDON_SCRIPT, script)
    proxy = proxy_launcher.start(allowlist, script=script)
    assert_enforced(proxy, chime_server, "at start")
    # A new module the reloaded script imports first, broken as by an upgrade half-way through.
    text = script.read_text(encoding="utf-8")
    half_copied = checkout / "src" / "chime_egress" / "upgrade_in_progress.py"
    half_copied.write_text("raise ImportError('half-copied')\n")
    first_import = "    from chime_egress.proxy.addon"
    assert first_import in text
    touch_later(
        script,
        text.replace(first_import, f"    import chime_egress.upgrade_in_progress\n{first_import}"),
    )
    mark = proxy.mark()
    proxy.wait_for_log(r"could not load again .*stays in force", since=mark, timeout=10)
    assert_enforced(proxy, chime_server, "after the failed reload")


# Start-up: refused, with the message alone


START_UP_FAULTS = {
    "empty-allowlist-option": (["--set", "chime_allowlist="], "chime_allowlist is empty"),
    "allowlist-option-without-value": (["--set", "chime_allowlist"], "chime_allowlist"),
    "typo-in-option-name": (
        ["--set", "chime_allowlis=/etc/chime/allowlist.yaml"],
        "unknown option chime_allowlis; did you mean chime_allowlist?",
    ),
    "tcp-hosts": (["--set", "tcp_hosts=.*"], "tcp_hosts: refused"),
    "udp-hosts": (["--set", "udp_hosts=.*"], "udp_hosts: refused"),
    "inbound-validation-off": (
        ["--set", "validate_inbound_headers=false"],
        "validate_inbound_headers: refused",
    ),
    "modify-headers": (
        ["--set", "modify_headers=/~q/X-Amzn-Chime-App-Keys/Typo"],
        "modify_headers: refused",
    ),
    "modify-headers-connection": (
        ["--modify-headers", "/~q/Connection/x-amzn-chime-tenants"],
        "modify_headers: refused",
    ),
    "modify-body": (["--set", "modify_body=/~q/x/X-Amzn-Chime-Tenants: y"], "modify_body: refused"),
    "map-remote": (["--map-remote", "|example.com|127.0.0.2"], "map_remote: refused"),
    "alt-svc": (["--set", "keep_alt_svc_header=true"], "keep_alt_svc_header: refused"),
    "ignore-hosts": (["--ignore-hosts", ".*"], "ignore_hosts: refused"),
}


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("fault", list(START_UP_FAULTS))
def test_start_up_faults_end_the_process_with_the_message_alone(
    mitm_confdir: Path, allowlist: Path, shim: Path, tmp_path: Path, entry: str, fault: str
) -> None:
    extra_args, message = START_UP_FAULTS[fault]
    rc, output = run_expect_failure(
        confdir=mitm_confdir,
        script=entry_script(entry, shim),
        allowlist=None
        if fault.startswith("empty-allowlist-option") or "without-value" in fault
        else allowlist,
        extra_args=extra_args,
        cwd=tmp_path,
    )
    assert rc == 1, f"exit code {rc}:\n{output}"
    assert message in output, output
    assert_clean_start_up_failure(output)


@pytest.mark.parametrize("entry", ENTRIES)
def test_invalid_allowlist_at_start_is_the_message_alone(
    mitm_confdir: Path, shim: Path, tmp_path: Path, entry: str
) -> None:
    allowlist = tmp_path / "allowlist.yaml"
    allowlist.write_text("apps:\n  - app_key: A\n    tenants: [x]\ndestinations: {cidrs: []}\n")
    rc, output = run_expect_failure(
        confdir=mitm_confdir, script=entry_script(entry, shim), allowlist=allowlist, cwd=tmp_path
    )
    assert rc == 1, output
    # One line says it all: what was refused, and the file:line: field message.
    [line] = [line for line in output.splitlines() if "invalid configuration" in line]
    assert (
        f"chime_allowlist: invalid configuration: {allowlist}:3: apps[0].tenants[0]: 'x' is 1 "
        "character long; a TenantId has 2 to 256"
    ) in line, output
    assert_clean_start_up_failure(output)


@pytest.mark.parametrize("entry", ENTRIES)
def test_deeply_nested_allowlist_at_start_is_a_clean_error(
    mitm_confdir: Path, shim: Path, tmp_path: Path, entry: str
) -> None:
    allowlist = tmp_path / "allowlist.yaml"
    allowlist.write_text("apps: " + "[" * 50_000 + "\n")
    rc, output = run_expect_failure(
        confdir=mitm_confdir, script=entry_script(entry, shim), allowlist=allowlist, cwd=tmp_path
    )
    assert rc == 1, output
    assert f"{allowlist}:1: nested more than 16 levels deep" in output
    assert_clean_start_up_failure(output)


# Options changed while the process runs (mitmproxy's `set` command)


RUNTIME_CHANGES = [
    "tcp_hosts=.*",
    "ignore_hosts=.*",
    "validate_inbound_headers=false",
    "modify_headers=/~q/X-Amzn-Chime-App-Keys/Typo",
    "map_remote=|example.com|127.0.0.2",
    "chime_allowlist=",
    "chime_allowlist=/nonexistent/allowlist.yaml",
    "chime_websocket_relay=frames",
]


@pytest.mark.parametrize("entry", ENTRIES)
def test_options_changed_at_run_time_are_refused(
    proxy_launcher: ProxyLauncher,
    allowlist: Path,
    shim: Path,
    chime_server: EchoServer,
    entry: str,
) -> None:
    scripts = ["-s", str(CONTROL)]
    proxy = proxy_launcher.start(allowlist, script=entry_script(entry, shim), extra_args=scripts)
    for spec in RUNTIME_CHANGES:
        name = spec.split("=", 1)[0]
        answer = curl(f"http://control.invalid/set?{quote(spec, safe='')}", proxy_port=proxy.port)
        assert answer.status == 409, f"{spec} was not refused: {answer}"
        assert name in str(answer.body), answer
        assert_enforced(proxy, chime_server, f"after refusing {spec}")


def test_removing_the_script_through_the_scripts_option_leaves_the_addon(
    proxy_launcher: ProxyLauncher, allowlist: Path, shim: Path, chime_server: EchoServer
) -> None:
    proxy = proxy_launcher.start(allowlist, script=shim, extra_args=["-s", str(CONTROL)])
    answer = curl(
        f"http://control.invalid/set?{quote(f'scripts={CONTROL}')}", proxy_port=proxy.port
    )
    assert answer.status == 200, answer
    proxy.wait_for_log(r"mitmproxy unloaded .*stays in force")
    assert_enforced(proxy, chime_server, "with the entry script unloaded")


# Other addons, and files that misbehave


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize(
    ("other", "doing", "logged"),
    [
        (TAMPER, "rewrites the headers", r"another addon changed the Chime headers"),
        (PASSTHROUGH, "passes TLS through", r"another addon asked to pass .* through undecrypted"),
    ],
    ids=["rewriting-the-headers", "passing-chime-through"],
)
def test_another_addon_is_overruled(
    proxy_launcher: ProxyLauncher,
    allowlist: Path,
    shim: Path,
    chime_server: EchoServer,
    entry: str,
    other: Path,
    doing: str,
    logged: str,
) -> None:
    proxy = proxy_launcher.start(
        allowlist, script=entry_script(entry, shim), extra_args=["-s", str(other)]
    )
    assert_enforced(proxy, chime_server, f"beside an addon that {doing}")
    proxy.wait_for_log(logged)


def start_reloading_fast(
    launcher: ProxyLauncher, allowlist: Path, script: Path | str
) -> MitmdumpProcess:
    """The proxy checking its files every 0.2 s: a bad edit shows in the log at once."""
    return launcher.start(allowlist, script=script, extra_args=FAST_RELOAD)


@pytest.mark.parametrize("entry", ENTRIES)
def test_allowlist_replaced_by_a_fifo_fails_the_reload_and_never_hangs(
    proxy_launcher: ProxyLauncher,
    allowlist: Path,
    shim: Path,
    chime_server: EchoServer,
    entry: str,
) -> None:
    proxy = start_reloading_fast(proxy_launcher, allowlist, entry_script(entry, shim))
    mark = proxy.mark()
    allowlist.unlink()
    os.mkfifo(allowlist)
    proxy.wait_for_log(r"reload failed.*\n.*is not a regular file", since=mark, timeout=10)
    assert_enforced(proxy, chime_server, "with a FIFO in place of the allowlist")
    # A later edit is still loaded.
    mark = proxy.mark()
    allowlist.unlink()
    write_config(allowlist.parent, [App("AppKey2")])
    proxy.wait_for_log(r"allowlist reloaded from", since=mark, timeout=10)
    result = fetch(proxy, chime_server)
    assert_chime_headers(result.headers(), "AppKey2", None, context=result)
    # And the process still stops when asked.
    allowlist.unlink()
    os.mkfifo(allowlist)
    time.sleep(1)
    assert proxy.pid is not None
    os.kill(proxy.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while proxy.returncode is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proxy.returncode is not None, "SIGTERM did not stop the proxy"


@pytest.mark.parametrize("entry", ENTRIES)
def test_deeply_nested_edit_is_a_clean_failed_reload(
    proxy_launcher: ProxyLauncher,
    allowlist: Path,
    shim: Path,
    chime_server: EchoServer,
    entry: str,
) -> None:
    proxy = start_reloading_fast(proxy_launcher, allowlist, entry_script(entry, shim))
    mark = proxy.mark()
    allowlist.write_text("apps: " + "[" * 50_000 + "\n")
    proxy.wait_for_log(r"reload failed.*\n.*nested more than 16 levels deep", since=mark)
    assert "Traceback" not in proxy.output()[mark:]
    assert_enforced(proxy, chime_server, "after the refused edit")


# The launcher needs no checkout


def test_launcher_runs_from_the_installed_package_alone(
    tmp_path: Path, mitm_confdir: Path, test_ca: object, allowlist: Path, chime_server: EchoServer
) -> None:
    """Only the package (as `pip install .` puts it in site-packages), from a folder elsewhere."""
    site = tmp_path / "site-packages"
    shutil.copytree(REPO_ROOT / "src" / "chime_egress", site / "chime_egress")
    # A mark only this copy has: the proxy's check page tells which package it runs.
    init = site / "chime_egress" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "', '__version__ = "copied-'))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proxy = MitmdumpProcess(confdir=mitm_confdir, cwd=elsewhere, label="installed launcher")
    proxy.command = [
        sys.executable,
        "-c",
        "import sys; from chime_egress.cli import main; sys.exit(main())",
        "run",
        "--listen-host",
        "127.0.0.1",
        "--listen-port",
        "0",
        "--set",
        f"confdir={mitm_confdir}",
        "--set",
        f"ssl_verify_upstream_trusted_ca={test_ca.cert_path}",  # type: ignore[attr-defined]
        "--set",
        f"chime_allowlist={allowlist}",
        "--set",
        f"chime_local_destinations={TEST_LOCAL_DESTINATIONS}",
    ]
    env_before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(site)
    try:
        proxy.start()
    finally:
        if env_before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = env_before
    try:
        loaded = proxy.wait_for_log(r"allowlist loaded from (\S+):")
        assert loaded.group(1) == str(allowlist)
        check = curl("http://chime-egress.invalid/check.json", proxy_port=proxy.port)
        assert check.json["version"].startswith("copied-"), check
        assert_enforced(proxy, chime_server, "through the installed launcher")
    finally:
        proxy.stop()


def test_connections_made_before_the_addon_are_closed_when_it_arrives(
    proxy_launcher: ProxyLauncher, allowlist: Path, shim: Path, chime_server: EchoServer
) -> None:
    """A proxy that ran without the addon gets it through the scripts option at run time."""
    bare = proxy_launcher.start(
        None, script=CONTROL, extra_args=["--set", f"chime_allowlist={allowlist}"]
    )
    with https_connection(
        proxy_port=bare.port, host=chime_server.host, port=chime_server.port, cacert=bare.ca_cert
    ) as conn:
        status, body = get_json(conn, "/before")
        assert status == 200 and header_values(body, "X-Amzn-Chime-App-Keys") == []
        both = quote(f"scripts={CONTROL}", safe="") + "&" + quote(f"scripts={shim}", safe="")
        # The answer may not come back: the control request's own connection is one of those
        # the arriving addon closes.
        curl(f"http://control.invalid/set?{both}", proxy_port=bare.port)
        bare.wait_for_log(r"closed \d+ connection\(s\) accepted before the addon was in force")
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            get_json(conn, "/after-on-the-old-connection")
    assert_enforced(bare, chime_server, "once the addon arrived")
