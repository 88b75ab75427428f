"""Shared fixtures: a test CA, loopback echo servers, allowlist writers, mitmdump launchers.

Addresses (loopback only):
  127.0.0.1  the proxy listens here
  127.0.0.2  the "Chime" servers (TLS and plain HTTP)
  127.0.0.3  the "not Chime" servers (TLS and raw TCP echo)
  ::1        a TLS server, made a Chime destination by the IPv6 tests
"""

from __future__ import annotations

import faulthandler
import shutil
import sys
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support.config import write_allowlist as _write_allowlist
from tests.support.proxy import MITMDUMP, MitmdumpProcess, ProxyLauncher
from tests.support.servers import EchoServer
from tests.support.tls import TestCA

# No per-example deadline: on a shared machine a slow example is not a failure (timing belongs in
# the benchmarks), and a flaky deadline would hide the real verdict of the property.
settings.register_profile("chime-egress", deadline=None)
settings.load_profile("chime-egress")

CHIME_IP = "127.0.0.2"
OTHER_IP = "127.0.0.3"
IPV6_IP = "::1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if shutil.which("curl") is None:
        skip = pytest.mark.skip(reason="the e2e tests need the curl binary")
        for item in items:
            if "e2e" in item.nodeid.split("/"):
                item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the log of every running mitmdump to a failing test's report."""
    report = yield
    if report.failed:
        for proc in list(MitmdumpProcess.active):
            report.sections.append((f"mitmdump log: {proc.label}", proc.describe()))
    return report


HANG_DUMP_SECONDS = 90.0


@pytest.fixture(autouse=True)
def _dump_stacks_if_hung(request: pytest.FixtureRequest) -> Iterator[None]:
    """If a test runs for HANG_DUMP_SECONDS, print every thread's stack (the test goes on).

    Left to pytest when its own ``faulthandler_timeout`` option is set.
    """
    if float(request.config.getini("faulthandler_timeout") or 0) > 0:
        yield
        return
    faulthandler.dump_traceback_later(HANG_DUMP_SECONDS, repeat=True, file=sys.stderr)
    yield
    faulthandler.cancel_dump_traceback_later()


# --- certificates ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """The CA that signs the echo servers' certificates (and that the proxy trusts upstream)."""
    return TestCA.create(tmp_path_factory.mktemp("test-ca"))


@pytest.fixture(scope="session")
def mitm_confdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway mitmproxy confdir shared by every mitmdump of the session.

    mitmdump generates its CA (``mitmproxy-ca-cert.pem``) there on its first start.
    """
    return tmp_path_factory.mktemp("mitmproxy-confdir")


# --- servers ---------------------------------------------------------------------------------


def _tls_server(ca: TestCA, host: str, name: str) -> Iterator[EchoServer]:
    with EchoServer(host, mode="tls", cert=ca.issue([host], stem=name), name=name) as server:
        yield server


@pytest.fixture(scope="session")
def chime_server(test_ca: TestCA) -> Iterator[EchoServer]:
    """TLS echo server on 127.0.0.2 (h2 + http/1.1); the tests make 127.0.0.2 a Chime address."""
    yield from _tls_server(test_ca, CHIME_IP, "chime-tls")


@pytest.fixture(scope="session")
def other_server(test_ca: TestCA) -> Iterator[EchoServer]:
    """TLS echo server on 127.0.0.3, never a Chime address."""
    yield from _tls_server(test_ca, OTHER_IP, "other-tls")


@pytest.fixture(scope="session")
def ipv6_server(test_ca: TestCA) -> Iterator[EchoServer]:
    """TLS echo server on ::1."""
    yield from _tls_server(test_ca, IPV6_IP, "ipv6-tls")


@pytest.fixture(scope="session")
def chime_plain_server() -> Iterator[EchoServer]:
    """Plain-HTTP echo server on 127.0.0.2."""
    with EchoServer(CHIME_IP, mode="plain", name="chime-plain") as server:
        yield server


@pytest.fixture(scope="session")
def other_plain_server() -> Iterator[EchoServer]:
    """Plain-HTTP echo server on 127.0.0.3."""
    with EchoServer(OTHER_IP, mode="plain", name="other-plain") as server:
        yield server


@pytest.fixture(scope="session")
def other_raw_server() -> Iterator[EchoServer]:
    """Raw TCP echo server on 127.0.0.3 (records every byte per connection)."""
    with EchoServer(OTHER_IP, mode="raw", name="other-raw") as server:
        yield server


# --- allowlists ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def write_allowlist() -> Callable[..., Path]:
    """``write_allowlist(directory, text, name="allowlist.yaml")``: write a dedented allowlist."""
    return _write_allowlist


# --- mitmdump --------------------------------------------------------------------------------


@pytest.fixture
def proxy_launcher(mitm_confdir: Path, test_ca: TestCA, tmp_path: Path) -> Iterator[ProxyLauncher]:
    """Start proxies for one test: ``proxy_launcher.start(allowlist_path, extra_args=[...])``."""
    launcher = ProxyLauncher(mitm_confdir, test_ca.cert_path, tmp_path)
    yield launcher
    launcher.stop_all()


@pytest.fixture(scope="module")
def module_proxy_launcher(
    mitm_confdir: Path, test_ca: TestCA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyLauncher]:
    """Like ``proxy_launcher``, for module-scoped proxies shared by the tests of one file."""
    launcher = ProxyLauncher(mitm_confdir, test_ca.cert_path, tmp_path_factory.mktemp("proxy"))
    yield launcher
    launcher.stop_all()


@pytest.fixture(scope="session")
def mitmdump_binary() -> Path:
    """The mitmdump of the test interpreter's virtualenv."""
    if not MITMDUMP.exists():
        pytest.fail(f"{MITMDUMP} not found: install mitmproxy in this interpreter's environment")
    return MITMDUMP
