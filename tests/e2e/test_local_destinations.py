"""The proxy is no path to its own host: its listeners, loopback and link-local are refused.

These proxies run with `chime_local_destinations` empty (the production default); every other
test allows the loopback addresses its servers live on (tests/support/proxy.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import OTHER_IP
from tests.support.clients import curl
from tests.support.config import App, write_config
from tests.support.proxy import MitmdumpProcess, ProxyLauncher, run_expect_failure
from tests.support.servers import EchoServer, free_port
from tests.support.smuggle import status_codes, to_proxy

APPS = [App("AppKey1", tenants=["orgId"])]
DEFAULT = ["--set", "chime_local_destinations="]


@pytest.fixture(scope="module", params=["eager", "lazy"])
def proxy(
    request: pytest.FixtureRequest,
    module_proxy_launcher: ProxyLauncher,
    tmp_path_factory: pytest.TempPathFactory,
) -> MitmdumpProcess:
    config = write_config(tmp_path_factory.mktemp(f"local-{request.param}"), APPS)
    metrics = ["--set", f"chime_metrics={free_port()}"]
    args = [*DEFAULT, *metrics, "--set", f"connection_strategy={request.param}"]
    return module_proxy_launcher.start(config, extra_args=args, label=f"local-{request.param}")


@pytest.fixture(scope="module")
def metrics_port(proxy: MitmdumpProcess) -> int:
    [setting] = [arg for arg in proxy.command if arg.startswith("chime_metrics=")]
    return int(setting.partition("=")[2])


def tunnel_answer(proxy: MitmdumpProcess, host: str, port: int) -> bytes:
    """CONNECT host:port and a request inside the tunnel; what the client gets back.

    Eager: the CONNECT itself is answered 502 with the reason. Lazy: the CONNECT succeeds (no
    connection is made before data), then the tunnel closes without an answer.
    """
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    connect = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"
    inside = f"GET /tunnelled HTTP/1.1\r\nHost: {authority}\r\n\r\n"
    answer = to_proxy(proxy.port, [(connect + inside).encode()])
    assert b" Echo\r\n" not in answer and b"chime_egress_" not in answer, answer
    if "eager" in proxy.label:
        assert set(status_codes(answer)) == {502}, answer  # the CONNECT and what followed it
    else:
        assert status_codes(answer) == [200], answer  # the CONNECT only
    return answer


def test_metrics_are_not_served_through_the_proxy(
    proxy: MitmdumpProcess, metrics_port: int
) -> None:
    """`curl -x proxy http://127.0.0.1:9108/metrics` must not return the series."""
    result = curl(f"http://127.0.0.1:{metrics_port}/metrics", proxy_port=proxy.port)
    assert result.status == 502, result
    assert "chime_egress_" not in result.text and "own listener" in result.text, result
    answer = tunnel_answer(proxy, "127.0.0.1", metrics_port)
    assert "lazy" in proxy.label or b"own listener" in answer


def test_the_proxy_port_itself_is_refused(proxy: MitmdumpProcess) -> None:
    answer = to_proxy(
        proxy.port, [f"GET http://127.0.0.1:{proxy.port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode()]
    )
    assert status_codes(answer)[:1] == [502], answer
    tunnel_answer(proxy, "127.0.0.1", proxy.port)  # mitmproxy's own check, or the addon's


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        (OTHER_IP, "loopback"),
        ("localhost", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.3", "loopback"),
        ("0.0.0.0", "this-host"),
        ("169.254.169.254", "link-local"),
    ],
)
def test_loopback_and_link_local_are_refused_by_default(
    proxy: MitmdumpProcess, other_plain_server: EchoServer, host: str, kind: str
) -> None:
    port = other_plain_server.port
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    answer = to_proxy(
        proxy.port, [f"GET http://{authority}/ HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode()]
    )
    assert status_codes(answer) == [502] and kind.encode() in answer, answer
    answer = tunnel_answer(proxy, host, port)
    assert "lazy" in proxy.label or kind.encode() in answer
    assert not [r for r in other_plain_server.requests() if r.path in ("/", "/tunnelled")]


def test_refusals_are_logged_and_counted(proxy: MitmdumpProcess, metrics_port: int) -> None:
    assert proxy.log_lines("chime: refusing .* a connection: .*(loopback|own listener)")
    result = curl(f"http://127.0.0.1:{metrics_port}/metrics", proxy_port=None)
    count = next(
        line
        for line in result.text.splitlines()
        if line.startswith("chime_egress_destinations_refused_total")
    )
    assert float(count.split()[-1]) >= 1


def test_named_exceptions_are_reachable_and_the_own_ports_stay_refused(
    proxy_launcher: ProxyLauncher, tmp_path: Path, other_plain_server: EchoServer
) -> None:
    metrics_port = free_port()
    proxy = proxy_launcher.start(
        write_config(tmp_path, APPS),
        extra_args=[
            "--set",
            "chime_local_destinations=127.0.0.0/8",
            "--set",
            f"chime_metrics=0.0.0.0:{metrics_port}",
        ],
        label="local-eager-exceptions",
    )
    assert curl(other_plain_server.url("/allowed"), proxy_port=proxy.port).status == 200
    result = curl(f"http://127.0.0.1:{metrics_port}/metrics", proxy_port=proxy.port)
    assert result.status == 502 and "chime_egress_" not in result.text, result
    tunnel_answer(proxy, "127.0.0.1", proxy.port)  # mitmproxy's own check, or the addon's
    # Metrics on 0.0.0.0 listen on every address of the host, allowed loopback ones included.
    assert b"own listener" in tunnel_answer(proxy, "127.0.0.9", metrics_port)
    assert b"loopback" in tunnel_answer(proxy, "::1", other_plain_server.port)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10.0.0.0/8", "not a loopback, link-local or unspecified range"),
        ("localhost", "is not an address or CIDR"),
    ],
)
def test_bad_option_values_stop_start_up(
    tmp_path: Path, mitm_confdir: Path, value: str, message: str
) -> None:
    rc, output = run_expect_failure(
        confdir=mitm_confdir,
        allowlist=write_config(tmp_path / "config", APPS),
        extra_args=["--set", f"chime_local_destinations={value}"],
        cwd=tmp_path,
    )
    assert rc is not None and rc != 0, output
    assert message in output, output
