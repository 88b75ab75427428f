"""`chime-egress ranges lookup` and `chime-egress ranges update`, run as installed."""

import contextlib
import functools
import http.server
import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chime_egress.policy.compiled import load_policy
from chime_egress.policy.ranges import load_aws_ranges
from tests.support.config import Prefix, write_ranges
from tests.support.data import AWS_RANGES as AWS
from tests.support.data import HISTORY_NEW, HISTORY_OLD
from tests.support.tls import TestCA

from .support import (
    DATA,
    SHIPPED_RANGES,
    run,
    serving,
    write_allowlist,
)

# lookup


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("99.77.130.1", "99.77.130.1  99.77.128.0/18  CHIME_MEETINGS  GLOBAL\n"),
        ("99.77.188.10", "99.77.188.10  99.77.128.0/18  CHIME_MEETINGS  GLOBAL\n"),
        (
            "::ffff:99.77.130.1",
            "::ffff:99.77.130.1 (IPv4-mapped 99.77.130.1)  99.77.128.0/18  "
            "CHIME_MEETINGS  GLOBAL\n",
        ),
        ("2600:f0f0:4100::1", "2600:f0f0:4100::1  2600:f0f0:4100::/40  CHIME_MEETINGS  GLOBAL\n"),
        (
            "[2600:F0F0:41FF::2]",
            "[2600:F0F0:41FF::2] (2600:f0f0:41ff::2)  2600:f0f0:4100::/40  "
            "CHIME_MEETINGS  GLOBAL\n",
        ),
    ],
)
def test_lookup_chime_addresses(address, expected):
    result = run("ranges", "lookup", address)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected


@pytest.mark.parametrize(
    "address", ["99.77.127.255", "99.77.192.0", "2600:f0f0:4200::1", "::ffff:8.8.8.8"]
)
def test_lookup_outside_is_not_a_chime_destination_exit_3(address):
    result = run("ranges", "lookup", address)
    assert result.returncode == 3
    assert result.stdout.endswith("  not a Chime destination\n")


def test_lookup_several_addresses_in_aligned_columns():
    result = run("ranges", "lookup", "99.77.130.1", "8.8.8.8", "2600:f0f0:4100::1")
    assert result.returncode == 3  # one is outside
    assert result.stdout == (
        "99.77.130.1        99.77.128.0/18       CHIME_MEETINGS  GLOBAL\n"
        "8.8.8.8            not a Chime destination\n"
        "2600:f0f0:4100::1  2600:f0f0:4100::/40  CHIME_MEETINGS  GLOBAL\n"
    )


def test_lookup_a_name_that_does_not_resolve_exit_1():
    # .invalid never resolves (RFC 6761): the name is reported, the addresses still judged.
    result = run("ranges", "lookup", "meet.chime.invalid", "99.77.130.1")
    assert result.returncode == 1
    assert result.stderr == (
        "meet.chime.invalid: cannot resolve this host name (nor is it an IP address)\n"
    )
    assert result.stdout == "99.77.130.1  99.77.128.0/18  CHIME_MEETINGS  GLOBAL\n"


def test_lookup_resolves_a_host_name_and_judges_each_address(tmp_path):
    # localhost resolves from /etc/hosts, without any DNS server: to 127.0.0.1 (and perhaps ::1).
    path = write_allowlist(tmp_path, "apps: [{app_key: K}]\ndestinations: {cidrs: [127.0.0.0/8]}\n")
    result = run("ranges", "lookup", "localhost", "--config", path)
    rows = result.stdout.splitlines()
    assert "localhost -> 127.0.0.1  127.0.0.0/8  (destinations.cidrs)" in rows
    expected = {"localhost -> 127.0.0.1", "localhost -> ::1"}
    assert all(row.split("  ")[0] in expected for row in rows), rows
    # ::1, where the machine lists it for localhost, is not in the prefixes: the answer is no.
    assert result.returncode == (3 if any("::1" in row for row in rows) else 0)
    document = json.loads(run("ranges", "lookup", "localhost", path, "--format", "json").stdout)
    assert {"query": "localhost", "host": "localhost", "address": "127.0.0.1"}.items() <= (
        document[0].items()
    )
    assert document[0]["chime"] is True and document[0]["prefix"] == "127.0.0.0/8"


