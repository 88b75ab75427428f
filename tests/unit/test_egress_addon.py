"""The addon's request hook, driven by mitmproxy's own test context (no network)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow

from chime_egress.policy.ranges import is_chime_name
from chime_egress.proxy.addon import ChimeHeaders

ALLOWLIST = """\
apps:
  - app_key: AppKey1
    tenants: [orgId]
  - app_key: AppKey2
destinations:
  cidrs: [99.77.128.0/18]
"""


@contextmanager
def running(tmp_path: Path, allowlist: str) -> Iterator[ChimeHeaders]:
    """The addon configured with `allowlist`, inside mitmproxy's test context."""
    path = tmp_path / "allowlist.yaml"
    path.write_text(allowlist)
    chime = ChimeHeaders()
    with taddons.context(chime) as tctx:
        tctx.configure(chime, chime_allowlist=str(path))
        yield chime


@pytest.fixture
def addon(tmp_path: Path) -> Iterator[ChimeHeaders]:
    with running(tmp_path, ALLOWLIST) as chime:
        yield chime


def flow_to(peer: str | None, host: str = "signal.example") -> http.HTTPFlow:
    flow = tflow.tflow()
    flow.request.host = host
    flow.server_conn.peername = (peer, 443) if peer else None
    flow.server_conn.address = (host, 443) if peer else None
    return flow


async def test_request_to_chime_gets_exactly_the_configured_headers(addon: ChimeHeaders) -> None:
    flow = flow_to("::ffff:99.77.130.1")
    flow.request.headers.add("x-amzn-chime-app-keys", "Evil")
    flow.request.headers.add("X-AMZN-CHIME-APP-KEYS", "Evil2")
    flow.request.headers.add("X-Amzn-Chime-Tenants", "Evil:x")
    await addon.requestheaders(flow)
    assert flow.response is None
    assert flow.request.headers.get_all("X-Amzn-Chime-App-Keys") == ["AppKey1,AppKey2"]
    assert flow.request.headers.get_all("X-Amzn-Chime-Tenants") == ["AppKey1:orgId"]
    stats = json.loads(addon.stats())
    assert stats["client_headers_stripped_total"] == {"network=default": 2}
    assert stats["requests_injected_total"] == {"network=default": 1}


async def test_request_elsewhere_is_left_alone(addon: ChimeHeaders) -> None:
    flow = flow_to("192.0.2.1")
    flow.request.headers.add("X-Amzn-Chime-App-Keys", "mine")
    await addon.requestheaders(flow)
    assert flow.response is None
    assert flow.request.headers.get_all("X-Amzn-Chime-App-Keys") == ["mine"]


async def test_undecidable_request_is_answered_502_not_forwarded(addon: ChimeHeaders) -> None:
    # No connected address and a host name the resolver rejects before asking anyone.
    flow = flow_to(None, host="bad\x00host.chime.aws")
    await addon.requestheaders(flow)
    assert flow.response is not None and flow.response.status_code == 502
    assert b"could not apply its Chime policy" in (flow.response.content or b"")
    assert json.loads(addon.stats())["requests_refused_total"] == 1


async def test_websocket_upgrade_is_relayed_as_bytes_only_when_configured(
    addon: ChimeHeaders,
) -> None:
    flow = tflow.twebsocketflow()
    addon.response(flow)
    assert flow.websocket is None
    addon.upgrades.relay = "websocket"
    flow = tflow.twebsocketflow()
    addon.response(flow)
    assert flow.websocket is not None


@pytest.mark.parametrize(
    ("host", "chime"),
    [("signal.m1.ue1.app.chime.aws", True), ("ICE.CHIME.AWS.", True), ("intranet.example", False)],
)
def test_unresolvable_names_are_unsure_only_under_chime_aws(host: str, chime: bool) -> None:
    assert is_chime_name(host) is chime


OBSERVED_NETWORK = """\
apps: [{app_key: AppKey1}]
networks:
  - {name: lab, clients: [10.9.0.0/16], mode: observe}
destinations:
  cidrs: [99.77.128.0/18]
"""


async def test_a_client_in_an_observe_network_gets_nothing_added(tmp_path: Path) -> None:
    with running(tmp_path, OBSERVED_NETWORK) as chime:
        observed = flow_to("99.77.130.1")
        observed.client_conn.peername = ("10.9.1.1", 50000)
        observed.request.headers["X-Amzn-Chime-App-Keys"] = "theirs"
        await chime.requestheaders(observed)
        enforced = flow_to("99.77.130.1")
        enforced.client_conn.peername = ("10.8.1.1", 50000)
        await chime.requestheaders(enforced)
        stats = json.loads(chime.stats())
    assert observed.response is None
    assert observed.request.headers.get_all("X-Amzn-Chime-App-Keys") == ["theirs"]
    assert enforced.request.headers.get_all("X-Amzn-Chime-App-Keys") == ["AppKey1"]
    assert stats["requests_observed_total"] == {"network=lab": 1}
    assert stats["requests_injected_total"] == {"network=default": 1}
