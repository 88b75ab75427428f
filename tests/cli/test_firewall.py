"""`chime-egress firewall --format nftables` as installed: structure, and `nft -c` if present.

`nft -c -f` parses and evaluates the script without applying it (it needs no table to exist). The
rules are never loaded here; tests/e2e/test_transparent_mode.py applies them inside a private
network namespace.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from chime_egress.policy.compiled import load_policy

from .support import (
    ONE_APP_ONE_CIDR,
    ROOT,
    SHIPPED_ALLOWLIST,
    assert_refused,
    run,
    write_allowlist,
)

NFT = shutil.which("nft") or next(
    (str(p) for p in (Path("/usr/sbin/nft"), Path("/sbin/nft")) if p.exists()), None
)
needs_nft = pytest.mark.skipif(NFT is None, reason="nft not installed (apt-get install nftables)")


def generate(*args: str | Path) -> str:
    result = run("firewall", *args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def nft_check(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert NFT is not None
    path = tmp_path / "rules.nft"
    path.write_text(script, encoding="utf-8")
    return subprocess.run(
        [NFT, "-c", "-f", str(path)], capture_output=True, text=True, timeout=60, check=False
    )


def rules(script: str) -> list[str]:
    return [line.strip() for line in script.splitlines() if "redirect to" in line]


def elements(script: str, name: str) -> list[str]:
    match = re.search(rf"set {name} \{{(.*?)\n    \}}", script, re.S)
    assert match, script
    found = re.search(r"elements = \{ (.*) \}", match.group(1))
    return found.group(1).split(", ") if found else []


def test_shipped_config_structure() -> None:
    script = generate("--format", "nftables", "--proxy-port", "8080", SHIPPED_ALLOWLIST)
    lines = script.splitlines()
    assert lines[0] == "#!/usr/sbin/nft -f"
    # Idempotent: create-if-missing, delete, recreate; only this table is touched.
    body = [line for line in lines if line and not line.startswith("#")]
    assert body[:3] == [
        "table inet chime_egress",
        "delete table inet chime_egress",
        "table inet chime_egress {",
    ]
    assert all("flush ruleset" not in line for line in lines)
    assert elements(script, "chime_ipv4") == ["99.77.128.0/18"]
    assert elements(script, "chime_ipv6") == ["2600:f0f0:4100::/40"]
    assert "type nat hook prerouting priority dstnat; policy accept;" in script
    assert rules(script) == [
        "ip daddr @chime_ipv4 tcp dport { 80, 443 } redirect to :8080",
        "ip6 daddr @chime_ipv6 tcp dport { 80, 443 } redirect to :8080",
    ]
    assert "syncToken 1787411825" in script


def test_sets_hold_exactly_the_proxys_prefixes(tmp_path: Path) -> None:
    cidrs = ["10.0.0.0/8", "10.1.0.0/16", "10.255.0.0/16", "192.0.2.0/25", "192.0.2.128/25"]
    cidrs += ["2001:db8::/32", "2001:db8:1::/48", "fd00::/8"]
    config = write_allowlist(
        tmp_path,
        f"""
        apps:
          - app_key: AppKey1
        destinations:
          ip_ranges: {ROOT / "config" / "chime-ip-ranges.json"}
          cidrs: [{", ".join(cidrs)}]
        """,
    )
    script = generate("--proxy-port", "3129", config)
    v4 = [ipaddress.ip_network(text) for text in elements(script, "chime_ipv4")]
    v6 = [ipaddress.ip_network(text) for text in elements(script, "chime_ipv6")]
    # Overlaps merged (nft refuses overlapping intervals), nothing added or lost.
    assert [str(n) for n in v4] == ["10.0.0.0/8", "99.77.128.0/18", "192.0.2.0/24"]
    assert [str(n) for n in v6] == ["2001:db8::/32", "2600:f0f0:4100::/40", "fd00::/8"]
    policy = load_policy(config)
    for prefix in policy.table.prefixes:
        assert any(prefix.network.subnet_of(n) for n in (v4 if prefix.network.version == 4 else v6))  # type: ignore[arg-type]
    for net in v4 + v6:
        assert policy.table.lookup(str(net.network_address)) is not None
        assert policy.table.lookup(str(net.broadcast_address)) is not None


def test_ports_interface_and_output_hook() -> None:
    script = generate(
        "--proxy-port",
        "8080",
        "--ports",
        "443",
        "--hook",
        "output",
        "--proxy-user",
        "10001",
        "--interface",
        "eth0",
        SHIPPED_ALLOWLIST,
    )
    assert "type nat hook output priority -100; policy accept;" in script
    assert rules(script) == [
        'oifname "eth0" meta skuid != 10001 ip daddr @chime_ipv4 tcp dport { 443 } '
        "redirect to :8080",
        'oifname "eth0" meta skuid != 10001 ip6 daddr @chime_ipv6 tcp dport { 443 } '
        "redirect to :8080",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--proxy-port", "0"], "is not a port number"),
        (["--proxy-port", "x"], "is not a port number"),
        (["--proxy-port", "8080", "--ports", "443,70000"], "is not a port number"),
        (["--proxy-port", "8080", "--hook", "output"], "needs --proxy-user"),
        (["--proxy-port", "8080", "--interface", 'eth0"; flush ruleset'], "interface name"),
        # A final newline: `re.match` with `$` accepted them. "root\n" split the rule and
        # dropped the proxy's own exemption (a routing loop).
        (["--proxy-port", "8080", "--interface", "eth0\n"], "interface name"),
        (
            ["--proxy-port", "8080", "--hook", "output", "--proxy-user", "root\n"],
            "user name or uid",
        ),
        (["--proxy-port", "8080", "--ports", "٨٠"], "is not a port number"),
        (["--proxy-port", "8080", "--format", "iptables"], "invalid choice"),
        ([], "--proxy-port"),
    ],
)
def test_bad_command_lines(args: list[str], message: str) -> None:
    assert_refused(run("firewall", *args, SHIPPED_ALLOWLIST), 2, message)


def test_invalid_allowlist(tmp_path: Path) -> None:
    config = write_allowlist(tmp_path, "apps: []\n")
    assert_refused(run("firewall", "--proxy-port", "8080", config), 1, "invalid configuration")


@needs_nft
@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--ports", "443"],
        ["--hook", "output", "--proxy-user", "nobody"],
        ["--hook", "prerouting", "--interface", "eth1"],
    ],
    ids=["default", "443-only", "output-hook", "interface"],
)
def test_nft_accepts_it(tmp_path: Path, args: list[str]) -> None:
    script = generate("--proxy-port", "8080", *args, SHIPPED_ALLOWLIST)
    checked = nft_check(script, tmp_path)
    assert checked.returncode == 0, checked.stderr


@needs_nft
def test_nft_accepts_overlapping_and_single_family_configs(tmp_path: Path) -> None:
    config = write_allowlist(
        tmp_path,
        """
        apps:
          - app_key: AppKey1
        destinations:
          cidrs: [127.0.0.2/32, 127.0.0.0/24, 127.0.0.3/32]
        """,
    )
    script = generate("--proxy-port", "8080", config)
    assert elements(script, "chime_ipv4") == ["127.0.0.0/24"]
    assert elements(script, "chime_ipv6") == []  # an empty set, no `elements` line
    checked = nft_check(script, tmp_path)
    assert checked.returncode == 0, checked.stderr


@needs_nft
def test_nft_check_rejects_a_broken_script(tmp_path: Path) -> None:
    # The check above is a real check: nft refuses overlapping intervals, which collapsing avoids.
    script = generate("--proxy-port", "8080", SHIPPED_ALLOWLIST).replace(
        "{ 99.77.128.0/18 }", "{ 99.77.128.0/18, 99.77.130.0/24 }"
    )
    checked = nft_check(script, tmp_path)
    assert checked.returncode != 0
    assert "conflicting intervals" in checked.stderr


@needs_nft
def test_the_allowlists_name_cannot_inject_rules(tmp_path: Path) -> None:
    # Written raw into the header comment, a newline in the name made "flush ruleset" a command.
    config = write_allowlist(tmp_path, ONE_APP_ONE_CIDR, name="a\nflush ruleset\n.yaml")
    script = generate("--proxy-port", "8080", config)
    assert "flush ruleset" not in [line.strip() for line in script.splitlines()]
    assert all(line.startswith("#") for line in script.splitlines()[:9]), script
    checked = nft_check(script, tmp_path)
    assert checked.returncode == 0, checked.stderr