def test_lookup_usage_line_is_readable():
    result = run("ranges", "lookup", "--help")
    assert result.stdout.startswith(
        "usage: chime-egress ranges lookup [-h] [--format {text,json}] [--config CONFIG]\n"
        "                                  ADDRESS|HOST [ADDRESS|HOST ...] [CONFIG]\n"
    )
    # The garbled form argparse makes of a nargs="+" positional with such a metavar.
    assert "[CONFIG] [ADDRESS" not in result.stdout


def test_lookup_with_a_config_as_last_argument(tmp_path):
    path = write_allowlist(
        tmp_path, "apps: [{app_key: K}]\ndestinations: {cidrs: [192.0.2.0/24, '2001:db8::/32']}\n"
    )
    result = run("ranges", "lookup", "192.0.2.9", "2001:db8::1", "99.77.130.1", path)
    assert result.returncode == 3
    assert result.stdout.splitlines() == [
        "192.0.2.9    192.0.2.0/24   (destinations.cidrs)",
        "2001:db8::1  2001:db8::/32  (destinations.cidrs)",
        "99.77.130.1  not a Chime destination",
    ]


def test_lookup_with_an_invalid_config(tmp_path):
    path = write_allowlist(tmp_path, "apps: []\ndestinations: {cidrs: []}\n")
    result = run("ranges", "lookup", "99.77.130.1", path)
    assert result.returncode == 1
    assert f"{path}:1: apps: must be a non-empty list" in result.stderr


# update


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """An allowlist whose snapshot, ranges.json, does not exist yet."""
    return write_allowlist(
        tmp_path, "apps: [{app_key: K}]\ndestinations: {ip_ranges: ranges.json}\n"
    )


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_update_reproduces_the_shipped_snapshot_byte_for_byte(tmp_path):
    output = tmp_path / "chime-ip-ranges.json"
    result = run("ranges", "update", "--source", AWS, "--output", output)
    assert result.returncode == 0, result.stderr
    assert output.read_bytes() == SHIPPED_RANGES.read_bytes()
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"source: {AWS}: syncToken 1787411825 (2026-08-22-15-17-05), 2 prefixes for services "
        "['CHIME_MEETINGS']"
    )
    assert lines[1] == f"current: {output}: none"
    assert "  + 99.77.128.0/18       CHIME_MEETINGS  GLOBAL" in lines
    assert "  + 2600:f0f0:4100::/40  CHIME_MEETINGS  GLOBAL" in lines
    assert "prefixes: 2 added, 0 removed, 0 unchanged" in lines
    assert lines[-1] == f"wrote {output}"
    assert leftovers(tmp_path) == []


def test_update_with_nothing_new_writes_nothing(tmp_path):
    output = tmp_path / "r.json"
    output.write_bytes(SHIPPED_RANGES.read_bytes())
    before = output.stat()
    result = run("ranges", "update", "--source", AWS, "--output", output)
    assert result.returncode == 0
    assert "prefixes: 0 added, 0 removed, 2 unchanged" in result.stdout
    assert result.stdout.endswith("is already up to date; nothing written\n")
    after = output.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_update_writes_the_configured_snapshot_by_default(config):
    result = run("ranges", "update", "--source", HISTORY_NEW, config)
    assert result.returncode == 0, result.stderr
    snapshot = load_aws_ranges(config.parent / "ranges.json")
    assert snapshot.sync_token == "1592576952"
    assert snapshot.create_date == "2020-06-19-14-29-12"
    assert [(str(p.network), p.region) for p in snapshot.prefixes] == [("99.77.128.0/18", "GLOBAL")]
    assert "  + 99.77.128.0/18  CHIME_MEETINGS  GLOBAL" in result.stdout
    # ... and the proxy loads the result.
    summary = load_policy(config).summary()
    assert summary == "1 app, 0 tenants, 1 prefix, ranges syncToken 1592576952"


