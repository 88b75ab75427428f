"""Allowlist parsing: every mistake is refused with the file, the line and the field."""

import re
import textwrap
from pathlib import Path

import pytest

from chime_egress.errors import ConfigError
from chime_egress.policy.allowlist import parse_allowlist
from chime_egress.policy.compiled import load_policy

GOOD = """\
apps:
  - app_key: AppKey1
    name: Engineering chat
    tenants: [engineeringId, salesId]
  - app_key: AppKey2
destinations:
  cidrs: [192.0.2.0/24, "2001:db8::/32"]
"""


def parse(text: str):
    return parse_allowlist(textwrap.dedent(text), Path("/etc/chime/allowlist.yaml"))


def refused(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as raised:
        parse(text)
    return raised.value


def test_good_file_is_modelled_in_file_order():
    allowlist = parse(GOOD)
    assert [(a.app_key, a.name, a.tenants, a.line) for a in allowlist.apps] == [
        ("AppKey1", "Engineering chat", ("engineeringId", "salesId"), 2),
        ("AppKey2", None, (), 5),
    ]
    assert [str(c) for c in allowlist.destinations.cidrs] == ["192.0.2.0/24", "2001:db8::/32"]
    assert allowlist.destinations.services == ("CHIME_MEETINGS",)
    assert allowlist.destinations.ip_ranges is None


def test_identifiers_keep_their_text_exactly_as_written():
    allowlist = parse(
        """\
        apps:
          - app_key: 0123
            tenants: [007, yes, "12"]
        destinations: {cidrs: [192.0.2.0/24]}
        """
    )
    assert allowlist.apps[0].app_key == "0123"
    assert allowlist.apps[0].tenants == ("007", "yes", "12")


def test_media_hosts_default_and_explicit():
    assert parse(GOOD).destinations.media_hosts == ("ice.*.chime.aws",)
    explicit = parse("apps: [{app_key: K}]\ndestinations: {cidrs: [10.0.0.0/8], media_hosts: []}\n")
    assert explicit.destinations.media_hosts == ()


def test_ip_ranges_resolves_against_the_allowlist_folder():
    allowlist = parse("apps: [{app_key: K}]\ndestinations: {ip_ranges: sub/r.json}\n")
    assert allowlist.destinations.ip_ranges == Path("/etc/chime/sub/r.json")
    assert allowlist.destinations.ip_ranges_line == 2


BAD_FILES = [
    ("yaml-syntax", "apps:\n  - app_key: [unclosed\n", 3, "", "YAML syntax error"),
    ("tab-indent", "apps:\n\t- app_key: K\n", 2, "", "a tab character"),
    ("empty-file", "", 1, "", "empty"),
    ("not-a-mapping", "- a\n- b\n", 1, "", "must be a mapping"),
    (
        "tenant-typo",
        "apps:\n  - app_key: K\n    tenant: [orgId]\ndestinations: {cidrs: [192.0.2.0/24]}\n",
        3,
        "apps[0].tenant",
        "did you mean 'tenants'",
    ),
    ("unknown-top-key", GOOD + "extra: 1\n", 8, "extra", "unknown key"),
    (
        "duplicate-key",
        "apps:\n  - app_key: K\n    tenants: [ab]\n    tenants: [cd]\n"
        "destinations: {cidrs: [192.0.2.0/24]}\n",
        4,
        "apps[0].tenants",
        "duplicate key; first given on line 3",
    ),
    ("duplicate-top-key", GOOD + "apps: []\n", 8, "apps", "duplicate key"),
    (
        "missing-app-key",
        "apps:\n  - name: x\ndestinations: {cidrs: [192.0.2.0/24]}\n",
        2,
        "apps[0].app_key",
        "missing",
    ),
    (
        "null-app-key",
        "apps:\n  - app_key:\ndestinations: {cidrs: [192.0.2.0/24]}\n",
        2,
        "apps[0].app_key",
        "single value",
    ),
    (
        "duplicate-app-key",
        "apps:\n  - app_key: K\n  - app_key: K\ndestinations: {cidrs: [192.0.2.0/24]}\n",
        3,
        "apps[1].app_key",
        "already listed on line 2",
    ),
    *[
        (
            f"app-key-{label}",
            f'apps:\n  - app_key: "{key}"\ndestinations: {{cidrs: [192.0.2.0/24]}}\n',
            2,
            "apps[0].app_key",
            reason,
        )
        for label, key, reason in [
            ("space", "App Key", "whitespace"),
            ("comma", "App,Key", "separates"),
            ("colon", "App:Key", "separates"),
            ("semicolon", "App;Key", "separates"),
            ("control", "App\\x07Key", "printable ASCII"),
            ("empty", "", "empty"),
        ]
    ],
    *[
        (
            f"tenant-{label}",
            f'apps:\n  - app_key: K\n    tenants:\n      - ok\n      - "{tenant}"\n'
            "destinations: {cidrs: [192.0.2.0/24]}\n",
            5,
            "apps[0].tenants[1]",
            reason,
        )
        for label, tenant, reason in [
            ("short", "a", "2 to 256"),
            ("long", "x" * 257, "2 to 256"),
            ("char", "org.id", "'.'"),
            ("repeat", "aaaa", "four or more"),
            ("duplicate", "ok", "listed twice (first on line 4)"),
        ]
    ],
    (
        "empty-tenants",
        "apps:\n  - app_key: K\n    tenants: []\ndestinations: {cidrs: [192.0.2.0/24]}\n",
        3,
        "apps[0].tenants",
        "is empty",
    ),
    (
        "tenants-not-a-list",
        "apps:\n  - app_key: K\n    tenants: orgId\ndestinations: {cidrs: [192.0.2.0/24]}\n",
        3,
        "apps[0].tenants",
        "must be a list",
    ),
    ("no-apps", "destinations: {cidrs: [192.0.2.0/24]}\n", 1, "apps", "missing"),
    ("empty-apps", "apps: []\ndestinations: {cidrs: [192.0.2.0/24]}\n", 1, "apps", "non-empty"),
    ("no-destinations", "apps: [{app_key: K}]\n", 1, "destinations", "missing"),
    (
        "empty-destinations",
        "apps: [{app_key: K}]\ndestinations: {regions: [GLOBAL]}\n",
        2,
        "destinations",
        "names no destination",
    ),
    (
        "bad-cidr",
        "apps: [{app_key: K}]\ndestinations:\n  cidrs:\n    - 192.0.2.0/24\n    - 300.1.1.1/8\n",
        5,
        "destinations.cidrs[1]",
        "not a CIDR",
    ),
    (
        "cidr-host-bits",
        "apps: [{app_key: K}]\ndestinations:\n  cidrs: [10.1.2.3/8]\n",
        3,
        "destinations.cidrs[0]",
        "did you mean 10.0.0.0/8",
    ),
    (
        # Destinations are matched in IPv4 form, so this range would silently match nothing.
        "cidr-ipv4-mapped",
        "apps: [{app_key: K}]\ndestinations:\n  cidrs: ['::ffff:127.0.0.2/128']\n",
        3,
        "destinations.cidrs[0]",
        "IPv4-mapped IPv6 range; write it as IPv4 (127.0.0.2/32)",
    ),
    (
        "unknown-destination-key",
        "apps: [{app_key: K}]\ndestinations:\n  cidrs: [10.0.0.0/8]\n  service: [X]\n",
        4,
        "destinations.service",
        "did you mean 'services'",
    ),
    (
        "bad-media-host",
        "apps: [{app_key: K}]\ndestinations:\n  cidrs: [10.0.0.0/8]\n"
        "  media_hosts:\n    - ice.*.chime.aws\n    - '*'\n",
        6,
        "destinations.media_hosts[1]",
        "two or more labels",
    ),
    (
        "header-too-long",
        "apps:\n"
        + "".join(f"  - app_key: {'k' * 60}{i:04d}\n" for i in range(200))
        + "destinations: {cidrs: [10.0.0.0/8]}\n",
        1,
        "apps",
        "X-Amzn-Chime-App-Keys header line would be 13,022 bytes",  # 200*64 + 199 + 23
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "field", "message"),
    [case[1:] for case in BAD_FILES],
    ids=[case[0] for case in BAD_FILES],
)
def test_bad_files_are_refused_naming_file_line_and_field(text, line, field, message):
    error = refused(text)
    assert any(
        p.line == line and p.field == field and message in p.message for p in error.problems
    ), str(error)
    assert all(p.path == "/etc/chime/allowlist.yaml" for p in error.problems)
    assert re.search(rf"^/etc/chime/allowlist\.yaml:{line}(:\d+)?: ", str(error), re.MULTILINE)


def test_every_problem_is_reported_at_once():
    error = refused(
        "apps:\n  - app_key: 'a b'\n  - app_key: K\n    tenants: [x]\n"
        "destinations: {cidrs: [nope]}\n"
    )
    assert [p.line for p in error.problems] == [2, 4, 5]


def test_header_size_error_says_how_much_to_trim():
    text = "apps:\n" + "".join(f"  - app_key: {'k' * 60}{i:04d}\n" for i in range(200))
    error = refused(text + "destinations: {cidrs: [10.0.0.0/8]}\n")
    assert "trim at least 4,830 bytes" in str(error)


def write(tmp_path: Path, allowlist: str, ranges: str | None = None) -> Path:
    path = tmp_path / "allowlist.yaml"
    path.write_text(allowlist)
    if ranges is not None:
        (tmp_path / "r.json").write_text(ranges)
    return path


RANGES = (
    '{"syncToken": "7", "createDate": "d", "prefixes": [{"ip_prefix": "99.77.128.0/18", '
    '"region": "GLOBAL", "service": "CHIME_MEETINGS", "network_border_group": "GLOBAL"}], '
    '"ipv6_prefixes": []}'
)


def test_policy_combines_ranges_and_cidrs(tmp_path):
    path = write(
        tmp_path,
        "apps: [{app_key: K, tenants: [ab]}]\n"
        "destinations: {ip_ranges: r.json, cidrs: [192.0.2.0/24]}\n",
        RANGES,
    )
    policy = load_policy(path)
    assert str(policy.table.lookup("99.77.130.1")) == "99.77.128.0/18"
    assert str(policy.table.lookup("192.0.2.9")) == "192.0.2.0/24"
    assert policy.table.lookup("198.51.100.1") is None
    assert policy.clients.default.http1_headers == (
        ("X-Amzn-Chime-App-Keys", "K"),
        ("X-Amzn-Chime-Tenants", "K:ab"),
    )
    assert policy.sources == (path, tmp_path / "r.json")
    assert policy.ranges is not None and policy.ranges.sync_token == "7"


@pytest.mark.parametrize(
    ("ranges", "destinations", "message"),
    [
        (None, "{ip_ranges: r.json}", "ranges file not found"),
        ("{nope", "{ip_ranges: r.json}", "not valid JSON"),
        (RANGES, "{ip_ranges: r.json, services: [AMAZON]}", "has no prefix for services"),
        (RANGES, "{ip_ranges: r.json, regions: [eu-west-1]}", "in regions ['eu-west-1']"),
    ],
)
def test_ranges_problems_name_the_allowlist_line(tmp_path, ranges, destinations, message):
    path = write(tmp_path, f"apps: [{{app_key: K}}]\ndestinations: {destinations}\n", ranges)
    with pytest.raises(ConfigError) as raised:
        load_policy(path)
    assert f"{path}:2: destinations.ip_ranges: " in str(raised.value)
    assert message in str(raised.value)
    assert str(tmp_path / "r.json") in str(raised.value)


def test_shipped_default_configuration_loads_without_shared_data():
    repo = Path(__file__).resolve().parents[2]
    policy = load_policy(repo / "config" / "allowlist.yaml")
    assert policy.allowlist.destinations.ip_ranges == repo / "config" / "chime-ip-ranges.json"
    assert [str(p) for p in policy.table.prefixes] == ["99.77.128.0/18", "2600:f0f0:4100::/40"]
