"""Every message the allowlist validator can give, word for word, as an admin reads it.

Each case is a file an admin could write; the expected lines are exactly what `chime-egress
validate` and the proxy's log print for it (`F` stands for the file's path). The last test makes
sure no message goes untested: it traces the validator's modules while the cases run and fails
for any place that reports a problem which no case reached.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import yaml

import chime_egress.policy.allowlist as allowlist_module
import chime_egress.policy.compiled as compiled_module
import chime_egress.policy.identifiers as identifiers_module
import chime_egress.policy.media as media_module
import chime_egress.policy.ranges as ranges_module
import chime_egress.policy.source_text as source_text_module
from chime_egress.errors import ConfigError
from chime_egress.policy.compiled import load_policy
from chime_egress.policy.source_text import yaml_problems

K = "destinations: {cidrs: [192.0.2.0/24]}\n"
A = "apps: [{app_key: K}]\n"
NET = A + K + "networks:\n"
ON_RANGES = A + "destinations: {ip_ranges: r.json}\n"
ENTRY = '{"ip_prefix": "99.77.128.0/18", "region": "GLOBAL", "service": "CHIME_MEETINGS"}'
TAB = (
    "a tab character; YAML indents with spaces only (and wants a space after ':'): "
    "replace the tab with spaces"
)
CONTROL = (
    "control character U+{:04X} is not allowed in YAML (most editors do not show it); "
    "delete it, or retype the line"
)
NOT_UTF8 = (
    "byte 0xe9 ('é' in Windows-1252/Latin-1) is not UTF-8; save the file as UTF-8 "
    "(in your editor: 'save with encoding', UTF-8)"
)
LIES_INSIDE = (
    "which comes first, so this entry never applies to those clients; move it above, or remove it"
)
HEADER_LIMIT = "over the 8,192-byte limit; remove apps"
RANGES_FIELD = "F:2: destinations.ip_ranges: R"
MISSING, FOLDER = "<no file>", "<a folder>"  # what _write makes instead of an allowlist file


def _distinct_tenants(count: int) -> list[str]:
    tenants = (f"org{number}" for number in range(10 * count))
    return [t for t in tenants if not any(c * 4 in t for c in set(t))][:count]


# (file text or bytes, ranges file text or None, the problems exactly as printed)
CASES: dict[str, tuple[str | bytes, str | None, list[str]]] = {
    # The text itself: tabs, invisible characters, encodings, YAML syntax.
    "tab-indent": (
        "apps:\n\t- app_key: K\n\t  name: x\n",
        None,
        [f"F:2:1: {TAB}", f"F:3:1: {TAB}"],
    ),
    "tab-after-colon": (A + "destinations:\tx\n", None, [f"F:2:14: {TAB}"]),
    "control-characters": (
        "apps:\n  - app_key: K\x07\n\x00\n",
        None,
        ["F:2:15: " + CONTROL.format(7), "F:3:1: " + CONTROL.format(0)],
    ),
    "yaml-syntax": (
        "apps:\n  - app_key: [unclosed\n",
        None,
        [
            "F:3:1: YAML syntax error: while parsing a flow sequence expected ',' or ']', "
            "but got '<stream end>'"
        ],
    ),
    "latin-1": (
        "apps:\n  - app_key: K\n    name: Café\n    tenants: [caféId]\n".encode("latin-1"),
        None,
        [f"F:3:14: {NOT_UTF8}", f"F:4:18: {NOT_UTF8}"],
    ),
    "utf-16": (
        (A + K).encode("utf-16"),
        None,
        ["F:1:1: the file is saved as UTF-16; save it as UTF-8"],
    ),
    "utf-32": (
        (A + K).encode("utf-32"),
        None,
        ["F:1:1: the file is saved as UTF-32; save it as UTF-8"],
    ),
    "empty-file": ("", None, ["F:1: the file is empty; it needs 'apps'"]),
    "file-missing": (MISSING, None, ["F: allowlist file not found"]),
    "file-unreadable": (FOLDER, None, ["F: is a folder; give the allowlist file itself"]),
    "nested-too-deep": (
        "apps: " + "[" * 20 + "\n",
        None,
        [
            "F:1: nested more than 16 levels deep; an allowlist needs at most 5 (apps, networks "
            "and destinations hold lists of entries)"
        ],
    ),
    # Structure and keys.
    "not-a-mapping": (
        "- a\n- b\n",
        None,
        [
            "F:1: must be a mapping with keys mode, apps, identity, identities, networks, "
            "destinations"
        ],
    ),
    "unknown-key": (
        A + K + "app: []\n",
        None,
        [
            "F:3: app: unknown key 'app'; did you mean 'apps'? (allowed: mode, apps, identity, "
            "identities, networks, destinations)"
        ],
    ),
    "unknown-key-without-hint": (
        A + K + "zzz: 1\n",
        None,
        [
            "F:3: zzz: unknown key 'zzz' (allowed: mode, apps, identity, identities, networks, "
            "destinations)"
        ],
    ),
    "duplicate-key": (
        A + K + "apps: [{app_key: K2}]\n",
        None,
        ["F:3: apps: duplicate key; first given on line 1"],
    ),
    "mode-typo": (
        "mode: enforced\n" + A + K,
        None,
        ["F:1: mode: 'enforced' is not one of enforce, observe; did you mean 'enforce'?"],
    ),
    "mode-not-text": (
        "mode: [enforce]\n" + A + K,
        None,
        ["F:1: mode: must be a single value (text)"],
    ),
    # Apps.
    "no-apps": (
        K,
        None,
        [
            "F:1: apps: missing: list at least one app with its app_key (or set 'mode: observe' "
            "to watch the traffic before enforcing)"
        ],
    ),
    "apps-empty": (
        "apps: []\n" + K,
        None,
        ["F:1: apps: must be a non-empty list of apps, each with an app_key"],
    ),
    "app-not-mapping": (
        "apps: [K]\n" + K,
        None,
        ["F:1: apps[0]: must be a mapping with keys app_key, name, tenants"],
    ),
    "app-key-missing": (
        "apps: [{name: x}]\n" + K,
        None,
        ["F:1: apps[0].app_key: missing; every app needs its AppKey"],
    ),
    "app-key-null": (
        "apps: [{app_key: }]\n" + K,
        None,
        ["F:1: apps[0].app_key: must be a single value (text)"],
    ),
    "app-key-empty": (
        "apps: [{app_key: ''}]\n" + K,
        None,
        [
            "F:1: apps[0].app_key: '' is empty; give the app's AppKey exactly as its vendor or "
            "AWS Support gave it"
        ],
    ),
    "app-key-comma": (
        "apps: [{app_key: 'A,B'}]\n" + K,
        None,
        ["F:1: apps[0].app_key: 'A,B' contains ',' (character 2), which separates header entries"],
    ),
    "app-key-space": (
        "apps: [{app_key: 'A B'}]\n" + K,
        None,
        [
            "F:1: apps[0].app_key: 'A B' contains whitespace (character 2); AppKeys have none: "
            "copy it again"
        ],
    ),
    "app-key-escaped-control": (
        'apps: [{app_key: "A\\x07B"}]\n' + K,
        None,
        [
            "F:1: apps[0].app_key: 'A\\x07B' contains '\\x07' (character 2); only printable "
            "ASCII is allowed"
        ],
    ),
    "app-key-duplicate": (
        "apps:\n  - app_key: K\n  - app_key: K\n" + K,
        None,
        ["F:3: apps[1].app_key: 'K' is already listed on line 2; merge the two entries"],
    ),
    "name-escaped-control": (
        'apps: [{app_key: K, name: "a\\e[31mred"}]\n' + K,
        None,
        ["F:1: apps[0].name: contains the control character U+001B; remove it"],
    ),
    "tenants-not-a-list": (
        "apps: [{app_key: K, tenants: orgId}]\n" + K,
        None,
        ["F:1: apps[0].tenants: must be a list, for example [a, b]"],
    ),
    "tenants-empty": (
        "apps: [{app_key: K, tenants: []}]\n" + K,
        None,
        [
            "F:1: apps[0].tenants: is empty; remove 'tenants' to allow every session of this "
            "app, or list TenantIds"
        ],
    ),
    "tenant-one-character": (
        "apps: [{app_key: K, tenants: [x]}]\n" + K,
        None,
        ["F:1: apps[0].tenants[0]: 'x' is 1 character long; a TenantId has 2 to 256"],
    ),
    "tenant-too-long": (
        f"apps: [{{app_key: K, tenants: [{'ab' * 129}]}}]\n" + K,
        None,
        [
            f"F:1: apps[0].tenants[0]: '{'ab' * 129}' is 258 characters long; a TenantId has 2 to "
            f"256"
        ],
    ),
    "tenant-character": (
        "apps: [{app_key: K, tenants: [org.id]}]\n" + K,
        None,
        ["F:1: apps[0].tenants[0]: 'org.id' contains '.'; allowed are A-Z a-z 0-9 - _ ! @ # $"],
    ),
    "tenant-trailing-newline": (
        # A pattern ending in $ also matches before a final newline: it must not let one into
        # the Tenants header, where it would end the header line.
        'apps: [{app_key: K, tenants: ["ab\\n"]}]\n' + K,
        None,
        ["F:1: apps[0].tenants[0]: 'ab\\n' contains '\\n'; allowed are A-Z a-z 0-9 - _ ! @ # $"],
    ),
    "media-host-trailing-newline": (
        A + 'destinations: {cidrs: [10.0.0.0/8], media_hosts: ["ice.chime.aws\\n"]}\n',
        None,
        [
            "F:2: destinations.media_hosts[0]: 'ice.chime.aws\\n' must be a lowercase host name "
            "of two or more labels, where '*' stands for any characters (for example "
            "ice.*.chime.aws)"
        ],
    ),
    "ip-ranges-empty": (
        A + "destinations: {ip_ranges: ''}\n",
        None,
        ["F:2: destinations.ip_ranges: is empty; name the AWS ip-ranges.json file, or remove it"],
    ),
    "tenant-repeats": (
        "apps: [{app_key: K, tenants: [aaaab]}]\n" + K,
        None,
        [
            "F:1: apps[0].tenants[0]: 'aaaab' repeats a character four or more times in a row, "
            "which Chime does not allow"
        ],
    ),
    "tenant-twice": (
        "apps:\n  - app_key: K\n    tenants:\n      - ab\n      - ab\n" + K,
        None,
        ["F:5: apps[0].tenants[1]: 'ab' is listed twice (first on line 4)"],
    ),
    "app-keys-header-too-long": (
        "apps:\n" + "".join(f"  - app_key: {'k' * 60}{i:04d}\n" for i in range(200)) + K,
        None,
        [
            "F:1: apps: the X-Amzn-Chime-App-Keys header line would be 13,022 bytes, "
            f"{HEADER_LIMIT} to trim at least 4,830 bytes"
        ],
    ),
    "tenants-header-too-long": (
        f"apps:\n  - app_key: K\n    tenants: [{', '.join(_distinct_tenants(1200))}]\n" + K,
        None,
        [
            "F:1: apps: the X-Amzn-Chime-Tenants header line would be 8,513 bytes, "
            f"{HEADER_LIMIT} or their tenants to trim at least 321 bytes"
        ],
    ),
    # Destinations.
    "no-destinations": (
        A,
        None,
        [
            "F:1: destinations: missing: set destinations.ip_ranges, destinations.cidrs or both, "
            "so the proxy knows which addresses are Chime"
        ],
    ),
    "destinations-not-a-mapping": (
        A + "destinations: [x]\n",
        None,
        [
            "F:2: destinations: must be a mapping with keys ip_ranges, services, regions, cidrs, "
            "media_hosts"
        ],
    ),
    "destinations-name-nothing": (
        A + "destinations: {regions: [GLOBAL]}\n",
        None,
        ["F:2: destinations: names no destination: set ip_ranges, cidrs or both"],
    ),
    "services-empty": (
        A + "destinations: {cidrs: [10.0.0.0/8], services: []}\n",
        None,
        ["F:2: destinations.services: must not be empty"],
    ),
    "cidr-not-an-address": (
        A + "destinations: {cidrs: [300.1.1.1/8]}\n",
        None,
        [
            "F:2: destinations.cidrs[0]: '300.1.1.1/8' is not a CIDR: '300.1.1.1/8' does not "
            "appear to be an IPv4 or IPv6 network"
        ],
    ),
    "cidr-host-bits": (
        A + "destinations: {cidrs: [10.1.2.3/8]}\n",
        None,
        [
            "F:2: destinations.cidrs[0]: '10.1.2.3/8' is not a CIDR: 10.1.2.3/8 has host bits "
            "set; did you mean 10.0.0.0/8?"
        ],
    ),
    "media-host-too-long": (
        A + f"destinations: {{cidrs: [10.0.0.0/8], media_hosts: [{'a' * 250}.aws]}}\n",
        None,
        [
            f"F:2: destinations.media_hosts[0]: '{'a' * 250}.aws' is longer than a host name can "
            "be (253 characters)"
        ],
    ),
    "media-host-syntax": (
        A + "destinations: {cidrs: [10.0.0.0/8], media_hosts: ['*']}\n",
        None,
        [
            "F:2: destinations.media_hosts[0]: '*' must be a lowercase host name of two or more "
            "labels, where '*' stands for any characters (for example ice.*.chime.aws)"
        ],
    ),
    "media-host-wildcard-domain": (
        A + "destinations: {cidrs: [10.0.0.0/8], media_hosts: [ice.chime.*]}\n",
        None,
        [
            "F:2: destinations.media_hosts[0]: 'ice.chime.*' must end in a literal domain "
            "(like chime.aws), not a wildcard"
        ],
    ),
    # The ranges file the allowlist names (R stands for its path).
    "ranges-missing": (ON_RANGES, None, [f"{RANGES_FIELD}: ranges file not found"]),
    "ranges-unreadable": (
        ON_RANGES,
        "",
        [f"{RANGES_FIELD}: is a folder; give the ranges file itself"],
    ),
    "ranges-not-json": (
        ON_RANGES,
        "{nope",
        [
            f"{RANGES_FIELD}:1: not valid JSON: Expecting property name enclosed in double quotes "
            f"(column 2)"
        ],
    ),
    "ranges-nested-too-deeply": (
        ON_RANGES,
        "[" * 100_000,
        [f"{RANGES_FIELD}: not an AWS ip-ranges file: arrays or objects nested too deeply to read"],
    ),
    "ranges-huge-number": (
        ON_RANGES,
        '{"syncToken": ' + "9" * 5000 + "}",
        [f"{RANGES_FIELD}: not an AWS ip-ranges file: a number of more than 4,300 digits"],
    ),
    "ranges-sync-token-too-long": (
        ON_RANGES,
        f'{{"syncToken": "{"1" * 30}", "prefixes": [{ENTRY}]}}',
        [
            f"{RANGES_FIELD}: syncToken: 30 digits; AWS's is a Unix time (at most 20 digits "
            "accepted)"
        ],
    ),
    "ranges-not-an-object": (
        ON_RANGES,
        "[]",
        [f"{RANGES_FIELD}: expected a JSON object like AWS's ip-ranges.json"],
    ),
    "ranges-fields": (
        ON_RANGES,
        '{"createDate": 1, "prefixes": {}, "ipv6_prefixes": [1, {"service": "X"}, '
        '{"service": "CHIME_MEETINGS", "region": "GLOBAL", "ipv6_prefix": "10.0.0.0/8"}]}',
        [
            f"{RANGES_FIELD}: syncToken: missing, or not a number in a string",
            f"{RANGES_FIELD}: createDate: must be a string",
            f"{RANGES_FIELD}: prefixes: must be a list",
            f"{RANGES_FIELD}: ipv6_prefixes[0]: must be an object",
            f"{RANGES_FIELD}: ipv6_prefixes[1]: needs string 'service' and 'region'",
            f"{RANGES_FIELD}: ipv6_prefixes[2].ipv6_prefix: must be an IPv6 prefix",
        ],
    ),
    "ranges-not-aws": (
        ON_RANGES,
        '{"syncToken": "1"}',
        [f"{RANGES_FIELD}: prefixes: missing: this is not an AWS ip-ranges file"],
    ),
    "ranges-no-prefix-selected": (
        A + "destinations: {ip_ranges: r.json, services: [AMAZON], regions: [eu-west-1]}\n",
        f'{{"syncToken": "1", "prefixes": [{ENTRY}]}}',
        [
            f"{RANGES_FIELD} has no prefix for services ['AMAZON'] in regions ['eu-west-1']; "
            "check the file, destinations.services and destinations.regions"
        ],
    ),
    # Networks.
    "networks-not-a-list": (
        A + K + "networks: x\n",
        None,
        ["F:3: networks: must be a list of networks, each with name and clients"],
    ),
    "network-name-missing": (
        NET + "  - {clients: [10.0.0.0/8], mode: enforce}\n",
        None,
        ["F:4: networks[0].name: missing: name the network (for logs and metrics)"],
    ),
    "network-name-syntax": (
        NET + "  - {name: 'a b', clients: [10.0.0.0/8], mode: enforce}\n",
        None,
        ["F:4: networks[0].name: 'a b' must be 1-64 letters, digits, '.', '_' or '-'"],
    ),
    "network-name-reserved": (
        NET + "  - {name: default, clients: [10.0.0.0/8], mode: enforce}\n",
        None,
        [
            "F:4: networks[0].name: 'default' is reserved for the top-level settings; choose "
            "another name"
        ],
    ),
    "network-name-twice": (
        NET + "  - {name: a, clients: [10.0.0.0/16], mode: enforce}\n"
        "  - {name: a, clients: [10.1.0.0/16], mode: enforce}\n",
        None,
        ["F:5: networks[1].name: 'a' is already used on line 4"],
    ),
    "network-mode-missing": (
        NET + "  - {name: a, clients: [10.0.0.0/8]}\n",
        None,
        ["F:4: networks[0].mode: missing: say 'enforce' or 'observe' for these clients"],
    ),
    "network-apps-missing": (
        "mode: observe\n" + K + "networks:\n  - {name: a, clients: [10.0.0.0/8], mode: enforce}\n",
        None,
        [
            "F:4: networks[0].apps: missing: mode enforce needs apps, listed here or at the top "
            "level"
        ],
    ),
    "network-header-too-long": (
        NET
        + "  - name: a\n    clients: [10.0.0.0/8]\n    mode: enforce\n    apps:\n"
        + "".join(f"      - app_key: {'k' * 60}{i:04d}\n" for i in range(200)),
        None,
        [
            "F:7: networks[0].apps: the X-Amzn-Chime-App-Keys header line would be 13,022 bytes, "
            f"{HEADER_LIMIT} to trim at least 4,830 bytes"
        ],
    ),
    "network-clients-missing": (
        NET + "  - {name: a, mode: enforce}\n",
        None,
        [
            "F:4: networks[0].clients: missing: list the client address ranges, for example "
            "[10.20.0.0/16]"
        ],
    ),
    "network-clients-empty": (
        NET + "  - {name: a, clients: [], mode: enforce}\n",
        None,
        ["F:4: networks[0].clients: is empty; list at least one range"],
    ),
    "network-clients-ipv4-mapped": (
        NET + "  - {name: a, clients: ['::ffff:10.0.0.0/104'], mode: enforce}\n",
        None,
        [
            "F:4: networks[0].clients[0]: '::ffff:10.0.0.0/104' is an IPv4-mapped IPv6 range; "
            "write it as IPv4 (10.0.0.0/8)"
        ],
    ),
    "network-clients-covered-in-one-entry": (
        NET + "  - {name: a, clients: [10.0.0.0/8, 10.1.0.0/16], mode: enforce}\n",
        None,
        [
            "F:4: networks[0].clients[1]: 10.1.0.0/16 is already covered by 10.0.0.0/8 "
            "(networks[0].clients[0], line 4); remove one"
        ],
    ),
    "network-clients-cover-in-one-entry": (
        NET + "  - {name: a, clients: [10.1.0.0/16, 10.0.0.0/8], mode: enforce}\n",
        None,
        [
            "F:4: networks[0].clients[1]: 10.0.0.0/8 covers 10.1.0.0/16 "
            "(networks[0].clients[0], line 4); remove one"
        ],
    ),
    "network-clients-inside-an-earlier-entry": (
        NET + "  - {name: a, clients: [10.0.0.0/8], mode: enforce}\n"
        "  - {name: b, clients: [10.1.0.0/16], mode: observe}\n",
        None,
        [
            "F:5: networks[1].clients[0]: 10.1.0.0/16 lies inside 10.0.0.0/8 "
            f"(networks[0].clients[0], line 4), {LIES_INSIDE}"
        ],
    ),
    "network-clients-wholly-covered": (
        NET + "  - {name: a, clients: [10.0.0.0/9, 10.128.0.0/9], mode: enforce}\n"
        "  - {name: b, clients: [10.0.0.0/8], mode: observe}\n",
        None,
        [
            "F:5: networks[1].clients[0]: 10.0.0.0/8 is wholly covered by earlier entries "
            "(10.0.0.0/9 (networks[0].clients[0], line 4); 10.128.0.0/9 "
            "(networks[0].clients[1], line 4)), which come first, so this entry never applies "
            "to those clients; move it above, or remove it"
        ],
    ),
}

# Legal files that deserve a look: the same words, as warnings.
WARNINGS: dict[str, tuple[str, list[str]]] = {
    "network-contains-an-earlier-entry": (
        NET + "  - {name: a, clients: [10.1.0.0/16], mode: enforce}\n"
        "  - {name: b, clients: [10.0.0.0/8], mode: observe}\n",
        [
            "F:5: networks[1].clients[0]: 10.0.0.0/8 contains 10.1.0.0/16 "
            "(networks[0].clients[0], line 4), which comes first: clients in 10.1.0.0/16 get "
            "networks[0]"
        ],
    ),
}


def _write(folder: Path, text: str | bytes, ranges: str | None) -> Path:
    path = folder / "allowlist.yaml"
    if text == FOLDER:
        path.mkdir()
    elif text != MISSING:
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    if ranges == "":
        (folder / "r.json").mkdir()  # a ranges "file" that cannot be read
    elif ranges is not None:
        (folder / "r.json").write_text(ranges, encoding="utf-8")
    return path


def _printed(problems: Any, folder: Path) -> list[str]:
    path = str(folder / "allowlist.yaml")
    ranges = str(folder / "r.json")
    return [str(p).replace(ranges, "R").replace(path, "F") for p in problems]


def _problems_of(folder: Path, text: str | bytes, ranges: str | None) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load_policy(_write(folder, text, ranges))
    return _printed(raised.value.problems, folder)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_message_word_for_word(tmp_path: Path, name: str) -> None:
    text, ranges, expected = CASES[name]
    assert _problems_of(tmp_path, text, ranges) == expected


@pytest.mark.parametrize("name", sorted(WARNINGS))
def test_every_warning_word_for_word(tmp_path: Path, name: str) -> None:
    text, expected = WARNINGS[name]
    policy = load_policy(_write(tmp_path, text, None))
    assert _printed(policy.allowlist.warnings, tmp_path) == expected


def test_a_yaml_error_without_a_position_is_still_reported() -> None:
    # PyYAML's parse errors all carry a position; a bare one must still say what it is.
    problems = yaml_problems(yaml.YAMLError("stream broke"), "apps: []\n", "F")
    assert [str(p) for p in problems] == ["F: YAML error: stream broke"]


def test_locations_name_the_column_only_where_the_line_does_not_show_the_spot(
    tmp_path: Path,
) -> None:
    """A tab or a stray byte gets `line:column`; a field's problem the field name instead."""
    tab = _problems_of(tmp_path, "apps:\n  - app_key: K\n\t  name: x\n", None)
    assert tab == [f"F:3:1: {TAB}"]
    field = _problems_of(tmp_path, "apps: [{app_key: 'A B'}]\n" + K, None)
    assert field[0].startswith("F:1: apps[0].app_key: ")