def test_update_forward_in_time_prints_added_and_removed(config):
    # The real change of that day: three regional /24s became one GLOBAL /18. The regions
    # change, so it is written only once an admin has looked (--force).
    assert run("ranges", "update", "--source", HISTORY_OLD, config).returncode == 0
    refused = run("ranges", "update", "--source", HISTORY_NEW, config)
    assert refused.returncode == 1
    assert (
        f"{HISTORY_NEW}: the services and regions change (new: CHIME_MEETINGS GLOBAL; gone: "
        "CHIME_MEETINGS eu-west-1, CHIME_MEETINGS eu-west-3, CHIME_MEETINGS us-east-2)"
    ) in refused.stderr
    assert "wrote" not in refused.stdout
    result = run("ranges", "update", "--source", HISTORY_NEW, "--force", config)
    assert result.returncode == 0, result.stderr
    assert "warning: " in result.stderr and "(--force)" in result.stderr
    out = result.stdout
    assert f"current: {config.parent / 'ranges.json'}: syncToken 1592575753" in out
    assert "  + 99.77.128.0/18  CHIME_MEETINGS  GLOBAL" in out
    assert "  - 99.77.131.0/24  CHIME_MEETINGS  us-east-2" in out
    assert "  - 99.77.133.0/24  CHIME_MEETINGS  eu-west-1" in out
    assert "  - 99.77.135.0/24  CHIME_MEETINGS  eu-west-3" in out
    assert "prefixes: 1 added, 3 removed, 0 unchanged" in out


def test_update_as_json_says_what_changed_and_the_outcome(config):
    first = run("ranges", "update", "--source", HISTORY_OLD, "--format", "json", config)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)  # the one object, nothing else on stdout
    assert report["outcome"] == "written" and report["current"] is None
    assert report["source"]["sync_token"] == "1592575753"
    assert report["removed"] == [] and report["unchanged"] == 0
    assert {"prefix": "99.77.131.0/24", "service": "CHIME_MEETINGS", "region": "us-east-2"} in (
        report["added"]
    )
    again = json.loads(
        run("ranges", "update", "--source", HISTORY_OLD, "--format", "json", config).stdout
    )
    assert again["outcome"] == "up_to_date" and again["added"] == again["removed"] == []
    refused = run("ranges", "update", "--source", HISTORY_NEW, "--format", "json", config)
    assert refused.returncode == 1
    report = json.loads(refused.stdout)
    assert report["outcome"] == "refused" and "--force" in report["reason"]
    assert report["current"]["sync_token"] == "1592575753"
    assert [change["prefix"] for change in report["added"]] == ["99.77.128.0/18"]
    assert len(report["removed"]) == 3 and len(report["concerns"]) == 1
    assert "refused; nothing written" in refused.stderr


def test_update_refuses_an_older_sync_token_and_writes_nothing(config):
    snapshot = config.parent / "ranges.json"
    assert run("ranges", "update", "--source", HISTORY_NEW, config).returncode == 0
    before_bytes, before = snapshot.read_bytes(), snapshot.stat()
    result = run("ranges", "update", "--source", HISTORY_OLD, config)
    assert result.returncode == 1
    assert (
        f"{HISTORY_OLD}: syncToken 1592575753 (2020-06-19-14-09-13) is older than the current "
        "snapshot's 1592576952 (2020-06-19-14-29-12)\n"
    ) in result.stderr
    assert result.stderr.endswith(
        "--force writes it anyway, once you have checked\nrefused; nothing written\n"
    )
    # What it would have changed is still shown.
    assert "  - 99.77.128.0/18  CHIME_MEETINGS  GLOBAL" in result.stdout
    assert snapshot.read_bytes() == before_bytes
    assert (snapshot.stat().st_ino, snapshot.stat().st_mtime_ns) == (
        before.st_ino,
        before.st_mtime_ns,
    )
    assert leftovers(config.parent) == []


