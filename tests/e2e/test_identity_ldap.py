"""Policy per user and group, with proxy authentication and groups from a real OpenLDAP slapd.

Every client connects from 127.0.0.1, the same address: only who is asking tells them apart.
  alice  group sales        -> identities entry "sales": CorpMeetings (corpTenant) and CrmVideo
  bob    group contractors  -> entry "contractors": CorpMeetings, limited to corpTenant
  dave   both groups        -> "contractors", the first matching entry in file order
  carol  no group           -> the top-level settings: CorpMeetings, any tenant
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.asserts import assert_chime_headers, assert_no_chime_headers_added
from tests.support.clients import CurlResult, curl
from tests.support.config import write_allowlist
from tests.support.directory import PASSWORDS, PEOPLE, SERVICE_DN, SERVICE_PASSWORD, Slapd
from tests.support.metrics import scrape as scrape_metrics
from tests.support.proxy import MitmdumpProcess, ProxyLauncher
from tests.support.servers import EchoServer, free_port
from tests.support.tls import TestCA

SALES = ("CorpMeetings,CrmVideo", "CorpMeetings:corpTenant")
CONTRACTORS = ("CorpMeetings", "CorpMeetings:corpTenant")
TOP_LEVEL = ("CorpMeetings", None)

ALLOWLIST = """\
apps:
  - app_key: CorpMeetings
identity:
  proxy_auth: {proxy_auth}
  {htpasswd}
  ldap:
    url: {url}
    bind_dn: {bind_dn}
    bind_password_file: bind-password
    user_base: {people}
    timeout_seconds: {timeout}
  cache_seconds: {cache}
  failure_cache_seconds: 1
identities:
  - name: contractors
    groups: [contractors]
    mode: enforce
    apps:
      - app_key: CorpMeetings
        tenants: [corpTenant]
  - name: sales
    groups: [Sales]
    mode: enforce
    apps:
      - app_key: CorpMeetings
        tenants: [corpTenant]
      - app_key: CrmVideo
destinations:
  cidrs: [127.0.0.2/32]
