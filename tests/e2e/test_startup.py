"""Start-up validation: a bad allowlist or ranges file stops mitmdump with a message naming the
file, the line (``PATH:LINE:``) and the field; a good one starts and says where it was loaded from.

Every bad case starts from the same valid file (``BASE``, whose line numbers the cases rely on) and
changes one thing. The cases run as separate mitmdump processes, a few at a time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.config import AWS_CHIME_PREFIXES, Prefix, ranges_document, write_text
from tests.support.proxy import (
    REPO_ROOT,
    FailedStart,
    ProxyLauncher,
    assert_clean_start_up_failure,
    run_expect_failure,
)

ALLOWLIST = "allowlist.yaml"
RANGES = "chime-ip-ranges.json"

BASE: dict[int, str] = {
    1: "apps:",
    2: "  - app_key: AppKey1",
    3: "    name: Engineering chat",
    4: "    tenants: [engineeringId, salesId]",
    5: "  - app_key: AppKey2",
    6: "destinations:",
    7: f"  ip_ranges: {RANGES}",
    8: "  services: [CHIME_MEETINGS]",
    9: "  regions: []",
    10: "  cidrs: [127.0.0.2/32]",
}
GOOD_RANGES = json.dumps(ranges_document([*AWS_CHIME_PREFIXES, "127.0.0.2/32"]), indent=2) + "\n"


def yaml_with(changes: Mapping[int, str | list[str]]) -> str:
    """BASE with some lines replaced (a list replaces one line by several, shifting the rest)."""
    lines: list[str] = []
    for number, text in BASE.items():
        replacement = changes.get(number, text)
        lines.extend(replacement if isinstance(replacement, list) else [replacement])
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Where:
    """An acceptable location: a file of the case and the lines that may be named (None: any)."""

    file: str
    lines: frozenset[int] | None


def at(file: str, *lines: int) -> Where:
    return Where(file, frozenset(lines) if lines else None)


@dataclass(frozen=True)
class Case:
    allowlist: str
    where: tuple[Where, ...]
    """The output must name ``PATH:LINE:`` for at least one of these."""
    field: str | None
    """A regex (case-insensitive) that the output must contain: the offending field."""
    also: tuple[str, ...] = ()
    """More regexes (case-insensitive) that the output must contain."""
    oversize: bool = False
    """The output must state a size over 8,192 bytes (``N bytes``)."""
    ranges: str = GOOD_RANGES


def _many_apps(count: int, key_length: int) -> str:
    keys = [f"K{i:04d}" + "abcdefgh" * (key_length // 8) for i in range(count)]
    apps = "".join(f"  - app_key: {key[:key_length]}\n" for key in keys)
    return f"apps:\n{apps}destinations:\n  ip_ranges: {RANGES}\n  cidrs: [127.0.0.2/32]\n"


def _many_tenants(count: int, length: int) -> str:
    tenants = ", ".join((f"t{i:03d}" + "abcdefghij" * 26)[:length] for i in range(count))
    return (
        "apps:\n  - app_key: AppKey1\n"
        f"    tenants: [{tenants}]\n"
        f"destinations:\n  ip_ranges: {RANGES}\n  cidrs: [127.0.0.2/32]\n"
    )


A, R = ALLOWLIST, RANGES
TOO_LONG_TENANT = ("ab1" * 90)[:257]

CASES: dict[str, Case] = {
    "yaml-syntax-error": Case(yaml_with({3: "    name: Engineering: chat"}), (at(A, 3),), None),
    "yaml-not-a-mapping": Case("- app_key: AppKey1\n- app_key: AppKey2\n", (at(A, 1),), None),
    "unknown-key-tenant-typo": Case(
        yaml_with({4: "    tenant: [engineeringId, salesId]"}), (at(A, 4),), r"\btenant\b"
    ),
    "unknown-key-in-destinations": Case(
        yaml_with({10: "  cidr: [127.0.0.2/32]"}), (at(A, 10),), r"\bcidr\b"
    ),
    "duplicate-key-in-app": Case(
        yaml_with({2: ["  - app_key: AppKey1", "    app_key: AppKey3"]}), (at(A, 2, 3),), "app_key"
    ),
    "duplicate-key-in-destinations": Case(
        yaml_with({9: ["  regions: []", "  regions: [GLOBAL]"]}), (at(A, 9, 10),), "regions"
    ),
    "missing-app-key": Case(yaml_with({5: "  - name: No key here"}), (at(A, 5),), "app_key"),
    "duplicate-app-key": Case(yaml_with({5: "  - app_key: AppKey1"}), (at(A, 2, 5),), "app_key"),
    "app-key-space": Case(yaml_with({5: '  - app_key: "App Key2"'}), (at(A, 5),), "app_key"),
    "app-key-comma": Case(yaml_with({5: '  - app_key: "App,Key2"'}), (at(A, 5),), "app_key"),
    "app-key-colon": Case(yaml_with({5: '  - app_key: "App:Key2"'}), (at(A, 5),), "app_key"),
    "app-key-semicolon": Case(yaml_with({5: '  - app_key: "App;Key2"'}), (at(A, 5),), "app_key"),
    "app-key-control-char": Case(
        yaml_with({5: '  - app_key: "App\\x07Key2"'}), (at(A, 5),), "app_key"
    ),
    "app-key-tab": Case(yaml_with({5: '  - app_key: "App\\tKey2"'}), (at(A, 5),), "app_key"),
    "app-key-empty": Case(yaml_with({5: '  - app_key: ""'}), (at(A, 5),), "app_key"),
    "tenant-bad-character": Case(
        yaml_with({4: "    tenants: [engineering.Id, salesId]"}), (at(A, 4),), "tenant"
    ),
    "tenant-with-colon": Case(
        yaml_with({4: '    tenants: ["org:1", salesId]'}), (at(A, 4),), "tenant"
    ),
    "tenant-char-four-times": Case(
        yaml_with({4: "    tenants: [engineeringId, saaaales]"}), (at(A, 4),), "tenant"
    ),
    "tenant-too-short": Case(yaml_with({4: "    tenants: [e, salesId]"}), (at(A, 4),), "tenant"),
    "tenant-too-long": Case(
        yaml_with({4: f"    tenants: [{TOO_LONG_TENANT}, salesId]"}), (at(A, 4),), "tenant"
    ),
    "duplicate-tenant": Case(
        yaml_with({4: "    tenants: [salesId, salesId]"}), (at(A, 4),), "tenant"
    ),
    "empty-tenants": Case(yaml_with({4: "    tenants: []"}), (at(A, 4),), "tenants"),
    "bad-cidr-prefix-length": Case(
        yaml_with({10: "  cidrs: [127.0.0.2/33]"}), (at(A, 10),), "cidr"
    ),
    "bad-cidr-text": Case(yaml_with({10: "  cidrs: [chime.aws]"}), (at(A, 10),), "cidr"),
    "bad-ipv6-cidr": Case(yaml_with({10: "  cidrs: ['::1/129']"}), (at(A, 10),), "cidr"),
    # Destinations are matched in IPv4 form: a mapped range would silently pass Chime through.
    "ipv4-mapped-cidr": Case(
        yaml_with({10: "  cidrs: ['::ffff:127.0.0.2/128']"}),
        (at(A, 10),),
        "cidr",
        also=(r"write it as IPv4 \(127\.0\.0\.2/32\)",),
    ),
    "missing-ranges-file": Case(
        yaml_with({7: "  ip_ranges: no-such-ranges.json"}), (at(A, 7),), "ip_ranges"
    ),
    "malformed-ranges-json": Case(
        yaml_with({}),
        (at(R), at(A, 7)),
        None,
        ranges='{\n  "syncToken": "1",\n  "prefixes": [\n    {"ip_prefix": "127.0.0.2/32",\n',
    ),
    "ranges-bad-prefix": Case(
        yaml_with({}),
        (at(R), at(A, 7)),
        None,
        ranges=json.dumps(ranges_document(["999.77.128.0/18"]), indent=2),
    ),
    "ranges-no-prefix-for-services": Case(
        yaml_with({}),
        (at(R), at(A, 7, 8)),
        r"CHIME_MEETINGS|services",
        ranges=json.dumps(
            ranges_document([Prefix("127.0.0.2/32", service="EC2"), Prefix("::1/128", "AMAZON")])
        ),
    ),
    "ranges-no-prefix-for-regions": Case(
        yaml_with({9: "  regions: [us-east-1]"}), (at(R), at(A, 7, 8, 9)), r"region"
    ),
    # The message names the header, the limit and the size (what to trim).
    "app-keys-header-too-long": Case(
        _many_apps(300, 40), (at(A),), "X-Amzn-Chime-App-Keys", also=(r"8,?192",), oversize=True
    ),
    "tenants-header-too-long": Case(
        _many_tenants(40, 250), (at(A),), "X-Amzn-Chime-Tenants", also=(r"8,?192",), oversize=True
    ),
}


@dataclass(frozen=True)
class Outcome:
    folder: Path
    result: FailedStart


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory, mitm_confdir: Path) -> dict[str, Outcome]:
    """Run every case (three mitmdumps at a time) and keep what each one printed."""
    root = tmp_path_factory.mktemp("startup")

    def run(name: str) -> Outcome:
        case = CASES[name]
        folder = root / name
        write_text(folder / ALLOWLIST, case.allowlist)
        write_text(folder / RANGES, case.ranges)
        result = run_expect_failure(
            confdir=mitm_confdir, allowlist=folder / ALLOWLIST, cwd=root, timeout=30
        )
        return Outcome(folder, result)

    _warm_up_confdir(mitm_confdir, root)
    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(CASES, pool.map(run, CASES), strict=True))


def _warm_up_confdir(confdir: Path, root: Path) -> None:
    """Let one mitmdump create the CA in the shared confdir before several start at once."""
    if not (confdir / "mitmproxy-ca.pem").exists():
        run_expect_failure(
            confdir=confdir, script=None, cwd=root, grace_after_listening=0.1, timeout=30
        )


def named_locations(output: str, path: Path) -> list[int]:
    """The line numbers of every ``PATH:LINE:`` in ``output``."""
    return [int(m) for m in re.findall(rf"{re.escape(str(path))}:(\d+):", output)]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_file_refused_at_start(outcomes: dict[str, Outcome], name: str) -> None:
    case, outcome = CASES[name], outcomes[name]
    rc, output = outcome.result
    context = f"\n--- mitmdump output ---\n{output}"
    assert rc is not None, f"mitmdump kept running with a bad file{context}"
    assert rc != 0, f"mitmdump exited 0{context}"
    assert_clean_start_up_failure(output)
    found = {w.file: named_locations(output, outcome.folder / w.file) for w in case.where}
    assert any(
        found[w.file] and (w.lines is None or set(found[w.file]) & w.lines) for w in case.where
    ), f"expected PATH:LINE: for one of {case.where}, found {found}{context}"
    for wanted in (case.field, *case.also):
        if wanted is not None:
            assert re.search(wanted, output, re.IGNORECASE), (
                f"{wanted!r} not in the output{context}"
            )
    if case.oversize:
        sizes = [int(n.replace(",", "")) for n in re.findall(r"(\d[\d,]*)[ -]bytes?", output)]
        assert any(size > 8192 for size in sizes), f"no size over 8,192 bytes stated{context}"


def test_the_base_file_is_valid(tmp_path: Path, proxy_launcher: ProxyLauncher) -> None:
    """The cases above each break one thing of a file that, unbroken, starts fine."""
    write_text(tmp_path / RANGES, GOOD_RANGES)
    allowlist = write_text(tmp_path / ALLOWLIST, yaml_with({}))
    proxy = proxy_launcher.start(allowlist)
    proxy.wait_for_log(rf"allowlist loaded from {re.escape(str(allowlist))}", timeout=5)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(lambda tmp: str(tmp / "no-such-allowlist.yaml"), id="missing-file"),
        pytest.param(lambda tmp: str(tmp), id="a-directory"),
        pytest.param(lambda tmp: "", id="empty-value"),
    ],
)
def test_unusable_allowlist_option_refused(
    tmp_path: Path, mitm_confdir: Path, value: Callable[[Path], str]
) -> None:
    option = value(tmp_path)
    rc, output = run_expect_failure(confdir=mitm_confdir, allowlist=option, cwd=tmp_path)
    assert rc is not None and rc != 0, f"exit code {rc}\n{output}"
    if option:
        assert option in output, output


def test_empty_allowlist_file_refused(tmp_path: Path, mitm_confdir: Path) -> None:
    allowlist = write_text(tmp_path / ALLOWLIST, "")
    rc, output = run_expect_failure(confdir=mitm_confdir, allowlist=allowlist, cwd=tmp_path)
    assert rc is not None and rc != 0, f"exit code {rc}\n{output}"
    assert str(allowlist) in output, output


def test_default_allowlist_from_repo_root(proxy_launcher: ProxyLauncher) -> None:
    """``mitmdump -s addon/chime_headers.py`` from the repo root reads config/allowlist.yaml."""
    proxy = proxy_launcher.start(None, cwd=REPO_ROOT)
    proxy.wait_for_log(r"allowlist loaded from \S*config/allowlist\.yaml", timeout=5)
