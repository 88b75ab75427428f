"""An upstream that cannot be reached (or hangs up, or cannot be verified) gives the client an
error, and the proxy goes on serving the next request with the headers.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Literal

import pytest

from tests.support.asserts import assert_chime_headers
from tests.support.clients import ProxyError, curl, open_tunnel
from tests.support.config import App, write_config
from tests.support.proxy import MitmdumpProcess, ProxyLauncher
from tests.support.servers import EchoServer, free_port
from tests.support.tls import TestCA

APP_KEYS = "AppKey1"
TENANTS = "AppKey1:orgId"


@pytest.fixture(scope="module")
def proxy(
    module_proxy_launcher: ProxyLauncher, tmp_path_factory: pytest.TempPathFactory
) -> MitmdumpProcess:
    allowlist = write_config(
        tmp_path_factory.mktemp("errors"),
        [App("AppKey1", ["orgId"])],
        cidrs=["127.0.0.2/32", "::1/128"],
    )
    return module_proxy_launcher.start(allowlist, label="errors")


def _still_serving(proxy: MitmdumpProcess, server: EchoServer) -> None:
    url = server.url(f"/after/{uuid.uuid4().hex}")
    result = curl(url, proxy_port=proxy.port, cacert=proxy.ca_cert)
    assert result.returncode == 0, result
    assert result.status == 200, result
    assert_chime_headers(result.headers(), APP_KEYS, TENANTS, context=result)
    assert proxy.returncode is None


@pytest.mark.parametrize("host", ["127.0.0.2", "::1"])
@pytest.mark.parametrize("http", ["1.1", "2"])
def test_unreachable_chime_upstream(
    proxy: MitmdumpProcess, chime_server: EchoServer, host: str, http: Literal["1.1", "2"]
) -> None:
    port = free_port(host)
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    result = curl(
        f"https://{authority}/", proxy_port=proxy.port, cacert=proxy.ca_cert, http=http, max_time=10
    )
    assert result.returncode != 0 or result.status >= 500, result
    assert result.status != 200, result
    _still_serving(proxy, chime_server)


def test_unreachable_upstream_connect_answer(
    proxy: MitmdumpProcess, chime_server: EchoServer
) -> None:
    """A raw CONNECT to a dead Chime port is refused with an error status (or a hang-up)."""
    port = free_port("127.0.0.2")
    try:
        sock = open_tunnel(proxy.port, "127.0.0.2", port, timeout=10)
    except ProxyError as error:
        assert error.status >= 500 or error.status == 0, error
    except (ConnectionError, TimeoutError) as error:
        pytest.fail(f"the proxy gave no answer to the CONNECT: {error!r}")
    else:
        # Under the eager strategy the proxy knows before answering; it must not claim success.
        sock.close()
        pytest.fail("CONNECT to a port where nothing listens was answered 2xx")
    _still_serving(proxy, chime_server)


def test_unreachable_plain_http_upstream(proxy: MitmdumpProcess, chime_server: EchoServer) -> None:
    port = free_port("127.0.0.2")
    result = curl(f"http://127.0.0.2:{port}/", proxy_port=proxy.port, max_time=10)
    assert result.returncode != 0 or result.status >= 500, result
    _still_serving(proxy, chime_server)


def test_unreachable_other_upstream(
    proxy: MitmdumpProcess, chime_server: EchoServer, test_ca: TestCA
) -> None:
    port = free_port("127.0.0.3")
    result = curl(f"https://127.0.0.3:{port}/", proxy_port=proxy.port, cacert=test_ca.cert_path)
    assert result.returncode != 0, result
    _still_serving(proxy, chime_server)


@pytest.fixture
def hanging_up_server() -> Iterator[EchoServer]:
    with EchoServer("127.0.0.2", mode="close", name="hangs-up") as server:
        yield server


def test_upstream_that_hangs_up(
    proxy: MitmdumpProcess, chime_server: EchoServer, hanging_up_server: EchoServer
) -> None:
    """The upstream accepts TCP, then resets. (mitmproxy itself, with or without the addon, then
    leaves the client waiting until its own timeout; a short one keeps this test quick.)"""
    result = curl(
        hanging_up_server.url("/", scheme="https"),
        proxy_port=proxy.port,
        cacert=proxy.ca_cert,
        max_time=2,
    )
    assert result.returncode != 0 or result.status >= 500, result
    assert result.status != 200, result
    _still_serving(proxy, chime_server)


@pytest.fixture
def untrusted_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoServer]:
    """A Chime-address server whose certificate comes from a CA the proxy does not trust."""
    rogue = TestCA.create(tmp_path_factory.mktemp("rogue-ca"), common_name="rogue CA")
    with EchoServer("127.0.0.2", cert=rogue.issue(["127.0.0.2"]), name="untrusted") as server:
        yield server


def test_upstream_certificate_not_trusted(
    proxy: MitmdumpProcess, chime_server: EchoServer, untrusted_server: EchoServer
) -> None:
    """The proxy verifies the Chime server's certificate: the headers never reach an impostor."""
    result = curl(untrusted_server.url("/"), proxy_port=proxy.port, cacert=proxy.ca_cert)
    assert result.returncode != 0 or result.status >= 500, result
    assert untrusted_server.requests() == []
    _still_serving(proxy, chime_server)
