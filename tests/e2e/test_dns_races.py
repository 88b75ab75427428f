"""DNS time-of-check/time-of-use: the verdict is made on the address actually connected to.

`3-2.flip.test` answers 127.0.0.3 (not Chime), then 127.0.0.2 (Chime), then 127.0.0.3... at
every lookup, like a zero-TTL name (`tests/support/flipping_dns.py`, loaded into mitmdump beside
the addon, serves it to mitmproxy's lookups and the addon's alike). Recording upstreams listen on
the same port of both addresses; the one on the Chime address judges every byte it receives.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CHIME_IP, OTHER_IP
from tests.support.asserts import assert_chime_headers
from tests.support.config import App, write_config
from tests.support.proxy import REPO_ROOT, MitmdumpProcess, ProxyLauncher
from tests.support.recorder import RecordingServer
from tests.support.servers import EchoServer
from tests.support.smuggle import (
    assert_every_request_exact,
    status_codes,
    through_tunnel,
    to_proxy,
)
from tests.support.tls import TestCA

APPS = [App("AppKey1", tenants=["orgId"])]
FLIPPING_DNS = REPO_ROOT / "tests" / "support" / "flipping_dns.py"
FLIP = "3-2.flip.test"  # not Chime first
EVIL = b"X-Amzn-Chime-App-Keys: evil\r\n"
ROUNDS = 4


def request(target: str, host: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: {host}\r\n".encode() + EVIL + b"\r\n"


def pair(cert_for: TestCA | None) -> Iterator[tuple[RecordingServer, RecordingServer]]:
    """Recorders on the same port of the Chime address and of the other one."""
    cert = cert_for.issue([FLIP, "2-3.flip.test"], stem="flip") if cert_for else None
    chime = RecordingServer(CHIME_IP, cert=cert, name="flip-chime")
    with chime, RecordingServer(OTHER_IP, cert=cert, port=chime.port, name="flip-other") as other:
        yield chime, other


@pytest.fixture(scope="module")
def plain_pair() -> Iterator[tuple[RecordingServer, RecordingServer]]:
    yield from pair(None)


@pytest.fixture(scope="module")
def tls_pair(test_ca: TestCA) -> Iterator[tuple[RecordingServer, RecordingServer]]:
    yield from pair(test_ca)


@pytest.fixture(autouse=True)
def _fresh(
    plain_pair: tuple[RecordingServer, RecordingServer],
    tls_pair: tuple[RecordingServer, RecordingServer],
) -> None:
    for recorder in (*plain_pair, *tls_pair):
        recorder.clear()


@pytest.fixture(scope="module", params=["eager", "lazy"])
def proxy(
    request: pytest.FixtureRequest,
    module_proxy_launcher: ProxyLauncher,
    tmp_path_factory: pytest.TempPathFactory,
) -> MitmdumpProcess:
    config = write_config(tmp_path_factory.mktemp("flip"), APPS, cidrs=[f"{CHIME_IP}/32"])
    args = ["-s", str(FLIPPING_DNS), "--set", f"connection_strategy={request.param}"]
    return module_proxy_launcher.start(config, extra_args=args, label=f"flip-{request.param}")


@pytest.fixture(scope="module")
def both_cas(
    tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA, proxy: MitmdumpProcess
) -> Path:
    """A bundle of the test CA (passed-through connections) and mitmproxy's (intercepted ones)."""
    bundle = tmp_path_factory.mktemp("cas") / "both.pem"
    bundle.write_bytes(test_ca.cert_path.read_bytes() + proxy.ca_cert.read_bytes())
    return bundle


def test_absolute_form_goes_where_it_was_judged(
    proxy: MitmdumpProcess, plain_pair: tuple[RecordingServer, RecordingServer]
) -> None:
    chime, other = plain_pair
    authority = f"{FLIP}:{chime.port}"
    for _ in range(ROUNDS):
        answer = to_proxy(proxy.port, [request(f"http://{authority}/flip", authority)])
        assert status_codes(answer) == [200], answer
    assert_every_request_exact(chime, at_least=1)
    assert other.arrivals(), "no request was judged 'not Chime': the names did not flip"


def test_connect_and_tls_go_where_they_were_judged(
    proxy: MitmdumpProcess, tls_pair: tuple[RecordingServer, RecordingServer], both_cas: Path
) -> None:
    chime, other = tls_pair
    for _ in range(ROUNDS):
        answer = through_tunnel(
            proxy.port,
            FLIP,
            chime.port,
            [request("/flip", f"{FLIP}:{chime.port}")],
            tls_ca=both_cas,
        )
        assert status_codes(answer) == [200], answer
    assert_every_request_exact(chime, at_least=1)
    assert other.arrivals(), "no connection was judged 'not Chime': the names did not flip"


def test_each_absolute_form_request_on_one_connection_is_judged_alone(
    proxy: MitmdumpProcess, plain_pair: tuple[RecordingServer, RecordingServer]
) -> None:
    """Keep-alive: a first request elsewhere must not decide for the next one to Chime."""
    chime, other = plain_pair
    first = request(f"http://{other.authority}/first", other.authority)
    second = request(f"http://{chime.authority}/second", chime.authority)
    answer = to_proxy(proxy.port, [first, second], pause=0.3)
    assert status_codes(answer) == [200, 200], answer
    assert_every_request_exact(chime, at_least=1)


def test_https_absolute_form_is_pinned_and_keeps_its_server_name(
    proxy_launcher: ProxyLauncher, tmp_path: Path, test_ca: TestCA
) -> None:
    """`GET https://name/` through the proxy: sent to the address judged, verified by the name."""
    cert = test_ca.issue(["localhost"], stem="localhost-only")  # no IP in it: SNI must be the name
    with EchoServer("127.0.0.1", mode="tls", cert=cert, name="localhost-only") as server:
        config = write_config(tmp_path, APPS, cidrs=["127.0.0.1/32"])
        proxy = proxy_launcher.start(config)
        authority = f"localhost:{server.port}"
        answer = to_proxy(
            proxy.port, [request(f"https://{authority}/absolute", authority)], first_answer=True
        )
        assert status_codes(answer) == [200], answer
        assert_chime_headers(server.last_request().headers, "AppKey1", "AppKey1:orgId")
