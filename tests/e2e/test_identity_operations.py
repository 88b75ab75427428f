"""Running with identities: reloads by who is asking, TLS to the proxy, health, refused options.

The parent proxy here is played by clients connecting from 127.0.0.5 (the listed parent) with
the identity header; the other tests of the chained setup use a real Squid.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from pathlib import Path

import pytest

from tests.support.asserts import assert_chime_headers
from tests.support.clients import curl
from tests.support.config import write_allowlist, write_text
from tests.support.proxy import MitmdumpProcess, ProxyLauncher, run_expect_failure
from tests.support.servers import EchoServer, format_authority
from tests.support.tls import TestCA

PARENT = "127.0.0.5"

ALLOWLIST = """\
mode: observe
apps:
  - app_key: CorpKey
identity:
  trusted_header: {parents: [127.0.0.5/32]}
  group_file: groups.csv
identities:
  - name: pilot
    users: [carol]
    mode: observe
  - name: contractors
    groups: [contractors]
    mode: enforce
    apps: [{app_key: CorpKey, tenants: [corpOrg]}]
destinations: {cidrs: [127.0.0.2/32]}
"""


@pytest.fixture
def running(proxy_launcher: ProxyLauncher, tmp_path: Path) -> MitmdumpProcess:
    (tmp_path / "groups.csv").write_text("user,group\nbob,contractors\n")
    allowlist = write_allowlist(tmp_path, ALLOWLIST)
    return proxy_launcher.start(allowlist, extra_args=["--set", "chime_reload_interval=0.1"])


def as_parent(proxy: MitmdumpProcess, server: EchoServer, user: str, **kwargs: object):
    return curl(
        server.url("/"),
        proxy_port=proxy.port,
        cacert=kwargs.pop("cacert", proxy.ca_cert),  # type: ignore[arg-type]
        extra_args=[
            "--interface",
            PARENT,
            "--proxy-header",
            f"X-Authenticated-User: {user}",
        ],
    )


def tunnel_from_parent(proxy: MitmdumpProcess, server: EchoServer, user: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), 10, source_address=(PARENT, 0))
    authority = format_authority(server.host, server.port)
    sock.sendall(
        f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
        f"X-Authenticated-User: {user}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def test_a_reload_closes_an_observed_connection_of_a_user_now_enforced(
    running: MitmdumpProcess, tmp_path: Path, chime_server: EchoServer, test_ca: TestCA
) -> None:
    # carol's entry observes and so does the top level: only her identity can tell the proxy
    # that her open connection must now carry the headers.
    context = ssl.create_default_context(cafile=str(test_ca.cert_path))  # observed: real cert
    observed = context.wrap_socket(
        tunnel_from_parent(running, chime_server, "carol"), server_hostname=chime_server.host
    )
    connection = http.client.HTTPConnection(chime_server.host, chime_server.port)
    connection.sock = observed
    connection.request("GET", "/before")
    assert connection.getresponse().read()
    since = running.mark()
    write_text(
        tmp_path / "allowlist.yaml",
        ALLOWLIST.replace("users: [carol]\n    mode: observe", "users: [carol]\n    mode: enforce"),
    )
    running.wait_for_log(r"chime: allowlist reloaded", since=since, timeout=15)
    with pytest.raises((http.client.HTTPException, OSError)):
        connection.request("GET", "/after")
        connection.getresponse().read()
    connection.close()
    line = running.wait_for_log(r"chime: closing observed connection .*", since=since).group(0)
    assert "identity pilot, mode enforce" in line
    assert "carol" not in line  # the entry's people are named only with identity.log_users
    enforced = as_parent(running, chime_server, "carol")
    assert_chime_headers(enforced.headers(), "CorpKey", None, context=enforced)


def test_an_edited_group_file_is_reloaded(
    running: MitmdumpProcess, tmp_path: Path, chime_server: EchoServer, test_ca: TestCA
) -> None:
    bob = as_parent(running, chime_server, "bob")
    assert_chime_headers(bob.headers(), "CorpKey", "CorpKey:corpOrg", context=bob)
    dave = as_parent(running, chime_server, "dave", cacert=test_ca.cert_path)  # observed
    assert dave.status == 200, dave
    since = running.mark()
    write_text(tmp_path / "groups.csv", "user,group\nbob,contractors\ndave,contractors\n")
    running.wait_for_log(r"chime: allowlist reloaded", since=since, timeout=15)
    dave = as_parent(running, chime_server, "dave")
    assert_chime_headers(dave.headers(), "CorpKey", "CorpKey:corpOrg", context=dave)
    # A broken group file keeps the last good configuration.
    since = running.mark()
    write_text(tmp_path / "groups.csv", "name\nbob\n")
    line = running.wait_for_log(r"(?s)chime: reload failed.*?groups\.csv:1: .*", since=since)
    assert "the first line must name the columns 'user' and 'group'" in line.group(0)
    dave = as_parent(running, chime_server, "dave")
    assert_chime_headers(dave.headers(), "CorpKey", "CorpKey:corpOrg", context=dave)


HTPASSWD_ALLOWLIST = """\
apps: [{app_key: CorpKey}]
identity:
  proxy_auth: htpasswd
  htpasswd: users.htpasswd
