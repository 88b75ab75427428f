"""`chime-egress pac`, run as installed; the PAC file evaluated in a real PAC engine (pacparser).

pacparser is Mozilla's PAC runtime (SpiderMonkey with the standard PAC functions and Microsoft's
IPv6 extensions isInNetEx / dnsResolveEx). Nothing here touches the network: hosts are IP literals,
names matched by pattern (*.chime.aws), or names answered by a stub resolver that the test appends
to the file (its dnsResolve / dnsResolveEx replace the engine's own).
"""

from __future__ import annotations

import ipaddress
import json
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pacparser  # type: ignore[import-untyped]
import pytest

from chime_egress.deploy.pac import _js_string
from chime_egress.policy.compiled import load_policy

from .support import (
    ONE_APP_ONE_CIDR,
    ROOT,
    SHIPPED_ALLOWLIST,
    assert_refused,
    run,
    write_allowlist,
)

PROXY = "PROXY 127.0.0.1:3128"

# Names the stub resolver knows; every other name resolves to nothing.
STUB_DNS = {
    "v4-inside.example.test": "99.77.130.9",
    "v4-outside.example.test": "99.77.192.1",
    "v6-inside.example.test": "2600:f0f0:4100::9",
    "v6-outside.example.test": "2600:f0f0:4200::9",
    "dual-v6-inside.example.test": "192.0.2.1;2600:f0f0:4100::10",
}
_STUB = """
var TEST_DNS = %s;
function dnsResolve(host) {
  var all = (TEST_DNS[host] || "").split(";");
  for (var i = 0; i < all.length; i++) if (all[i] && all[i].indexOf(":") < 0) return all[i];
  return null;
}
function dnsResolveEx(host) { return TEST_DNS[host] || ""; }
"""
# A browser without Microsoft's extensions (Firefox, Safari): the file's own IPv6 matcher.
_WITHOUT_EXTENSIONS = "isInNetEx = undefined;\ndnsResolveEx = undefined;\n"

VARIANTS = ("isInNetEx", "fallback")


@contextmanager
def pac_engine(pac: str, variant: str = "isInNetEx") -> Iterator[object]:
    """A loaded pacparser engine (process-global: one at a time)."""
    script = pac + _STUB % json.dumps(STUB_DNS)
    if variant == "fallback":
        script += _WITHOUT_EXTENSIONS
    pacparser.init()
    try:
        pacparser.parse_pac_string(script)
        yield pacparser
    finally:
        pacparser.cleanup()


def find_proxy(engine: object, host: str, scheme: str = "https") -> str:
    url_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    result: str = pacparser.find_proxy(f"{scheme}://{url_host}/path", host)
    return result


