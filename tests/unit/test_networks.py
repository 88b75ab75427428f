"""`mode` and `networks`: parsing, validation (file, line, field) and the per-client choice."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chime_egress.errors import ConfigError
from chime_egress.policy.allowlist import Allowlist, parse_allowlist
from chime_egress.policy.client_policy import compile_client_policies

PATH = Path("/etc/chime/allowlist.yaml")

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


def parse(text: str) -> Allowlist:
    return parse_allowlist(textwrap.dedent(text), PATH)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse(text)
    return [str(problem) for problem in raised.value.problems]


def test_staged_rollout_is_modelled_in_file_order() -> None:
    allowlist = parse(STAGED)
    assert allowlist.mode == "observe"
    assert [(n.name, n.mode, n.line) for n in allowlist.networks] == [
        ("pilot", "observe", 6),
        ("hq", "enforce", 9),
        ("sales", "enforce", 12),
    ]
    assert allowlist.networks[1].apps is None  # inherits the top level
    assert [a.app_key for a in allowlist.networks[2].apps or ()] == ["SalesKey"]
    # 10.20.0.0/16 holds the earlier 10.20.5.0/24: legal (first match wins), but said.
    [warning] = allowlist.warnings
    assert str(warning) == (
        f"{PATH}:10: networks[1].clients[0]: 10.20.0.0/16 contains 10.20.5.0/24 "
        "(networks[0].clients[0], line 7), which comes first: clients in 10.20.5.0/24 get "
        "networks[0]"
    )


@pytest.mark.parametrize(
    ("address", "network", "app_keys", "tenants"),
    [
        ("10.20.5.7", "pilot", None, None),  # observe: nothing sent
        ("10.20.1.1", "hq", "CorpKey", "CorpKey:corpOrg"),
        ("2001:db8::5", "hq", "CorpKey", "CorpKey:corpOrg"),
        ("::ffff:192.168.3.4", "sales", "SalesKey", None),  # IPv4 client on an IPv6 socket
        ("192.168.3.4", "sales", "SalesKey", None),
        ("172.16.0.1", "default", None, None),  # top level: observe
        ("not-an-address", "default", None, None),
    ],
)
def test_the_first_network_holding_the_client_decides(
    address: str, network: str, app_keys: str | None, tenants: str | None
) -> None:
    chosen = compile_client_policies(parse(STAGED)).for_client(address)
    assert chosen.name == network
    sent = dict(chosen.http1_headers)
    assert sent.get("X-Amzn-Chime-App-Keys") == app_keys
    assert sent.get("X-Amzn-Chime-Tenants") == tenants
    assert dict(chosen.http2_headers) == {name.lower(): value for name, value in sent.items()}


def test_without_networks_every_client_gets_the_top_level() -> None:
    policies = compile_client_policies(parse("apps: [{app_key: K}]\ndestinations: {cidrs: []}\n"))
    assert policies.networks == ()
    assert policies.for_client("10.0.0.1").mode == "enforce"
    assert policies.for_client("10.0.0.1").http1_headers == (("X-Amzn-Chime-App-Keys", "K"),)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "mode: observes\ndestinations: {cidrs: []}\n",
            ["1: mode: 'observes' is not one of enforce, observe; did you mean 'observe'?"],
        ),
        (
            "destinations: {cidrs: []}\n",
            ["1: apps: missing: list at least one app with its app_key (or set 'mode: observe'"],
        ),
        (
            "mode: observe\nnetworks:\n  - {name: a, clients: [10.0.0.0/8], mode: enforce}\n"
            "destinations: {cidrs: []}\n",
            ["3: networks[0].apps: missing: mode enforce needs apps"],
        ),
        (
            "apps: [{app_key: K}]\nnetworks:\n  - {name: a, clients: [10.0.0.0/8]}\n"
            "destinations: {cidrs: []}\n",
            ["3: networks[0].mode: missing: say 'enforce' or 'observe'"],
        ),
        (
            "apps: [{app_key: K}]\nnetworks:\n  - {clients: [10.0.0.0/8], mode: observe}\n"
            "destinations: {cidrs: []}\n",
            ["3: networks[0].name: missing: name the network"],
        ),
        (
            "apps: [{app_key: K}]\nnetworks:\n  - {name: default, clients: [10.0.0.0/8], "
            "mode: observe}\ndestinations: {cidrs: []}\n",
            ["3: networks[0].name: 'default' is reserved"],
        ),
        (
            "apps: [{app_key: K}]\nnetworks:\n  - {name: 'a b', clients: [10.0.0.0/8], "
            "mode: observe}\ndestinations: {cidrs: []}\n",
            ["3: networks[0].name: 'a b' must be 1-64 letters"],
        ),
        (
            "apps: [{app_key: K}]\nnetworks:\n  - {name: a, clients: [10.0.0.0/8], mode: observe}\n"
            "  - {name: a, clients: [11.0.0.0/8], mode: observe}\ndestinations: {cidrs: []}\n",
            ["4: networks[1].name: 'a' is already used on line 3"],
        ),
        (
            "apps: [{app_key: K}]\nnetworks:\n  - {name: a, clients: [10.0.0.0/8], mode: observe,"
            " colour: red}\ndestinations: {cidrs: []}\n",
            ["3: networks[0].colour: unknown key 'colour' (allowed: name, clients, mode, apps)"],
        ),
        (
            "apps: [{app_key: K}]\nnetworks:\n  - {name: a, clients: [10.0.0.1/8], mode: observe}\n"
            "destinations: {cidrs: []}\n",
            ["3: networks[0].clients[0]: '10.0.0.1/8' is not a CIDR", "did you mean 10.0.0.0/8?"],
        ),
        (
            "apps: [{app_key: K}]\nnetworks:\n  - {name: a, clients: [], mode: observe}\n"
            "destinations: {cidrs: []}\n",
            ["3: networks[0].clients: is empty"],
        ),
        (
            "apps: [{app_key: K}]\nnetworks:\n  - {name: a, clients: ['::ffff:10.0.0.0/104'], "
            "mode: observe}\ndestinations: {cidrs: []}\n",
            ["networks[0].clients[0]: '::ffff:10.0.0.0/104' is an IPv4-mapped", "(10.0.0.0/8)"],
        ),
        (
            "apps: [{app_key: K}]\nnetworks:\n"
            "  - {name: a, clients: [10.0.0.0/8, 10.1.0.0/16], mode: observe}\n"
            "destinations: {cidrs: []}\n",
            ["networks[0].clients[1]: 10.1.0.0/16 is already covered by 10.0.0.0/8"],
        ),
        (
            "apps: [{app_key: K}]\nnetworks:\n"
            "  - {name: a, clients: [10.0.0.0/8], mode: observe}\n"
            "  - {name: b, clients: [10.9.0.0/16], mode: enforce}\n"
            "destinations: {cidrs: []}\n",
            [
                "4: networks[1].clients[0]: 10.9.0.0/16 lies inside 10.0.0.0/8 "
                "(networks[0].clients[0], line 3), which comes first, so this entry never applies"
            ],
        ),
        (
            "apps: [{app_key: K}]\nnetworks:\n"
            "  - {name: a, clients: [10.0.0.0/25], mode: observe}\n"
            "  - {name: b, clients: [10.0.0.128/25], mode: observe}\n"
            "  - {name: c, clients: [10.0.0.0/24], mode: enforce}\n"
            "destinations: {cidrs: []}\n",
            [
                "5: networks[2].clients[0]: 10.0.0.0/24 is wholly covered by earlier entries "
                "(10.0.0.0/25 (networks[0].clients[0], line 3); 10.0.0.128/25 "
                "(networks[1].clients[0], line 4))"
            ],
        ),
        (
            "apps: [{app_key: K}]\nnetworks:\n  - {name: a, clients: [10.0.0.0/8], mode: observe,"
            " apps: []}\ndestinations: {cidrs: []}\n",
            ["3: networks[0].apps: must be a non-empty list of apps"],
        ),
        (
            "apps: [{app_key: K}]\nnetworks:\n  - {name: a, clients: [10.0.0.0/8], mode: enforce,"
            " apps: [{app_key: 'bad key'}]}\ndestinations: {cidrs: []}\n",
            ["3: networks[0].apps[0].app_key: 'bad key'"],
        ),
        (
            "apps: [{app_key: K}]\nnetworks: {name: a}\ndestinations: {cidrs: []}\n",
            ["2: networks: must be a list of networks"],
        ),
    ],
)
def test_mistakes_are_refused_with_line_and_field(text: str, expected: list[str]) -> None:
    found = "\n".join(problems(text))
    for fragment in expected:
        assert fragment in found, found


def test_a_network_header_over_the_size_limit_is_refused() -> None:
    many = ", ".join(f"{{app_key: App{index:04d}Key{'x' * 20}}}" for index in range(300))
    found = problems(
        "mode: observe\nnetworks:\n"
        f"  - {{name: big, clients: [10.0.0.0/8], mode: enforce, apps: [{many}]}}\n"
        "destinations: {cidrs: []}\n"
    )
    assert any(
        "networks[0].apps: the X-Amzn-Chime-App-Keys header line would be" in p for p in found
    )


_octets = st.integers(min_value=0, max_value=255)


@given(a=_octets, b=_octets, c=_octets, d=_octets)
def test_lookup_agrees_with_a_linear_first_match(a: int, b: int, c: int, d: int) -> None:
    address = f"{a}.{b}.{c}.{d}"
    allowlist = parse(
        "apps: [{app_key: K}]\nnetworks:\n"
        "  - {name: n1, clients: [10.20.5.0/24, 128.0.0.0/2], mode: observe}\n"
        "  - {name: n2, clients: [10.0.0.0/8, 64.0.0.0/2], mode: enforce}\n"
        "destinations: {cidrs: []}\n"
    )
    expected = "default"
    if (a, b, c) == (10, 20, 5) or 128 <= a < 192:
        expected = "n1"
    elif a == 10 or 64 <= a < 128:
        expected = "n2"
    assert compile_client_policies(allowlist).for_client(address).name == expected
