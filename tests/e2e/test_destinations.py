"""Which destinations count as Chime: an AWS-format ranges file (services, regions, overlapping
prefixes), extra ``cidrs``, and the lazy connection strategy.

Each allowlist lives in its own folder and names its ranges file by a relative path, while mitmdump
runs from another folder: the path must resolve against the allowlist's folder.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest

from tests.support.asserts import assert_chime_headers, assert_no_chime_headers_added
from tests.support.clients import curl
from tests.support.config import AWS_CHIME_PREFIXES, App, Prefix, write_config
from tests.support.proxy import MitmdumpProcess, ProxyLauncher
from tests.support.servers import EchoServer
from tests.support.tls import TestCA

APPS = [App("AppKey", ["orgId"])]


@dataclass(frozen=True)
class Case:
    """A destinations configuration and which of the three servers it makes Chime."""

    ranges: Sequence[Prefix | str]
    cidrs: Sequence[str] = ()
    services: Sequence[str] | None = None
    regions: Sequence[str] | None = None
    extra_args: Sequence[str] = ()
    chime: frozenset[str] = frozenset()


CASES: dict[str, Case] = {
    # Only the ranges file names the test addresses (default services: CHIME_MEETINGS).
    "ranges-file": Case(
        ranges=[*AWS_CHIME_PREFIXES, "127.0.0.2/32", "::1/128"],
        chime=frozenset({"127.0.0.2", "::1"}),
    ),
    # Only cidrs name them; the ranges file holds the real (non-loopback) Chime prefixes.
    "cidrs": Case(
        ranges=AWS_CHIME_PREFIXES,
        cidrs=["127.0.0.2/32", "::1/128"],
        chime=frozenset({"127.0.0.2", "::1"}),
    ),
    # The service filter: 127.0.0.3 is listed, but as EC2; ::1 only as GLOBALACCELERATOR.
    "other-services-ignored": Case(
        ranges=[
            *AWS_CHIME_PREFIXES,
            "127.0.0.2/32",
            Prefix("127.0.0.3/32", service="EC2"),
            Prefix("::1/128", service="GLOBALACCELERATOR"),
        ],
        services=["CHIME_MEETINGS"],
        chime=frozenset({"127.0.0.2"}),
    ),
    # ... and the other way round when the allowlist picks EC2.
    "services-selects": Case(
        ranges=[*AWS_CHIME_PREFIXES, "127.0.0.2/32", Prefix("127.0.0.3/32", service="EC2")],
        services=["EC2"],
        chime=frozenset({"127.0.0.3"}),
    ),
    # The region filter: ::1 is CHIME_MEETINGS, but in us-east-1.
    "regions": Case(
        ranges=[*AWS_CHIME_PREFIXES, "127.0.0.2/32", Prefix("::1/128", region="us-east-1")],
        regions=["GLOBAL"],
        chime=frozenset({"127.0.0.2"}),
    ),
    # Membership in ANY CHIME_MEETINGS prefix counts, even when a more specific prefix of another
    # service covers the address (as GLOBALACCELERATOR /24s sit inside 99.77.128.0/18).
    "overlapping-prefixes": Case(
        ranges=[
            *AWS_CHIME_PREFIXES,
            "127.0.0.2/32",
            "::/127",
            Prefix("::1/128", service="GLOBALACCELERATOR"),
        ],
        chime=frozenset({"127.0.0.2", "::1"}),
    ),
    # mitmproxy's lazy strategy: no peername when the decision is made; the addon must resolve.
    "lazy-strategy": Case(
        ranges=AWS_CHIME_PREFIXES,
        cidrs=["127.0.0.2/32"],
        extra_args=["--set", "connection_strategy=lazy"],
        chime=frozenset({"127.0.0.2"}),
    ),
}


@dataclass(frozen=True)
class Running:
    case: Case
    proxy: MitmdumpProcess


@pytest.fixture(scope="module", params=list(CASES))
def running(
    request: pytest.FixtureRequest,
    module_proxy_launcher: ProxyLauncher,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Running]:
    case = CASES[request.param]
    folder = tmp_path_factory.mktemp(f"dest-{request.param}")
    allowlist = write_config(
        folder,
        APPS,
        cidrs=case.cidrs,
        ranges=case.ranges,
        services=case.services,
        regions=case.regions,
        ranges_name="ranges/aws-ip-ranges.json",
    )
    assert module_proxy_launcher.workdir != folder
    proxy = module_proxy_launcher.start(
        allowlist, extra_args=case.extra_args, label=f"destinations {request.param}"
    )
    yield Running(case, proxy)
    proxy.stop()  # one at a time: the next parameter starts its own


@pytest.mark.parametrize("server_fixture", ["chime_server", "other_server", "ipv6_server"])
def test_destination(
    running: Running,
    request: pytest.FixtureRequest,
    server_fixture: str,
    test_ca: TestCA,
) -> None:
    server: EchoServer = request.getfixturevalue(server_fixture)
    url = server.url(f"/dest/{uuid.uuid4().hex}")
    spoof = ["X-Amzn-Chime-App-Keys: Evil"]
    if server.host in running.case.chime:
        result = curl(
            url, proxy_port=running.proxy.port, cacert=running.proxy.ca_cert, headers=spoof
        )
        assert result.returncode == 0, f"{server.host} should be intercepted\n{result}"
        assert_chime_headers(result.headers(), "AppKey", "AppKey:orgId", context=result)
    else:
        result = curl(url, proxy_port=running.proxy.port, cacert=test_ca.cert_path, headers=spoof)
        assert result.returncode == 0, f"{server.host} should be passed through\n{result}"
        assert_no_chime_headers_added(
            result.headers(), [("X-Amzn-Chime-App-Keys", "Evil")], context=result
        )
