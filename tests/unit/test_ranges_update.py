"""What a ranges update may change without --force (chime_egress.policy.ranges_update), and the
parser's clean errors for hostile JSON, which the proxy's loader shares."""

from __future__ import annotations

import ipaddress

import pytest

from chime_egress.errors import ConfigError
from chime_egress.policy.ranges import Prefix, RangesSnapshot, parse_aws_ranges
from chime_egress.policy.ranges_update import prefix_concerns, update_concerns


def snapshot(token: str, *prefixes: str | tuple[str, str, str]) -> RangesSnapshot:
    made = []
    for item in prefixes:
        text, service, region = (
            (item, "CHIME_MEETINGS", "GLOBAL") if isinstance(item, str) else item
        )
        made.append(Prefix(ipaddress.ip_network(text), service, region, "r.json"))
    return RangesSnapshot(token, "2026-01-01-00-00-00", tuple(made))


CURRENT = snapshot("100", "99.77.128.0/18", "2600:f0f0:4100::/40")


def test_an_ordinary_update_raises_no_concern() -> None:
    newer = snapshot("200", "99.77.128.0/18", "99.77.192.0/20", "2600:f0f0:4100::/40")
    assert update_concerns(CURRENT, newer) == []
    assert update_concerns(None, CURRENT) == []
    assert update_concerns(CURRENT, CURRENT) == [], "the same file again is no change"


@pytest.mark.parametrize(
    ("network", "concern"),
    [
        ("0.0.0.0/0", "wider than /8"),
        ("::/0", "wider than /24"),
        ("2.0.0.0/7", "wider than /8"),
        ("10.0.0.0/8", "not public unicast"),
        ("100.64.0.0/10", "not public unicast"),
        ("169.254.0.0/16", "not public unicast"),
        ("239.1.0.0/16", "not public unicast"),
        ("fe80::/64", "not public unicast"),
        ("::ffff:0:0/96", "not public unicast"),
    ],
)
def test_prefixes_no_aws_file_lists(network: str, concern: str) -> None:
    (found,) = prefix_concerns(snapshot("1", network).prefixes)
    assert concern in found and network in found


def test_the_widest_prefixes_aws_publishes_pass() -> None:
    assert prefix_concerns(snapshot("1", "3.0.0.0/11", "2600:1f00::/32").prefixes) == []


def test_large_changes_in_count_and_new_regions_are_concerns() -> None:
    many = snapshot("200", *[f"99.77.{i}.0/24" for i in range(8)], "2600:f0f0:4100::/40")
    (count,) = update_concerns(CURRENT, many)
    assert "goes from 2 to 9" in count
    regional = snapshot("200", ("99.77.128.0/18", "CHIME_MEETINGS", "us-east-1"))
    (regions,) = update_concerns(CURRENT, regional)
    assert "new: CHIME_MEETINGS us-east-1; gone: CHIME_MEETINGS GLOBAL" in regions


def test_sync_token_older_or_equal_with_other_prefixes() -> None:
    older = snapshot("99", "99.77.128.0/18", "2600:f0f0:4100::/40")
    (concern,) = update_concerns(CURRENT, older)
    assert "syncToken 99 (2026-01-01-00-00-00) is older than the current snapshot's 100" in concern
    same_token = snapshot("100", "99.77.0.0/18", "2600:f0f0:4100::/40")
    (concern,) = update_concerns(CURRENT, same_token)
    assert "syncToken 100 is the current snapshot's, but the prefixes differ" in concern


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 100_000, "nested too deeply to read"),
        ('{"a": ' * 50_000 + "1" + "}" * 50_000, "nested too deeply to read"),
        ('{"syncToken": ' + "9" * 5000 + "}", "a number of more than 4,300 digits"),
        ('{"syncToken": "' + "9" * 5000 + '", "prefixes": []}', "syncToken: 5000 digits"),
        ('{"syncToken": "' + "9" * 21 + '", "prefixes": []}', "syncToken: 21 digits"),
    ],
    ids=["deep-array", "deep-object", "long-number", "long-token", "21-digits"],
)
def test_hostile_json_is_a_clean_file_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_aws_ranges(text, "ranges.json")
    (problem,) = caught.value.problems
    assert problem.path == "ranges.json" and message in str(problem)


def test_a_twenty_digit_sync_token_is_still_read() -> None:
    ranges = parse_aws_ranges('{"syncToken": "' + "9" * 20 + '", "prefixes": []}', "r.json")
    assert ranges.sync_token_number == int("9" * 20)