identities:
  - {name: sales, users: [alice], mode: enforce, apps: [{app_key: CorpKey}, {app_key: CrmKey}]}
destinations: {cidrs: [127.0.0.2/32]}
"""


@pytest.fixture
def htpasswd_proxy(proxy_launcher: ProxyLauncher, tmp_path: Path) -> MitmdumpProcess:
    import bcrypt

    hashed = bcrypt.hashpw(b"alice-pw", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "users.htpasswd").write_text(f"alice:{hashed}\n")
    return proxy_launcher.start(write_allowlist(tmp_path, HTPASSWD_ALLOWLIST))


def test_credentials_over_tls_to_the_proxy(
    htpasswd_proxy: MitmdumpProcess, chime_server: EchoServer
) -> None:
    # The client speaks TLS to the proxy itself: the Basic credentials travel encrypted.
    result = curl(
        chime_server.url("/over-tls"),
        proxy_port=None,
        cacert=htpasswd_proxy.ca_cert,
        extra_args=[
            "--proxy",
            f"https://localhost:{htpasswd_proxy.port}",
            "--proxy-cacert",
            str(htpasswd_proxy.ca_cert),
            "--proxy-user",
            "alice:alice-pw",
        ],
    )
    assert result.status == 200, result
    assert_chime_headers(result.headers(), "CorpKey,CrmKey", None, context=result)


def test_the_health_page_needs_no_credentials(htpasswd_proxy: MitmdumpProcess) -> None:
    result = curl("http://chime-egress.invalid/health", proxy_port=htpasswd_proxy.port)
    assert result.status == 200, result
    assert result.json["status"] == "healthy"


def test_the_check_page_shows_the_askers_own_identity_entry(
    htpasswd_proxy: MitmdumpProcess,
) -> None:
    page = "http://chime-egress.invalid/check.json"
    anonymous = curl(page, proxy_port=htpasswd_proxy.port)
    assert anonymous.status == 407, anonymous  # who is asking decides what the page shows
    alice = curl(
        page, proxy_port=htpasswd_proxy.port, extra_args=["--proxy-user", "alice:alice-pw"]
    )
    assert alice.status == 200, alice
    assert alice.json["network"]["kind"] == "identity"
    assert alice.json["network"]["name"] == "sales"
    assert alice.json["headers"] == [{"name": "X-Amzn-Chime-App-Keys", "value": "CorpKey,CrmKey"}]
    assert "alice" not in alice.text  # nor any other user's name: the entry's lists stay private


def test_mitmproxys_own_proxyauth_is_refused_with_an_identity_section(
    mitm_confdir: Path, tmp_path: Path
) -> None:
    (tmp_path / "users.htpasswd").write_text("alice:{SHA}x\n")
    allowlist = write_allowlist(tmp_path, HTPASSWD_ALLOWLIST)
    failed = run_expect_failure(
        confdir=mitm_confdir,
        allowlist=allowlist,
        extra_args=["--set", "proxyauth=any"],
    )
    assert failed.returncode == 1, failed.output
    assert "unset mitmproxy's proxyauth option" in failed.output


def test_user_names_are_logged_only_when_enabled_and_passwords_never(
    proxy_launcher: ProxyLauncher, tmp_path: Path, chime_server: EchoServer
) -> None:
    import bcrypt

    hashed = bcrypt.hashpw(b"alice-pw", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "users.htpasswd").write_text(f"alice:{hashed}\n")
    allowlist = write_allowlist(
        tmp_path,
        HTPASSWD_ALLOWLIST.replace(
            "  htpasswd: users.htpasswd", "  htpasswd: users.htpasswd\n  log_users: true"
        ),
    )
    json_log = tmp_path / "events.jsonl"
    proxy = proxy_launcher.start(allowlist, extra_args=["--set", f"chime_log_json={json_log}"])
    for password in ("alice-pw", "wrong-pw"):
        curl(
            chime_server.url("/logged"),
            proxy_port=proxy.port,
            cacert=proxy.ca_cert,
            extra_args=["--proxy-user", f"alice:{password}"],
        )
    proxy.wait_for_log(r"proxy authentication failed for alice")
    # A user name is the client's text: a terminal escape in it reaches the log escaped.
    curl(
        chime_server.url("/logged"),
        proxy_port=proxy.port,
        cacert=proxy.ca_cert,
        extra_args=["--proxy-user", "al\x1b[2Jice:pw"],
    )
    proxy.wait_for_log(r"proxy authentication failed for al\\x1b\[2Jice from")
    assert "\x1b" not in proxy.output()
    records = [json.loads(line) for line in json_log.read_text().splitlines()]
    [intercepted] = [r for r in records if r["event"] == "connection_intercepted"]
    assert intercepted["user"] == "alice" and intercepted["network"] == "sales"
    failed = [r["user"] for r in records if r["event"] == "proxy_auth_failed"]
    assert failed == ["alice", "al\x1b[2Jice"]  # JSON escapes it; the value stays exact
    everything = json_log.read_text() + proxy.output()
    assert "alice-pw" not in everything and "wrong-pw" not in everything