def test_update_force_replaces_with_an_older_sync_token(config):
    assert run("ranges", "update", "--source", HISTORY_NEW, config).returncode == 0
    result = run("ranges", "update", "--source", HISTORY_OLD, "--force", config)
    assert result.returncode == 0, result.stderr
    assert "warning: " in result.stderr
    assert "replacing it (--force)" in result.stderr
    snapshot = load_aws_ranges(config.parent / "ranges.json")
    assert snapshot.sync_token == "1592575753"
    assert [(str(p.network), p.region) for p in snapshot.prefixes] == [
        ("99.77.131.0/24", "us-east-2"),
        ("99.77.133.0/24", "eu-west-1"),
        ("99.77.135.0/24", "eu-west-3"),
    ]
    assert "prefixes: 3 added, 1 removed, 0 unchanged" in result.stdout


def test_update_keeps_each_entrys_fields_as_aws_wrote_them(config):
    assert run("ranges", "update", "--source", HISTORY_OLD, config).returncode == 0
    written = json.loads((config.parent / "ranges.json").read_text())
    assert list(written) == ["syncToken", "createDate", "prefixes", "ipv6_prefixes"]
    assert written["prefixes"][0] == {
        "ip_prefix": "99.77.131.0/24",
        "region": "us-east-2",
        "service": "CHIME_MEETINGS",
        "network_border_group": "us-east-2",
    }
    assert written["ipv6_prefixes"] == []
    assert (config.parent / "ranges.json").read_text().endswith("]\n}\n")


def test_update_filters_by_the_configured_regions(tmp_path):
    config = write_allowlist(
        tmp_path, "apps: [{app_key: K}]\ndestinations: {ip_ranges: r.json, regions: [eu-west-1]}\n"
    )
    result = run("ranges", "update", "--source", HISTORY_OLD, config)
    assert result.returncode == 0, result.stderr
    assert "1 prefix for services ['CHIME_MEETINGS'] in regions ['eu-west-1']" in result.stdout
    snapshot = load_aws_ranges(tmp_path / "r.json", regions=())
    assert [str(p.network) for p in snapshot.prefixes] == ["99.77.133.0/24"]
    # The newer file has only a GLOBAL prefix: nothing in eu-west-1, so nothing is replaced.
    result = run("ranges", "update", "--source", HISTORY_NEW, config)
    assert result.returncode == 1
    assert (
        f"{HISTORY_NEW}: has no prefix for services ['CHIME_MEETINGS'] in regions ['eu-west-1']"
        in result.stderr
    )
    assert [str(p.network) for p in load_aws_ranges(tmp_path / "r.json").prefixes] == [
        "99.77.133.0/24"
    ]


def test_update_refuses_a_source_without_the_configured_service(tmp_path):
    config = write_allowlist(
        tmp_path, "apps: [{app_key: K}]\ndestinations: {ip_ranges: r.json, services: [NOPE]}\n"
    )
    result = run("ranges", "update", "--source", HISTORY_NEW, config)
    assert result.returncode == 1
    assert "has no prefix for services ['NOPE']" in result.stderr
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "not valid JSON"),
        ('{"syncToken": "1592576952", "prefixes": [{"ip_prefix": "99.7', "not valid JSON"),
        ("[]", "expected a JSON object"),
        ('{"syncToken": "1"}', "prefixes: missing: this is not an AWS ip-ranges file"),
        (
            '{"syncToken": "x", "prefixes": []}',
            "syncToken: missing, or not a number in a string",
        ),
        (
            '{"syncToken": "1", "prefixes": [{"ip_prefix": "99.77.128.1/18", "region": "GLOBAL",'
            ' "service": "CHIME_MEETINGS"}]}',
            "prefixes[0].ip_prefix: 99.77.128.1/18 has host bits set",
        ),
        (
            '{"syncToken": "9999999999", "createDate": "x", "prefixes": [], "ipv6_prefixes": []}',
            "lists no prefixes at all",
        ),
    ],
    ids=[
        "empty-file",
        "truncated",
        "not-an-object",
        "no-prefixes-key",
        "bad-token",
        "bad-prefix",
        "no-entries",
    ],
)
def test_update_refuses_a_malformed_or_empty_source(config, content, message):
    source = config.parent / "source.json"
    source.write_text(content)
    result = run("ranges", "update", "--source", source, config)
    assert result.returncode == 1
    assert message in result.stderr
    assert result.stderr.endswith("refused; nothing written\n")
    assert not (config.parent / "ranges.json").exists()
    assert leftovers(config.parent) == []