"""


def write_config(
    folder: Path,
    slapd: Slapd,
    *,
    proxy_auth: str = "ldap",
    cache: float = 60,
    timeout: float = 2,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bind-password").write_text(SERVICE_PASSWORD + "\n")
    htpasswd = ""
    if proxy_auth == "htpasswd":
        import bcrypt

        lines = [
            f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
            for user, pw in PASSWORDS.items()
        ]
        (folder / "users.htpasswd").write_text("".join(lines))
        htpasswd = "htpasswd: users.htpasswd"
    text = ALLOWLIST.format(
        proxy_auth=proxy_auth,
        htpasswd=htpasswd,
        url=slapd.url,
        bind_dn=SERVICE_DN,
        people=PEOPLE,
        cache=cache,
        timeout=timeout,
    )
    return write_allowlist(folder, text)


@dataclass(frozen=True)
class Running:
    proxy: MitmdumpProcess
    metrics_url: str


def start(launcher: ProxyLauncher, allowlist: Path) -> Running:
    port = free_port()
    proxy = launcher.start(allowlist, extra_args=["--set", f"chime_metrics=127.0.0.1:{port}"])
    return Running(proxy, f"http://127.0.0.1:{port}/metrics")


def scrape(running: Running) -> dict[str, float]:
    return scrape_metrics(running.metrics_url)


def as_user(
    running: Running,
    server: EchoServer,
    user: str | None,
    password: str | None = None,
    *,
    path: str = "/",
    cacert: Path | None = None,
    http: str = "1.1",
    max_time: float = 10.0,
) -> CurlResult:
    if password is None and user is not None:
        password = PASSWORDS[user]
    extra = ["--proxy-user", f"{user}:{password}"]
    scheme = "https" if server.mode == "tls" else "http"
    return curl(
        f"{scheme}://{server.host}:{server.port}{path}",
        proxy_port=running.proxy.port,
        cacert=cacert or running.proxy.ca_cert,
        http=http,  # type: ignore[arg-type]
        extra_args=extra if user is not None else [],
        max_time=max_time,
    )


def proxy_status(result: CurlResult) -> int:
    """The status the proxy answered: of the request, or of the CONNECT when it refused that."""
    if result.status:
        return result.status
    match = re.search(r"CONNECT tunnel failed, response (\d+)", result.stderr)
    return int(match.group(1)) if match else 0


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    with Slapd(tmp_path_factory.mktemp("slapd")) as server:
        yield server


@pytest.fixture(scope="module")
def running(
    module_proxy_launcher: ProxyLauncher, slapd: Slapd, tmp_path_factory: pytest.TempPathFactory
) -> Running:
    return start(module_proxy_launcher, write_config(tmp_path_factory.mktemp("ldap"), slapd))


def test_two_users_on_one_address_get_different_headers(
    running: Running, chime_server: EchoServer
) -> None:
    for user, (keys, tenants) in (
        ("alice", SALES),
        ("bob", CONTRACTORS),
        ("dave", CONTRACTORS),
        ("carol", TOP_LEVEL),
    ):
        result = as_user(running, chime_server, user, path=f"/{user}")
        assert result.status == 200, result
        assert_chime_headers(result.headers(), keys, tenants, context=result)
        # The proxy credentials end at the proxy.
        assert result.values("Proxy-Authorization") == [], result
    [line] = running.proxy.log_lines(r"chime: intercepting .*identity sales")
    assert "(users" not in line and "alice" not in line  # user names are not logged by default


def test_http2_and_plain_http_per_request(
    running: Running, chime_server: EchoServer, chime_plain_server: EchoServer
) -> None:
    result = as_user(running, chime_server, "alice", http="2")
    assert result.http_version == "2", result
    assert_chime_headers(result.headers(), *SALES, http2=True, context=result)
    for user, expected in (("bob", CONTRACTORS), ("alice", SALES)):
        plain = as_user(running, chime_plain_server, user, path=f"/plain-{user}")
        assert plain.status == 200, plain
        assert_chime_headers(plain.headers(), *expected, context=plain)
        assert plain.values("Proxy-Authorization") == [], plain


@pytest.mark.parametrize(
    ("user", "password"),
    [
        (None, None),  # no credentials: asked for them
        ("alice", "wrong"),
        ("alice", ""),  # an empty password is an anonymous bind in LDAP: must not pass
        ("*", "anything"),  # a filter wildcard must not find somebody
        ("alice)(uid=*", "anything"),  # nor an injected filter
        ("nobody", "anything"),
    ],
)
def test_missing_or_wrong_credentials_are_asked_again_and_nothing_leaves(
    running: Running,
    chime_server: EchoServer,
    chime_plain_server: EchoServer,
    other_server: EchoServer,
    user: str | None,
    password: str | None,
) -> None:
    for server in (chime_server, chime_plain_server, other_server):
        before = len(server.requests())
        result = as_user(running, server, user, password)
        assert proxy_status(result) == 407, result
        assert len(server.requests()) == before


def test_group_change_in_the_directory_applies_after_the_cache_time(
    module_proxy_launcher: ProxyLauncher,
    slapd: Slapd,
    tmp_path_factory: pytest.TempPathFactory,
    chime_server: EchoServer,
) -> None:
    running = start(
        module_proxy_launcher,
        write_config(tmp_path_factory.mktemp("ldap-cache"), slapd, cache=2),
    )
    first = as_user(running, chime_server, "alice")
    assert_chime_headers(first.headers(), *SALES, context=first)
    again = as_user(running, chime_server, "alice")
    assert_chime_headers(again.headers(), *SALES, context=again)
    samples = scrape(running)
    assert samples['chime_egress_identity_lookups_total{result="cached",source="ldap"}'] >= 1
    slapd.set_members("sales", ["dave"])
    slapd.set_members("contractors", ["alice", "bob", "dave"])
    try:
        deadline = time.monotonic() + 30
        while True:
            result = as_user(running, chime_server, "alice")
            assert result.status == 200, result
            if result.values("X-Amzn-Chime-App-Keys") == [CONTRACTORS[0]]:
                break
            assert_chime_headers(result.headers(), *SALES, context=result)  # not yet expired
            assert time.monotonic() < deadline, "the new group never applied"
            time.sleep(0.5)
        assert_chime_headers(result.headers(), *CONTRACTORS, context=result)
    finally:
        slapd.set_members("sales", ["alice", "dave"])
        slapd.set_members("contractors", ["bob", "dave"])


def test_directory_down_refuses_every_uncached_login(
    module_proxy_launcher: ProxyLauncher,
    tmp_path_factory: pytest.TempPathFactory,
    chime_server: EchoServer,
    other_server: EchoServer,
    test_ca: TestCA,
) -> None:
    # Its own directory, taken down: the proxy cannot check any password it has not cached.
    with Slapd(tmp_path_factory.mktemp("slapd-down")) as down:
        running = start(
            module_proxy_launcher, write_config(tmp_path_factory.mktemp("ldap-down"), down)
        )
        cached = as_user(running, chime_server, "alice")
        assert_chime_headers(cached.headers(), *SALES, context=cached)
        down.stop()
        for server, cacert in ((chime_server, None), (other_server, test_ca.cert_path)):
            before = len(server.requests())
            result = as_user(running, server, "bob", cacert=cacert)
            assert proxy_status(result) == 502, result
            assert len(server.requests()) == before
        # An identity still in the cache keeps working while the directory is away.
        still = as_user(running, chime_server, "alice")
        assert_chime_headers(still.headers(), *SALES, context=still)
        assert running.proxy.log_lines(r"cannot tell who .* is: .*ldap://127\.0\.0\.1")
        samples = scrape(running)
        refused = samples['chime_egress_identity_refused_total{reason="directory_unavailable"}']
        assert refused >= 2


def test_directory_down_for_groups_refuses_chime_only(
    module_proxy_launcher: ProxyLauncher,
    tmp_path_factory: pytest.TempPathFactory,
    chime_server: EchoServer,
    other_server: EchoServer,
    test_ca: TestCA,
) -> None:
    # Passwords from an htpasswd file, groups from the directory: with the directory down the
    # user is still known, so other traffic goes on, but their Chime policy is not: refused.
    with Slapd(tmp_path_factory.mktemp("slapd-groups-down")) as down:
        folder = tmp_path_factory.mktemp("htpasswd-ldap-groups")
        running = start(
            module_proxy_launcher, write_config(folder, down, proxy_auth="htpasswd", cache=0)
        )
        ok = as_user(running, chime_server, "alice")
        assert_chime_headers(ok.headers(), *SALES, context=ok)
        down.stop()
        before = len(chime_server.requests())
        refused = as_user(running, chime_server, "alice", path="/while-down")
        assert refused.status == 502, refused
        assert len(chime_server.requests()) == before
        other = as_user(running, other_server, "alice", cacert=test_ca.cert_path)
        assert other.status == 200, other  # passed through undecrypted: the real certificate
        assert_no_chime_headers_added(other.headers(), context=other)
        [line] = running.proxy.log_lines(r"chime: refusing 127\.0\.0\.1:\d+ -> 127\.0\.0\.2")
        assert "who is asking decides its Chime policy" in line
        down.start()
        back = as_user(running, chime_server, "alice", path="/back")
        assert_chime_headers(back.headers(), *SALES, context=back)


def test_a_slow_directory_holds_only_the_connections_waiting_for_it(
    module_proxy_launcher: ProxyLauncher,
    tmp_path_factory: pytest.TempPathFactory,
    chime_server: EchoServer,
) -> None:
    # slapd frozen (SIGSTOP) accepts connections and answers nothing. A login waiting for it
    # must not stop the proxy from serving a user it already knows: if the directory were
    # asked inside the event loop (as mitmproxy's own LDAP check does), alice would wait too.
    with Slapd(tmp_path_factory.mktemp("slapd-slow")) as slow:
        running = start(
            module_proxy_launcher,
            write_config(tmp_path_factory.mktemp("ldap-slow"), slow, timeout=5),
        )
        assert_chime_headers(as_user(running, chime_server, "alice").headers(), *SALES)
        slow.pause()
        try:
            waiting: dict[str, object] = {}

            def login_bob() -> None:
                waiting["result"] = as_user(running, chime_server, "bob", max_time=20)
                waiting["finished"] = time.monotonic()

            thread = threading.Thread(target=login_bob)
            thread.start()
            time.sleep(0.5)  # bob's CONNECT is now waiting for the directory
            served = as_user(running, chime_server, "alice", path="/during")
            alice_finished = time.monotonic()
            assert_chime_headers(served.headers(), *SALES, context=served)
            thread.join(30)
            bob = waiting["result"]
            assert isinstance(bob, CurlResult)
            assert proxy_status(bob) == 502, bob  # the directory's deadline passed: refused
            assert alice_finished < float(waiting["finished"])  # type: ignore[arg-type]
        finally:
            slow.resume()
        # Once the directory answers again, so does the proxy.
        result = as_user(running, chime_server, "bob", path="/after")
        assert_chime_headers(result.headers(), *CONTRACTORS, context=result)
