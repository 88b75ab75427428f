"""Identity from an authenticating parent proxy: a real Squid chained to mitmdump.

Clients authenticate to Squid (127.0.0.1:SQUID), which forwards everything to mitmdump from
127.0.0.5 with `X-Authenticated-User` (and `X-Authenticated-Groups: sales` for alice). mitmdump
believes these headers only from 127.0.0.5 and adds groups from a CSV group file (bob is a
contractor there). Clients that talk to mitmdump directly come from 127.0.0.1, not a parent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.asserts import assert_chime_headers, assert_no_chime_headers_added
from tests.support.clients import CurlResult, curl
from tests.support.config import write_allowlist
from tests.support.proxy import MitmdumpProcess, ProxyLauncher
from tests.support.servers import EchoServer
from tests.support.squid import GROUPS_HEADER, OUTGOING, USER_HEADER, Squid
from tests.support.tls import TestCA

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw", "dave": "dave-pw"}
SALES = ("CorpMeetings,CrmVideo", "CorpMeetings:corpTenant")
CONTRACTORS = ("CorpMeetings", "CorpMeetings:corpTenant")
TOP_LEVEL = ("CorpMeetings", None)

ALLOWLIST = f"""\
apps:
  - app_key: CorpMeetings
identity:
  trusted_header:
    parents: [{OUTGOING}/32]
    user: {USER_HEADER}
    groups: {GROUPS_HEADER}
  group_file: groups.csv
identities:
  - name: contractors
    groups: [contractors]
    mode: enforce
    apps:
      - app_key: CorpMeetings
        tenants: [corpTenant]
  - name: sales
    groups: [sales]
    mode: enforce
    apps:
      - app_key: CorpMeetings
        tenants: [corpTenant]
      - app_key: CrmVideo
  - name: pilot
    users: [carol]
    mode: observe
destinations:
  cidrs: [127.0.0.2/32]
"""


@pytest.fixture(scope="module")
def mitmdump(
    module_proxy_launcher: ProxyLauncher, tmp_path_factory: pytest.TempPathFactory
) -> MitmdumpProcess:
    folder = tmp_path_factory.mktemp("parent")
    (folder / "groups.csv").write_text("user,group,email\nbob,contractors,bob@example.org\n")
    return module_proxy_launcher.start(write_allowlist(folder, ALLOWLIST))


@pytest.fixture(scope="module")
def squid(mitmdump: MitmdumpProcess) -> Iterator[Squid]:
    with Squid(peer_port=mitmdump.port, passwords=PASSWORDS, groups={"alice": "sales"}) as parent:
        yield parent


def via_squid(
    squid: Squid,
    server: EchoServer,
    user: str,
    *,
    cacert: Path,
    path: str = "/",
    headers: tuple[str, ...] = (),
) -> CurlResult:
    scheme = "https" if server.mode == "tls" else "http"
    return curl(
        f"{scheme}://{server.host}:{server.port}{path}",
        proxy_port=squid.port,
        cacert=cacert,
        headers=headers,
        extra_args=["--proxy-user", f"{user}:{PASSWORDS[user]}"],
    )


def assert_no_identity_headers(result: CurlResult) -> None:
    assert result.values(USER_HEADER) == [], result
    assert result.values(GROUPS_HEADER) == [], result


def test_users_behind_the_parent_get_their_own_policy(
    squid: Squid, mitmdump: MitmdumpProcess, chime_server: EchoServer
) -> None:
    for user, (keys, tenants) in (("alice", SALES), ("bob", CONTRACTORS), ("dave", TOP_LEVEL)):
        result = via_squid(squid, chime_server, user, cacert=mitmdump.ca_cert, path=f"/{user}")
        assert result.status == 200, f"{result}\n{squid.describe()}"
        assert_chime_headers(result.headers(), keys, tenants, context=result)
        assert_no_identity_headers(result)


def test_an_identity_in_observe_mode_is_relayed_undecrypted(
    squid: Squid, chime_server: EchoServer, test_ca: TestCA
) -> None:
    # carol's entry observes: the tunnel is relayed as it is, so a client trusting only the
    # real server's CA succeeds, and nothing is added.
    result = via_squid(squid, chime_server, "carol", cacert=test_ca.cert_path)
    assert result.status == 200, result
    assert_no_chime_headers_added(result.headers(), context=result)


def test_plain_http_requests_of_several_users_over_the_parents_connections(
    squid: Squid, mitmdump: MitmdumpProcess, chime_plain_server: EchoServer
) -> None:
    # Squid sends the requests of many users over its kept connections to mitmdump: the
    # identity is each request's own.
    for round_ in range(2):
        for user, expected in (("alice", SALES), ("bob", CONTRACTORS), ("dave", TOP_LEVEL)):
            result = via_squid(
                squid,
                chime_plain_server,
                user,
                cacert=mitmdump.ca_cert,
                path=f"/plain-{user}-{round_}",
                # A client's own copy is removed by Squid, and any left by mitmdump.
                headers=(f"{USER_HEADER}: alice", f"{GROUPS_HEADER}: sales"),
            )
            assert result.status == 200, f"{result}\n{squid.describe()}"
            assert_chime_headers(result.headers(), *expected, context=result)
            assert_no_identity_headers(result)


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_a_spoofed_header_from_a_non_parent_is_ignored_and_removed(
    mitmdump: MitmdumpProcess,
    chime_server: EchoServer,
    chime_plain_server: EchoServer,
    scheme: str,
) -> None:
    server = chime_server if scheme == "https" else chime_plain_server
    since = mitmdump.mark()
    spoof = (f"{USER_HEADER}: alice", f"{GROUPS_HEADER}: sales")
    result = curl(
        f"{scheme}://{server.host}:{server.port}/spoofed",
        proxy_port=mitmdump.port,
        cacert=mitmdump.ca_cert,
        headers=spoof,
        extra_args=[arg for line in spoof for arg in ("--proxy-header", line)],
    )
    assert result.status == 200, result
    assert_chime_headers(result.headers(), *TOP_LEVEL, context=result)
    assert_no_identity_headers(result)  # never forwarded, in a tunnel or not
    [warning] = mitmdump.log_lines(r"chime: ignored and removed", since)
    assert f"{USER_HEADER} from 127.0.0.1:" in warning


def test_a_parent_sending_two_user_headers_gets_no_chime(
    mitmdump: MitmdumpProcess, chime_server: EchoServer, other_server: EchoServer, test_ca: TestCA
) -> None:
    # A parent appending its header to the client's copy: the user is the client's choice.
    two = ["--interface", OUTGOING]
    for line in (f"{USER_HEADER}: alice", f"{USER_HEADER}: mallory"):
        two += ["--proxy-header", line]
    before = len(chime_server.requests())
    refused = curl(
        chime_server.url("/two"), proxy_port=mitmdump.port, cacert=mitmdump.ca_cert, extra_args=two
    )
    assert refused.status == 502, refused
    assert len(chime_server.requests()) == before
    # Other destinations do not depend on who is asking.
    other = curl(
        other_server.url("/two"), proxy_port=mitmdump.port, cacert=test_ca.cert_path, extra_args=two
    )
    assert other.status == 200, other