def test_update_refuses_a_missing_source(config):
    result = run("ranges", "update", "--source", config.parent / "absent.json", config)
    assert result.returncode == 1
    assert "absent.json: cannot read: No such file or directory" in result.stderr


def test_update_refuses_to_guess_the_age_of_an_unreadable_snapshot(config):
    snapshot = config.parent / "ranges.json"
    snapshot.write_text("{ half a fi")
    result = run("ranges", "update", "--source", HISTORY_NEW, config)
    assert result.returncode == 1
    assert "cannot be read, so its age is unknown; --force replaces it anyway" in result.stderr
    assert snapshot.read_text() == "{ half a fi"
    result = run("ranges", "update", "--source", HISTORY_NEW, "--force", config)
    assert result.returncode == 0, result.stderr
    assert load_aws_ranges(snapshot).sync_token == "1592576952"


def test_update_keeps_the_snapshots_permissions(config):
    snapshot = config.parent / "ranges.json"
    assert run("ranges", "update", "--source", HISTORY_OLD, config).returncode == 0
    umask = os.umask(0)
    os.umask(umask)
    assert snapshot.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600
    snapshot.chmod(0o640)
    assert run("ranges", "update", "--source", HISTORY_NEW, "--force", config).returncode == 0
    assert snapshot.stat().st_mode & 0o777 == 0o640


def test_update_through_a_symlink_replaces_its_target(config):
    target = config.parent / "snapshots" / "chime.json"
    target.parent.mkdir()
    (config.parent / "ranges.json").symlink_to(target)
    result = run("ranges", "update", "--source", HISTORY_NEW, config)
    assert result.returncode == 0, result.stderr
    assert (config.parent / "ranges.json").is_symlink()
    assert load_aws_ranges(target).sync_token == "1592576952"
    assert leftovers(target.parent) == []


def test_update_of_an_invalid_allowlist_is_refused(tmp_path):
    config = write_allowlist(tmp_path, "apps: [{app_key: K, tenants: []}]\ndestinations: {}\n")
    result = run("ranges", "update", "--source", HISTORY_NEW, config)
    assert result.returncode == 1
    assert f"{config}: invalid configuration; fix it first" in result.stderr
    assert f"{config}:1: apps[0].tenants: is empty" in result.stderr


def test_update_needs_an_output_when_the_allowlist_names_no_ranges_file(tmp_path):
    config = write_allowlist(tmp_path, "apps: [{app_key: K}]\ndestinations: {cidrs: []}\n")
    result = run("ranges", "update", "--source", HISTORY_NEW, config)
    assert result.returncode == 1
    assert "names no destinations.ip_ranges; give --output PATH" in result.stderr


# update from a URL, against a server on the loopback address


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def data_server() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 (only) serving the unpacked tests/data; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(DATA))
    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)) as url:
        yield url


def test_update_from_a_url(tmp_path, data_server):
    output = tmp_path / "chime-ip-ranges.json"
    url = f"{data_server}/aws-ip-ranges.json"
    result = run("ranges", "update", "--source", url, "--output", output)
    assert result.returncode == 0, result.stderr
    assert output.read_bytes() == SHIPPED_RANGES.read_bytes()
    assert result.stdout.startswith(f"source: {url}: syncToken 1787411825")


