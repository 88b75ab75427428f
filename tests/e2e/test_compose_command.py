"""The exact command docker-compose.yml runs, run outside a container, injects the headers.

Containers cannot run here, so the service's `command` is taken from docker-compose.yml and run
with only its container paths swapped for local ones:

  chime-egress                     -> this virtualenv's chime-egress (the image's is on PATH)
  /home/mitmproxy/.mitmproxy       -> a fresh temporary confdir (the CA volume)
  /config/allowlist.yaml           -> a temporary copy of ./config (the read-only mount), identical
                                      but for `cidrs: [127.0.0.2/32]`, which makes the test server
                                      a Chime address
  8080                             -> a free loopback port

plus what keeps the test on loopback and lets the proxy trust the test servers' CA
(`--listen-host 127.0.0.1`, `chime_local_destinations`, `ssl_verify_upstream_trusted_ca`). The
health check command is taken from the compose file too and run against that proxy.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from chime_egress.policy.compiled import load_policy
from tests.support.asserts import assert_chime_headers, assert_no_chime_headers_added
from tests.support.clients import curl
from tests.support.proxy import TEST_LOCAL_DESTINATIONS, MitmdumpProcess, clean_env
from tests.support.servers import EchoServer, free_port
from tests.support.tls import TestCA

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SERVICE = "chime-egress"
CONTAINER_CONFDIR = "/home/mitmproxy/.mitmproxy"
CONTAINER_CONFIG = "/config"
CONTAINER_PORT = "8080"
CONTAINER_METRICS = "chime_metrics=0.0.0.0:9108"


def compose_service() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    service: dict[str, Any] = document["services"][SERVICE]
    return service


def localize(
    argument: str, *, config: Path, confdir: Path, port: int, metrics_port: int = 0
) -> str:
    if argument == "chime-egress":
        return str(Path(sys.executable).parent / "chime-egress")
    if argument == CONTAINER_PORT:
        return str(port)
    if argument == CONTAINER_METRICS:  # loopback only: no other address is ever used here
        return f"chime_metrics=127.0.0.1:{metrics_port}"
    if argument == f"127.0.0.1:{CONTAINER_PORT}":
        return f"127.0.0.1:{port}"
    argument = argument.replace(CONTAINER_CONFDIR, str(confdir))
    if f"={CONTAINER_CONFIG}/" in argument:
        argument = argument.replace(f"={CONTAINER_CONFIG}/", f"={config}/")
    return argument


@pytest.fixture(scope="module")
def config_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """./config, copied, edited as the README's roll-out says: the organisation's AppKeys in
    place of the examples, mode enforce; and 127.0.0.2 made a Chime destination."""
    folder = tmp_path_factory.mktemp("compose") / "config"
    shutil.copytree(ROOT / "config", folder)
    allowlist = folder / "allowlist.yaml"
    text = allowlist.read_text(encoding="utf-8")
    edits = {
        "\n  cidrs: []": "\n  cidrs: [127.0.0.2/32]",
        "\nmode: observe\n": "\nmode: enforce\n",
        "app_key: ExampleAppKey1 ": "app_key: CorpAppKey1   ",
        "app_key: ExampleAppKey2 ": "app_key: CorpAppKey2   ",
    }
    for old, new in edits.items():
        assert text.count(old) == 1, f"the shipped allowlist changed: {old!r}"
        text = text.replace(old, new)
    allowlist.write_text(text, "utf-8")
    return folder


@pytest.fixture(scope="module")
def metrics_port() -> int:
    """Where the localized compose command serves /metrics (0.0.0.0:9108 in the container)."""
    return free_port()


@pytest.fixture(scope="module")
def compose_proxy(
    config_folder: Path,
    tmp_path_factory: pytest.TempPathFactory,
    test_ca: TestCA,
    metrics_port: int,
) -> Iterator[MitmdumpProcess]:
    confdir = tmp_path_factory.mktemp("compose-ca-volume")
    port = free_port()
    command = [
        localize(arg, config=config_folder, confdir=confdir, port=port, metrics_port=metrics_port)
        for arg in compose_service()["command"]
    ]
    assert f"chime_metrics=127.0.0.1:{metrics_port}" in command
    # Nothing left that points into the container.
    for argument in command:
        assert not argument.startswith(("/app/", "/config", "/home/mitmproxy")), command
    command += [
        "--listen-host",
        "127.0.0.1",
        "--set",
        f"chime_local_destinations={TEST_LOCAL_DESTINATIONS}",
        "--set",
        f"ssl_verify_upstream_trusted_ca={test_ca.cert_path}",
    ]
    proxy = MitmdumpProcess(confdir=confdir, cwd=config_folder, label="compose command")
    proxy.command = command  # exactly the compose command (localized), not the harness's own
    with proxy:
        assert proxy.port == port
        yield proxy


def test_command_is_the_images_cmd() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    cmd = _dockerfile_instruction(dockerfile, "CMD")
    assert yaml.safe_load(cmd) == compose_service()["command"]


def test_headers_injected(
    compose_proxy: MitmdumpProcess, config_folder: Path, chime_server: EchoServer
) -> None:
    headers = load_policy(config_folder / "allowlist.yaml").headers
    assert headers.app_keys == "CorpAppKey1,CorpAppKey2"  # the edited shipped allowlist's
    for http in ("1.1", "2"):
        result = curl(
            chime_server.url(f"/compose-{http}"),
            proxy_port=compose_proxy.port,
            cacert=compose_proxy.ca_cert,
            http="2" if http == "2" else "1.1",
            headers=["X-Amzn-Chime-App-Keys: Spoofed"],
        )
        assert result.status == 200, result
        assert_chime_headers(
            result.headers(), headers.app_keys, headers.tenants, http2=http == "2", context=result
        )
    assert compose_proxy.log_lines(r"chime: allowlist loaded from .*/config/allowlist\.yaml")


def test_other_traffic_untouched(
    compose_proxy: MitmdumpProcess, other_server: EchoServer, test_ca: TestCA
) -> None:
    result = curl(
        other_server.url("/compose-other"), proxy_port=compose_proxy.port, cacert=test_ca.cert_path
    )
    assert result.status == 200, result
    assert_no_chime_headers_added(result.headers(), context=result)


def test_ca_generated_in_the_volume(compose_proxy: MitmdumpProcess) -> None:
    names = {path.name for path in compose_proxy.confdir.iterdir()}
    assert {"mitmproxy-ca.pem", "mitmproxy-ca-cert.pem"} <= names
    assert (compose_proxy.confdir / "mitmproxy-ca.pem").stat().st_mode & 0o077 == 0


def test_compose_health_check(compose_proxy: MitmdumpProcess, config_folder: Path) -> None:
    test = compose_service()["healthcheck"]["test"]
    assert test[0] == "CMD"
    command = [
        localize(arg, config=config_folder, confdir=compose_proxy.confdir, port=compose_proxy.port)
        for arg in test[1:]
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, env=clean_env(), timeout=30, check=False
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_dockerfile_health_check_is_the_same() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    healthcheck = _dockerfile_instruction(dockerfile, "HEALTHCHECK")
    _, _, cmd = healthcheck.partition(" CMD ")
    assert yaml.safe_load(cmd) == compose_service()["healthcheck"]["test"][1:]


def _dockerfile_instruction(dockerfile: str, name: str) -> str:
    """The last `name` instruction, continuation lines joined, without the keyword."""
    logical: list[str] = []
    current = ""
    for line in dockerfile.splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    found = [line for line in logical if line.split(" ", 1)[0] == name]
    assert found, f"no {name} in the Dockerfile"
    return found[-1].split(" ", 1)[1].strip()


def test_metrics_are_served_as_composed(
    compose_proxy: MitmdumpProcess, chime_server: EchoServer, metrics_port: int
) -> None:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    curl(
        chime_server.url("/for-metrics"),
        proxy_port=compose_proxy.port,
        cacert=compose_proxy.ca_cert,
    )
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    assert 'chime_egress_apps_configured{mode="enforce",network="default"} 2.0' in text
    assert "chime_egress_ranges_sync_token 1.787411825e+09" in text
    injected = re.search(r'chime_egress_requests_injected_total\{network="default"\} (\S+)', text)
    assert injected is not None and float(injected[1]) >= 1, text
