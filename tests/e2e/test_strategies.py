"""Destinations judged without a connected address: the lazy connection strategy.

Host names used here resolve from /etc/hosts (`localhost`): no test ever asks a DNS server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.asserts import assert_chime_headers, assert_no_chime_headers_added
from tests.support.clients import curl
from tests.support.config import App, write_config
from tests.support.proxy import MitmdumpProcess, ProxyLauncher
from tests.support.servers import EchoServer
from tests.support.tls import TestCA

APPS = [App("AppKey1", tenants=["orgId"])]
LAZY = ["--set", "connection_strategy=lazy"]


@pytest.fixture(scope="module")
def localhost_server(test_ca: TestCA) -> Iterator[EchoServer]:
    """A TLS server reached by the host name `localhost` (resolved by the proxy itself)."""
    cert = test_ca.issue(["localhost", "127.0.0.1"], stem="localhost")
    with EchoServer("127.0.0.1", mode="tls", cert=cert, name="localhost") as server:
        yield server


def start(
    launcher: ProxyLauncher, directory: Path, cidrs: list[str], *args: str
) -> MitmdumpProcess:
    return launcher.start(write_config(directory, APPS, cidrs=cidrs), extra_args=[*LAZY, *args])


def test_lazy_strategy_judges_the_ip_literal(
    tmp_path: Path, proxy_launcher: ProxyLauncher, chime_server: EchoServer
) -> None:
    proxy = start(proxy_launcher, tmp_path, ["127.0.0.2/32"])
    result = curl(chime_server.url("/lazy"), proxy_port=proxy.port, cacert=proxy.ca_cert)
    assert result.status == 200, result
    assert_chime_headers(
        result.headers(), "AppKey1", "AppKey1:orgId", http2=result.http_version == "2"
    )


def test_lazy_strategy_resolves_a_host_name_in_range(
    tmp_path: Path, proxy_launcher: ProxyLauncher, localhost_server: EchoServer
) -> None:
    proxy = start(proxy_launcher, tmp_path, ["127.0.0.1/32", "::1/128"])
    url = f"https://localhost:{localhost_server.port}/lazy"
    result = curl(url, proxy_port=proxy.port, cacert=proxy.ca_cert)
    assert result.status == 200, result
    assert_chime_headers(
        result.headers(), "AppKey1", "AppKey1:orgId", http2=result.http_version == "2"
    )


def test_lazy_strategy_passes_through_a_host_name_out_of_range(
    tmp_path: Path, proxy_launcher: ProxyLauncher, localhost_server: EchoServer, test_ca: TestCA
) -> None:
    proxy = start(proxy_launcher, tmp_path, ["127.0.0.2/32"])
    url = f"https://localhost:{localhost_server.port}/lazy"
    sent = ("X-Amzn-Chime-App-Keys", "mine")
    result = curl(
        url, proxy_port=proxy.port, cacert=test_ca.cert_path, headers=[f"{sent[0]}: {sent[1]}"]
    )
    assert result.status == 200, result  # the server's own certificate: passed through
    assert_no_chime_headers_added(result.headers(), [sent])