def test_update_from_a_url_refuses_an_older_file(config, data_server):
    assert run("ranges", "update", "--source", HISTORY_NEW, config).returncode == 0
    url = f"{data_server}/history/{HISTORY_OLD.name}"
    result = run("ranges", "update", "--source", url, config)
    assert result.returncode == 1
    assert "is older than the current snapshot's 1592576952" in result.stderr


def test_update_from_a_url_that_answers_404(config, data_server):
    result = run("ranges", "update", "--source", f"{data_server}/absent.json", config)
    assert result.returncode == 1
    assert "absent.json: HTTP 404" in result.stderr
    assert not (config.parent / "ranges.json").exists()


def test_update_from_a_url_nobody_listens_on(config):
    with socket.socket() as probe:  # a loopback port that was just free
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run("ranges", "update", "--source", f"http://127.0.0.1:{port}/r.json", config)
    assert result.returncode == 1
    assert "cannot fetch" in result.stderr


def test_update_refuses_other_url_schemes(config):
    result = run("ranges", "update", "--source", f"file://{HISTORY_NEW}", config)
    assert result.returncode == 1
    assert "only http and https URLs, or a file path, are supported" in result.stderr


# issue 16: what no AWS file contains, redirects, deadlines, and clean errors


def update_from(config: Path, source: Path, *extra: str):
    return run("ranges", "update", "--source", source, *extra, config)


@pytest.mark.parametrize(
    ("prefixes", "message"),
    [
        (["0.0.0.0/0", "::/0"], "0.0.0.0/0 (CHIME_MEETINGS, GLOBAL) is wider than /8"),
        (["96.0.0.0/6"], "96.0.0.0/6 (CHIME_MEETINGS, GLOBAL) is wider than /8"),
        (["2600::/16"], "2600::/16 (CHIME_MEETINGS, GLOBAL) is wider than /24"),
        (["10.0.0.0/8"], "10.0.0.0/8 (CHIME_MEETINGS, GLOBAL) is not public unicast"),
        (["127.0.0.0/8"], "is not public unicast"),
        (["224.0.0.0/8"], "is not public unicast"),
        (["fd00::/32"], "is not public unicast"),
    ],
    ids=["everything", "wide-v4", "wide-v6", "private", "loopback", "multicast", "ula"],
)
def test_update_refuses_prefixes_no_aws_file_lists(config, prefixes, message):
    # 0.0.0.0/0 would make the proxy decrypt every connection and send the AppKeys everywhere.
    source = write_ranges(config.parent / "source.json", prefixes)
    result = update_from(config, source)
    assert result.returncode == 1
    assert message in result.stderr
    assert result.stderr.endswith(
        "--force writes it anyway, once you have checked\nrefused; nothing written\n"
    )
    assert not (config.parent / "ranges.json").exists()
    forced = update_from(config, source, "--force")
    assert forced.returncode == 0, forced.stderr
    assert f"warning: {source}: " in forced.stderr


def test_update_refuses_a_large_change_in_the_number_of_prefixes(config):
    first = write_ranges(config.parent / "first.json", ["99.77.128.0/18"], sync_token="100")
    assert update_from(config, first).returncode == 0
    many = [f"99.77.{i}.0/24" for i in range(6)]
    source = write_ranges(config.parent / "many.json", many, sync_token="200")
    result = update_from(config, source)
    assert result.returncode == 1
    assert "the number of prefixes goes from 1 to 6" in result.stderr
    few = write_ranges(config.parent / "few.json", many[:5], sync_token="200")
    assert update_from(config, few).returncode == 0, "a change of up to 4 is an ordinary one"


def test_update_refuses_a_new_service_or_region(tmp_path):
    config = write_allowlist(
        tmp_path,
        "apps: [{app_key: K}]\n"
        "destinations: {ip_ranges: r.json, services: [CHIME_MEETINGS, EC2]}\n",
    )
    first = write_ranges(tmp_path / "a.json", ["99.77.128.0/18"], sync_token="100")
    assert update_from(config, first).returncode == 0
    added = Prefix("99.77.200.0/24", service="EC2", region="us-east-1")
    source = write_ranges(tmp_path / "b.json", ["99.77.128.0/18", added], sync_token="200")
    result = update_from(config, source)
    assert result.returncode == 1
    assert "the services and regions change (new: EC2 us-east-1; gone: none)" in result.stderr