# The validator's modules, and how each reports a problem: every such place must be reached.
_MODULES = (
    allowlist_module,
    compiled_module,
    identifiers_module,
    media_module,
    ranges_module,
    source_text_module,
)
_REPORTING_CALLS = {"problem", "warning", "Problem", "_problem", "ValueError"}


def _reporting_sites(source: str) -> Iterator[tuple[int, int, str]]:
    """(first line, last line, code) of each call that reports a problem, and of each message
    returned by a `*_problem` function."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in _REPORTING_CALLS:
                yield node.lineno, node.end_lineno or node.lineno, ast.unparse(node)[:80]
        elif isinstance(node, ast.FunctionDef) and node.name.endswith("_problem"):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Return) and not (
                    isinstance(inner.value, ast.Constant) and inner.value.value is None
                ):
                    assert inner.value is not None
                    yield inner.lineno, inner.end_lineno or inner.lineno, ast.unparse(inner)[:80]


def test_no_message_goes_untested(tmp_path: Path) -> None:
    files = {str(Path(module.__file__ or "")): module for module in _MODULES}
    executed: dict[str, set[int]] = {name: set() for name in files}

    def trace(frame: FrameType, event: str, arg: object) -> Any:
        lines = executed.get(frame.f_code.co_filename)
        if lines is None:
            return None
        if event == "line":
            lines.add(frame.f_lineno)
        return trace

    sys.settrace(trace)
    try:
        for index, (text, ranges, _) in enumerate(CASES.values()):
            folder = tmp_path / str(index)
            folder.mkdir()
            _problems_of(folder, text, ranges)
        for index, (text, _) in enumerate(WARNINGS.values()):
            folder = tmp_path / f"w{index}"
            folder.mkdir()
            load_policy(_write(folder, text, None))
        yaml_problems(yaml.YAMLError("stream broke"), "", "F")
    finally:
        sys.settrace(None)

    untested = []
    for name, module in files.items():
        source = Path(name).read_text(encoding="utf-8")
        for first, last, code in _reporting_sites(source):
            if not executed[name] & set(range(first, last + 1)):
                untested.append(f"{module.__name__}:{first}: {code}")
    assert untested == [], "messages no case reaches: add a case to CASES for each"
