"""Range loading and matching, on the real AWS files in tests/data."""

import ipaddress
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chime_egress.errors import ConfigError
from chime_egress.policy.ranges import (
    Prefix,
    PrefixTable,
    load_aws_ranges,
    parse_address,
    parse_aws_ranges,
)
from tests.support.data import AWS_RANGES as AWS
from tests.support.data import HISTORY_NEW as NEW
from tests.support.data import HISTORY_OLD as OLD


def table_of(*cidrs: str) -> PrefixTable:
    return PrefixTable(tuple(Prefix(ipaddress.ip_network(c), "S", "R", "test") for c in cidrs))


def test_real_file_yields_exactly_the_chime_prefixes():
    snapshot = load_aws_ranges(AWS)
    assert snapshot.sync_token == "1787411825"
    assert snapshot.create_date == "2026-08-22-15-17-05"
    assert [str(p.network) for p in snapshot.prefixes] == ["99.77.128.0/18", "2600:f0f0:4100::/40"]
    assert {(p.service, p.region) for p in snapshot.prefixes} == {("CHIME_MEETINGS", "GLOBAL")}


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("99.77.128.0", "99.77.128.0/18"),
        ("99.77.191.255", "99.77.128.0/18"),
        ("99.77.188.10", "99.77.128.0/18"),  # also a Global Accelerator /24: still Chime
        ("::ffff:99.77.130.1", "99.77.128.0/18"),  # IPv4-mapped, as on dual-stack sockets
        ("[2600:f0f0:4100::1]", "2600:f0f0:4100::/40"),
        ("2600:f0f0:41ff:ffff::1", "2600:f0f0:4100::/40"),
        ("99.77.127.255", None),
        ("99.77.192.0", None),
        ("2600:f0f0:4200::1", None),
        ("::ffff:99.77.192.1", None),
        ("chime.aws", None),  # not an address
    ],
)
def test_lookup_in_the_real_snapshot(address, expected):
    table = PrefixTable(load_aws_ranges(AWS).prefixes)
    found = table.lookup(address)
    assert (str(found) if found else None) == expected
    assert table.lookup(address) is found  # cached answer is the same


def test_region_filter_on_the_2020_history_file():
    assert [str(p) for p in load_aws_ranges(OLD, regions=["eu-west-1"]).prefixes] == [
        "99.77.133.0/24"
    ]
    assert len(load_aws_ranges(OLD).prefixes) == 3
    assert [str(p) for p in load_aws_ranges(NEW, regions=["GLOBAL"]).prefixes] == ["99.77.128.0/18"]
    assert load_aws_ranges(NEW, regions=["eu-west-1"]).prefixes == ()


def test_whole_aws_table_as_chime_matches_longest_prefix():
    snapshot = load_aws_ranges(AWS, services=None)
    assert len(snapshot.prefixes) == 10_668 + 6_160
    table = PrefixTable(snapshot.prefixes)
    found = table.lookup("99.77.188.10")
    assert found is not None and str(found) == "99.77.188.0/24"
    # AMAZON and GLOBALACCELERATOR both list it; the first listed in the file is reported.
    assert found.service == "AMAZON"


def test_most_specific_prefix_wins_and_first_listed_wins_ties():
    table = table_of("10.0.0.0/8", "10.1.0.0/16", "10.1.0.0/16")
    assert str(table.lookup("10.1.2.3")) == "10.1.0.0/16"
    assert str(table.lookup("10.2.2.3")) == "10.0.0.0/8"
    assert table.lookup("11.0.0.0") is None


def test_cache_stays_bounded():
    table = table_of("10.0.0.0/8")
    for i in range(10_000):
        table.lookup(f"10.0.{i // 256}.{i % 256}")
    assert len(table._cache) <= 4096
    assert str(table.lookup("10.0.0.1")) == "10.0.0.0/8"


@given(
    network=st.ip_addresses(v=4).flatmap(
        lambda a: st.integers(0, 32).map(lambda n: ipaddress.ip_network((a, n), strict=False))
    ),
    probe=st.ip_addresses(v=4),
)
def test_lookup_agrees_with_ipaddress_membership_v4(network, probe):
    table = PrefixTable((Prefix(network, "S", "R", "t"),))
    assert (table.lookup_ip(probe) is not None) == (probe in network)
    mapped = ipaddress.IPv6Address(f"::ffff:{probe}")
    assert (table.lookup(str(mapped)) is not None) == (probe in network)


@given(
    network=st.ip_addresses(v=6).flatmap(
        lambda a: st.integers(0, 128).map(lambda n: ipaddress.ip_network((a, n), strict=False))
    ),
    probe=st.ip_addresses(v=6),
)
def test_lookup_agrees_with_ipaddress_membership_v6(network, probe):
    table = PrefixTable((Prefix(network, "S", "R", "t"),))
    expected = probe in network and probe.ipv4_mapped is None
    if probe.ipv4_mapped is None:
        assert (table.lookup(str(probe)) is not None) == expected


def test_parse_address_normalises():
    assert str(parse_address("::ffff:10.0.0.1")) == "10.0.0.1"
    assert str(parse_address("fe80::1%eth0")) == "fe80::1"
    assert str(parse_address("[::1]")) == "::1"
    assert parse_address("example.com") is None


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"syncToken": "1", "prefixes": [', "not valid JSON"),
        ("[]", "expected a JSON object"),
        ('{"syncToken": "1"}', "prefixes: missing"),
        ('{"syncToken": "x", "prefixes": []}', "syncToken"),
        ('{"syncToken": "\u00b2", "prefixes": []}', "syncToken"),  # a digit int() refuses
        ('{"syncToken": "1", "prefixes": {}}', "prefixes: must be a list"),
        (
            '{"syncToken": "1", "prefixes": [{"ip_prefix": "99.77.128.1/18", '
            '"region": "GLOBAL", "service": "CHIME_MEETINGS"}]}',
            "prefixes[0].ip_prefix",
        ),
        (
            '{"syncToken": "1", "prefixes": [{"ip_prefix": "2600::/40", '
            '"region": "GLOBAL", "service": "CHIME_MEETINGS"}]}',
            "must be an IPv4 prefix",
        ),
        ('{"syncToken": "1", "prefixes": [{"ip_prefix": "1.0.0.0/8"}]}', "needs string"),
    ],
)
def test_malformed_ranges_are_refused_with_the_field(text, needle):
    with pytest.raises(ConfigError) as raised:
        parse_aws_ranges(text, "ranges.json")
    assert needle in str(raised.value)
    assert "ranges.json" in str(raised.value)


def test_json_syntax_error_names_the_line():
    text = json.dumps({"syncToken": "1", "createDate": "x", "prefixes": []}, indent=2)
    broken = text.replace('"createDate"', "createDate")
    with pytest.raises(ConfigError) as raised:
        parse_aws_ranges(broken, "r.json")
    assert raised.value.problems[0].line == 3


def test_missing_ranges_file(tmp_path):
    with pytest.raises(ConfigError, match="ranges file not found"):
        load_aws_ranges(tmp_path / "nope.json")