def test_update_refuses_other_prefixes_under_the_same_sync_token(config):
    first = write_ranges(config.parent / "a.json", ["99.77.128.0/18"], sync_token="100")
    assert update_from(config, first).returncode == 0
    same = write_ranges(config.parent / "b.json", ["99.77.0.0/18"], sync_token="100")
    result = update_from(config, same)
    assert result.returncode == 1
    assert "syncToken 100 is the current snapshot's, but the prefixes differ" in result.stderr
    assert [str(p.network) for p in load_aws_ranges(config.parent / "ranges.json").prefixes] == [
        "99.77.128.0/18"
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[" * 100_000, "nested too deeply to read"),
        ('{"syncToken": ' + "9" * 5000 + ', "prefixes": []}', "a number of more than 4,300 digits"),
        ('{"syncToken": "' + "9" * 5000 + '", "prefixes": []}', "syncToken: 5000 digits"),
    ],
    ids=["deep", "long-number", "long-token"],
)
def test_update_refuses_hostile_json_cleanly(config, content, message):
    source = config.parent / "source.json"
    source.write_text(content)
    result = update_from(config, source)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.endswith("refused; nothing written\n")


class _Redirect(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def redirecting(target: str, ca: TestCA | None = None) -> Iterator[str]:
    """A server on 127.0.0.1 answering every request with a redirect to `target`; its URL."""
    handler = type("Redirect", (_Redirect,), {"target": target})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if ca is None:
        with serving(server) as url:
            yield url
        return
    context = ca.issue(["127.0.0.1"]).server_context(alpn=())
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with serving(server, "https") as url:
        yield url


@pytest.fixture
def trusting_the_test_ca(test_ca: TestCA, monkeypatch: pytest.MonkeyPatch) -> TestCA:
    # The command's https requests trust the test CA (Python's ssl reads SSL_CERT_FILE).
    monkeypatch.setenv("SSL_CERT_FILE", str(test_ca.cert_path))
    return test_ca


@pytest.mark.parametrize("target", ["http://127.0.0.1:9/ip-ranges.json", "ftp://127.0.0.1/x"])
def test_update_follows_no_redirect_from_https_to_another_scheme(
    config, trusting_the_test_ca, target
):
    with redirecting(target, trusting_the_test_ca) as url:
        result = run("ranges", "update", "--source", f"{url}/ip-ranges.json", config)
    assert result.returncode == 1
    assert f"redirected (302) to {target!r}; only redirects to https are followed" in (
        result.stderr
    )
    assert not (config.parent / "ranges.json").exists()


def test_update_follows_a_redirect_to_https(config, trusting_the_test_ca):
    https_data = _https_data_server(trusting_the_test_ca)
    with https_data as data_url, redirecting(f"{data_url}/history/{HISTORY_NEW.name}") as url:
        result = run("ranges", "update", "--source", url + "/old-location.json", config)
    assert result.returncode == 0, result.stderr
    assert load_aws_ranges(config.parent / "ranges.json").sync_token == "1592576952"


@contextmanager
def _https_data_server(ca: TestCA) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(DATA))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ca.issue(["127.0.0.1"]).server_context(alpn=())
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with serving(server, "https") as url:
        yield url


def test_update_gives_up_on_a_source_that_trickles(config):
    # One byte a second: each read succeeds, so a socket timeout alone never fires.
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
            while not stop.wait(1):
                with contextlib.suppress(OSError):
                    connection.sendall(b" ")

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    try:
        result = run(
            "ranges",
            "update",
            "--source",
            f"http://127.0.0.1:{port}/r.json",
            "--timeout",
            "3",
            config,
        )
    finally:
        stop.set()
        listener.close()
    assert result.returncode == 1
    assert "not read completely within 3 s (--timeout)" in result.stderr
    assert not (config.parent / "ranges.json").exists()