def generate(*args: str | Path) -> str:
    result = run("pac", *args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


@pytest.fixture(scope="module")
def shipped_pac() -> str:
    return generate("--proxy", "127.0.0.1:3128", SHIPPED_ALLOWLIST)


# The shipped ranges: 99.77.128.0/18 and 2600:f0f0:4100::/40.
EXPECTED = [
    ("99.77.128.0", PROXY),
    ("99.77.130.1", PROXY),
    ("99.77.191.255", PROXY),
    ("99.77.127.255", "DIRECT"),
    ("99.77.192.0", "DIRECT"),
    ("8.8.8.8", "DIRECT"),
    ("127.0.0.2", "DIRECT"),
    ("2600:f0f0:4100::", PROXY),
    ("2600:f0f0:4100::1", PROXY),
    ("2600:F0F0:41FF:FFFF:FFFF:FFFF:FFFF:FFFF", PROXY),
    ("[2600:f0f0:4123::1]", PROXY),  # some browsers pass IPv6 literals in brackets
    ("2600:f0f0:4100:0:0:0:0:1", PROXY),  # uncompressed
    ("2600:f0f0:4100::99.77.1.1", PROXY),  # dotted tail
    ("fe80::1%eth0", "DIRECT"),  # zone id
    ("2600:f0f0:40ff:ffff:ffff:ffff:ffff:ffff", "DIRECT"),
    ("2600:f0f0:4200::", "DIRECT"),
    ("2001:db8::1", "DIRECT"),
    ("::1", "DIRECT"),
    ("::ffff:99.77.130.1", PROXY),  # IPv4-mapped: judged as IPv4, as the proxy does
    ("::ffff:8.8.8.8", "DIRECT"),
    # By name, without any lookup.
    ("meet.chime.aws", PROXY),
    ("signal.m1.ue1.app.chime.aws", PROXY),
    ("ICE.US-EAST-1.CHIME.AWS", PROXY),
    ("meet.chime.aws.", PROXY),  # fully qualified, trailing dot
    ("chime.aws", "DIRECT"),  # the pattern is *.chime.aws
    ("chime.aws.example.test", "DIRECT"),
    ("notchime.aws", "DIRECT"),
    # By address, through the (stub) resolver.
    ("v4-inside.example.test", PROXY),
    ("v4-outside.example.test", "DIRECT"),
    ("v6-outside.example.test", "DIRECT"),
    ("unknown.example.test", "DIRECT"),
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_shipped_config_in_pacparser(shipped_pac: str, variant: str) -> None:
    with pac_engine(shipped_pac, variant) as engine:
        got = [(host, find_proxy(engine, host)) for host, _ in EXPECTED]
    assert got == EXPECTED


def test_ipv6_names_need_dnsresolveex(shipped_pac: str) -> None:
    # Chrome and Edge (dnsResolveEx) see every address of a name; other browsers only the IPv4
    # address dnsResolve returns, so a name whose only Chime address is IPv6 goes DIRECT there.
    with pac_engine(shipped_pac, "isInNetEx") as engine:
        assert find_proxy(engine, "v6-inside.example.test") == PROXY
        assert find_proxy(engine, "dual-v6-inside.example.test") == PROXY
    with pac_engine(shipped_pac, "fallback") as engine:
        assert find_proxy(engine, "v6-inside.example.test") == "DIRECT"
        assert find_proxy(engine, "dual-v6-inside.example.test") == "DIRECT"


def test_plain_http_and_websocket_urls_too(shipped_pac: str) -> None:
    with pac_engine(shipped_pac) as engine:
        for scheme in ("http", "https", "ws", "wss"):
            assert find_proxy(engine, "99.77.130.1", scheme) == PROXY
            assert find_proxy(engine, "8.8.8.8", scheme) == "DIRECT"


def _boundaries(networks: Sequence[str]) -> list[str]:
    """For each network: its first and last address and the addresses just outside it."""
    addresses: list[str] = []
    for text in networks:
        net = ipaddress.ip_network(text)
        first, last = int(net.network_address), int(net.broadcast_address)
        top = (1 << net.max_prefixlen) - 1
        for value in (first - 1, first, (first + last) // 2, last, last + 1):
            if 0 <= value <= top:
                addresses.append(
                    str(
                        ipaddress.ip_address(value)
                        if net.version == 4
                        else ipaddress.IPv6Address(value)
                    )
                )
    return addresses


ODD_CIDRS = [
    "10.20.0.0/14",
    "10.23.255.0/24",  # inside the /14: merged, same answers
    "192.0.2.128/25",
    "198.51.100.7/32",
    "203.0.113.0/31",
    "2001:db8:abc0::/43",
    "2001:db8:ffff:ffff::/64",
    "2001:db8:1::80/121",
    "2001:db8:2::1/128",
    "fd00::/8",
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_answers_as_the_proxy(tmp_path: Path, variant: str) -> None:
    """Boundary and random addresses get PROXY exactly when the proxy calls them Chime."""
    config = write_allowlist(
        tmp_path,
        f"""
        apps:
          - app_key: AppKey1
        destinations:
          ip_ranges: {ROOT / "config" / "chime-ip-ranges.json"}
          cidrs: [{", ".join(ODD_CIDRS)}]
        """,
    )
    policy = load_policy(config)
    pac = generate("--proxy", "127.0.0.1:3128", config)
    networks = [str(prefix.network) for prefix in policy.table.prefixes]
    rng = random.Random(5)
    samples = _boundaries(networks)
    samples += [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(200)]
    samples += [str(ipaddress.IPv6Address(rng.getrandbits(128))) for _ in range(200)]
    # Random addresses near each network, where a masking bug would show.
    for text in networks:
        net = ipaddress.ip_network(text)
        span = max(net.num_addresses * 4, 16)
        base = max(int(net.network_address) - span // 2, 0)
        for _ in range(20):
            value = min(base + rng.randrange(span), (1 << net.max_prefixlen) - 1)
            samples.append(
                str(
                    ipaddress.IPv4Address(value)
                    if net.version == 4
                    else ipaddress.IPv6Address(value)
                )
            )
    with pac_engine(pac, variant) as engine:
        mismatches = [
            (address, answer)
            for address in samples
            if (answer := find_proxy(engine, address))
            != (PROXY if policy.table.lookup(address) is not None else "DIRECT")
        ]
    assert mismatches == []
    assert len(samples) > 500


def test_several_proxies_and_hosts(tmp_path: Path) -> None:
    pac = generate(
        "--proxy",
        "proxy-a.example.test:8080",
        "--proxy",
        "[2001:db8::5]:3128",
        "--host",
        "*.chime.aws",
        "--host",
        "Meetings.Example.TEST",
        SHIPPED_ALLOWLIST,
    )
    expected = "PROXY proxy-a.example.test:8080; PROXY [2001:db8::5]:3128"
    with pac_engine(pac) as engine:
        assert find_proxy(engine, "meetings.example.test") == expected
        assert find_proxy(engine, "x.chime.aws") == expected
        assert find_proxy(engine, "99.77.130.1") == expected
        assert find_proxy(engine, "other.example.test") == "DIRECT"


def test_the_check_host_goes_to_the_proxy(shipped_pac: str, tmp_path: Path) -> None:
    # People open the proxy's check page at http://chime-egress.invalid/ through the PAC file.
    with pac_engine(shipped_pac) as engine:
        assert find_proxy(engine, "chime-egress.invalid", "http") == PROXY
        assert find_proxy(engine, "other.invalid", "http") == "DIRECT"
    custom = generate(
        "--proxy", "127.0.0.1:3128", "--check-host", "Check.Example.TEST", SHIPPED_ALLOWLIST
    )
    with pac_engine(custom) as engine:
        assert find_proxy(engine, "check.example.test", "http") == PROXY
        assert find_proxy(engine, "chime-egress.invalid", "http") == "DIRECT"


def test_no_direct_fallback_after_the_proxy(shipped_pac: str) -> None:
    # A Chime request must fail, not leave without the headers, when the proxy is down.
    assert 'var CHIME_PROXY = "PROXY 127.0.0.1:3128";' in shipped_pac
    with pac_engine(shipped_pac) as engine:
        assert "DIRECT" not in find_proxy(engine, "99.77.130.1")


def test_header_comment_names_the_source(shipped_pac: str) -> None:
    assert "syncToken 1787411825" in shipped_pac.splitlines()[1]
    assert "2 prefixes" in shipped_pac.splitlines()[1]


def test_ipv4_only_config(tmp_path: Path) -> None:
    config = write_allowlist(
        tmp_path,
        """
        apps:
          - app_key: AppKey1
        destinations:
          cidrs: [127.0.0.2/32]
        """,
    )
    pac = generate("--proxy", "127.0.0.1:3128", config)
    assert "var CHIME_IPV6 = [];" in pac
    for variant in VARIANTS:
        with pac_engine(pac, variant) as engine:
            assert find_proxy(engine, "127.0.0.2") == PROXY
            assert find_proxy(engine, "127.0.0.3") == "DIRECT"
            assert find_proxy(engine, "2600:f0f0:4100::1") == "DIRECT"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--proxy", "proxy.example.test"], "expected HOST:PORT"),
        (["--proxy", "proxy.example.test:0"], "is not a port number"),
        (["--proxy", "proxy.example.test:99999"], "is not a port number"),
        (["--proxy", "2001:db8::1:8080"], "in brackets"),
        (["--proxy", "[2001:db8::zz]:8080"], "is not an IPv6 address"),
        (["--proxy", 'bad"name:8080'], "is not a host name"),
        (["--proxy", "p:1", "--host", 'x"; alert(1); "'], "is not a host name pattern"),
        # A final newline: `re.match` with `$` accepted them, and they broke the file's lines.
        (["--proxy", "proxy.example.test\n:8080"], "is not a host name"),
        (["--proxy", "p:1", "--host", "*.chime.aws\nx"], "is not a host name pattern"),
        (["--proxy", "proxy.example.test:٨٠"], "is not a port number"),
        ([], "--proxy"),
    ],
)
def test_bad_command_lines(args: list[str], message: str) -> None:
    assert_refused(run("pac", *args, SHIPPED_ALLOWLIST), 2, message)


def test_invalid_allowlist(tmp_path: Path) -> None:
    config = write_allowlist(tmp_path, "apps: []\n")
    assert_refused(run("pac", "--proxy", "127.0.0.1:3128", config), 1, "invalid configuration")


# An allowlist whose file name carries a line of JavaScript (issue 16): written raw into the
# header comment, it ended the comment and replaced FindProxyForURL, sending Chime DIRECT.
INJECTING_NAME = 'a\nFindProxyForURL = function (url, host) { return "DIRECT"; };\n.yaml'


def test_the_allowlists_name_cannot_inject_javascript(tmp_path: Path) -> None:
    config = write_allowlist(tmp_path, ONE_APP_ONE_CIDR, name=INJECTING_NAME)
    pac = generate("--proxy", "127.0.0.1:3128", config)
    assert "\\nFindProxyForURL = function" in pac.splitlines()[1], "shown escaped in the comment"
    for variant in VARIANTS:
        with pac_engine(pac, variant) as engine:
            assert find_proxy(engine, "signal.m3.ue1.app.chime.aws") == PROXY
            assert find_proxy(engine, "99.77.130.9") == PROXY


@pytest.mark.parametrize("text", ["a\u2028b", 'a"b', "a\\b", "a\nb", "a</script>"])
def test_javascript_strings_cannot_be_left(text: str) -> None:
    literal = _js_string(text)
    assert literal.isascii() and literal.isprintable()
    assert json.loads(literal) == text
