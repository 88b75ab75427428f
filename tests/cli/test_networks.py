"""`validate` and `explain --client` on an allowlist with `mode` and `networks`, as installed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .support import run, write_allowlist

STAGED = """\
    mode: observe
    apps:
      - app_key: CorpKey
        tenants: [corpOrg]
    networks:
      - name: pilot
        clients: [10.20.5.0/24]
        mode: observe
      - name: hq
        clients: [10.20.0.0/16, "2001:db8::/32"]
        mode: enforce
      - name: sales
        clients: [192.168.0.0/16]
        mode: enforce
        apps: [{app_key: SalesKey}]
    destinations: {cidrs: [99.77.128.0/18]}
    """


@pytest.fixture
def staged(tmp_path: Path) -> Path:
    return write_allowlist(tmp_path, STAGED)


def test_validate_lists_modes_and_networks_and_warns_on_stderr(staged: Path) -> None:
    result = run("validate", staged)
    assert result.returncode == 0, result.stderr
    assert "mode: observe\n" in result.stdout
    assert (
        "networks (3, the first holding a client's address wins):\n"
        "  pilot (10.20.5.0/24): observe, no headers\n"
        "  hq (10.20.0.0/16, 2001:db8::/32): enforce, the top-level apps\n"
        "  sales (192.168.0.0/16): enforce, apps SalesKey\n"
    ) in result.stdout
    assert result.stderr == (
        f"warning: {staged}:10: networks[1].clients[0]: 10.20.0.0/16 contains 10.20.5.0/24 "
        "(networks[0].clients[0], line 7), which comes first: clients in 10.20.5.0/24 get "
        "networks[0]\n"
    )


def test_validate_json_has_networks_headers_and_warnings(staged: Path) -> None:
    result = run("validate", "--format", "json", staged)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["mode"] == "observe"
    assert [n["name"] for n in document["networks"]] == ["pilot", "hq", "sales"]
    sales = document["networks"][2]
    assert sales["headers"] == [{"name": "X-Amzn-Chime-App-Keys", "value": "SalesKey"}]
    assert document["networks"][0]["headers"] == []
    assert document["warnings"][0]["field"] == "networks[1].clients[0]"


def test_validate_refuses_a_shadowed_network(tmp_path: Path) -> None:
    config = write_allowlist(
        tmp_path,
        """\
        apps: [{app_key: K}]
        networks:
          - {name: all, clients: [10.0.0.0/8], mode: enforce}
          - {name: lab, clients: [10.9.0.0/16], mode: observe}
        destinations: {cidrs: [99.77.128.0/18]}
        """,
    )
    result = run("validate", config)
    assert result.returncode == 1
    assert f"{config}:4: networks[1].clients[0]: 10.9.0.0/16 lies inside 10.0.0.0/8" in (
        result.stderr
    )


def test_explain_for_a_client_uses_its_networks_headers(staged: Path) -> None:
    result = run("explain", "--client", "10.20.1.9", "--app-key", "CorpKey", staged)
    assert result.returncode == 3, result.stdout  # a CorpKey session without corpOrg: 403
    assert result.stdout.startswith(
        "client 10.20.1.9: network hq (10.20.0.0/16, 2001:db8::/32, line 9), mode enforce\n"
    )
    assert f"headers (the proxy's for network hq, from {staged}):" in result.stdout
    assert "X-Amzn-Chime-Tenants: CorpKey:corpOrg" in result.stdout

    sales = run("explain", "--client", "::ffff:192.168.1.1", "--app-key", "CorpKey", staged)
    assert sales.returncode == 3
    assert "client 192.168.1.1: network sales" in sales.stdout
    assert "X-Amzn-Chime-App-Keys does not list CorpKey" in sales.stdout


def test_explain_for_an_observed_client_accepts_everything(staged: Path) -> None:
    result = run("explain", "--client", "10.20.5.9", "--app-key", "AnyKey", staged)
    assert result.returncode == 0, result.stdout
    assert "mode observe" in result.stdout
    assert "observe mode: the proxy adds no headers" in result.stdout
    assert "X-Amzn-Chime-App-Keys: (not sent)" in result.stdout
    assert "verdict: accept" in result.stdout
    outside = run("explain", "--client", "172.16.0.1", staged)
    assert outside.returncode == 0
    assert "no networks entry holds it: the top-level settings, mode observe" in outside.stdout


def test_explain_without_client_says_networks_exist(staged: Path) -> None:
    result = run("explain", staged)
    assert result.returncode == 0
    assert "networks pilot, hq, sales have their own: see --client" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--client", "nope"], "argument --client: 'nope' is not an IP address"),
        (
            ["--client", "10.0.0.1", "--app-keys-header", "K", "--app-key", "K"],
            "--client cannot be combined with --app-keys-header",
        ),
    ],
)
def test_explain_client_usage_errors(args: list[str], message: str) -> None:
    result = run("explain", *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_headers_for_a_client_and_for_an_observed_top_level(staged: Path) -> None:
    sales = run("headers", "--client", "192.168.7.7", staged)
    assert (sales.returncode, sales.stdout, sales.stderr) == (
        0,
        "X-Amzn-Chime-App-Keys: SalesKey\n",
        "",
    )
    hq = run("headers", "--client", "10.20.1.1", staged)
    assert hq.stdout == "X-Amzn-Chime-App-Keys: CorpKey\nX-Amzn-Chime-Tenants: CorpKey:corpOrg\n"
    top = run("headers", staged)
    assert top.returncode == 0 and top.stdout == ""
    assert "networks pilot, hq, sales have their own: see --client" in top.stderr
    assert "network default is in observe mode: the proxy adds no headers there" in top.stderr
