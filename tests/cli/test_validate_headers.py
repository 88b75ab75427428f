"""`chime-egress validate` and `chime-egress headers`, run as installed."""

import json
import os
import subprocess
import sys

import pytest

from chime_egress.errors import ConfigError
from chime_egress.policy.compiled import load_policy

from .support import COMMAND, ROOT, SHIPPED_RANGES, run, write_allowlist


def test_the_command_is_installed_and_documents_its_exit_codes():
    assert COMMAND.exists(), f"{COMMAND} missing: pip install -e . first"
    result = run("--help")
    assert result.returncode == 0
    for line in ("0  success", "1  invalid", "2  usage error", "3  the answer is no"):
        assert line in result.stdout
    for command in ("validate", "headers", "explain", "ranges"):
        assert command in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["validate"],
        ["headers"],
        ["explain"],
        ["ranges", "lookup"],
        ["ranges", "update"],
    ],
)
def test_every_subcommand_has_help_with_exit_codes(args):
    result = run(*args, "--help")
    assert result.returncode == 0
    assert "exit codes:" in result.stdout
    assert "2  usage error" in result.stdout


@pytest.mark.parametrize(
    "args",
    [[], ["nonsense"], ["ranges"], ["validate", "--format", "xml"], ["ranges", "update"]],
)
def test_usage_errors_exit_2_on_stderr(args):
    result = run(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "usage: chime-egress" in result.stderr


def test_the_command_line_does_not_import_mitmproxy():
    code = "import sys, chime_egress.cli; print('mitmproxy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False"


# validate


def test_validate_the_shipped_allowlist():
    result = run("validate")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    # The same words as the proxy's start-up log line.
    assert lines[0] == (
        "config/allowlist.yaml: valid: 2 apps, 1 tenant, 2 prefixes, ranges syncToken 1787411825"
        "; mode observe"  # shipped so, for a first run that changes nobody's meetings
    )
    assert "  Example meeting app (ExampleAppKey1): tenants exampleOrgId" in lines
    assert "  ExampleAppKey2: any tenant" in lines
    assert any(line.startswith("  99.77.128.0/18") and "CHIME_MEETINGS" in line for line in lines)
    assert any(line.startswith("  2600:f0f0:4100::/40") for line in lines)
    assert "config/chime-ip-ranges.json (syncToken 1787411825" in result.stdout
    assert "  X-Amzn-Chime-App-Keys: 52 bytes" in lines
    assert "  X-Amzn-Chime-Tenants: 49 bytes" in lines


BAD = """\
    apps:
      - app_key: AppKey1
        tenants: [orgId, x]
      - app_key: AppKey1
      - app_key: AppKey2
        tenant: [salesId]
    destinations:
      cidrs: [10.1.2.3/8]
    """


def test_validate_reports_every_problem_with_file_line_and_field(tmp_path):
    path = write_allowlist(tmp_path, BAD)
    result = run("validate", path)
    assert result.returncode == 1
    assert result.stdout == ""
    errors = result.stderr.splitlines()
    assert errors[0] == f"{path}: invalid configuration; the proxy would refuse it (4 problems):"
    assert f"{path}:3: apps[0].tenants[1]: 'x' is 1 character long" in result.stderr
    assert f"{path}:4: apps[1].app_key: 'AppKey1' is already listed on line 2" in result.stderr
    assert f"{path}:6: apps[2].tenant: unknown key 'tenant'; did you mean 'tenants'?" in (
        result.stderr
    )
    assert f"{path}:8: destinations.cidrs[0]: '10.1.2.3/8' is not a CIDR" in result.stderr


def test_validate_messages_are_the_proxys_word_for_word(tmp_path):
    path = write_allowlist(tmp_path, BAD)
    with pytest.raises(ConfigError) as raised:
        load_policy(path)  # what the addon calls at start and on every reload
    result = run("validate", path)
    assert result.stderr.splitlines()[1:] == str(raised.value).splitlines()


def test_validate_a_missing_ranges_file_names_the_allowlist_line(tmp_path):
    path = write_allowlist(
        tmp_path, "apps: [{app_key: K}]\ndestinations:\n  ip_ranges: nowhere.json\n"
    )
    result = run("validate", path)
    assert result.returncode == 1
    assert f"{path}:3: destinations.ip_ranges: " in result.stderr
    assert "ranges file not found" in result.stderr


def test_validate_a_missing_allowlist(tmp_path):
    result = run("validate", tmp_path / "absent.yaml")
    assert result.returncode == 1
    assert f"{tmp_path / 'absent.yaml'}: allowlist file not found" in result.stderr


def test_validate_an_oversized_header_says_how_much_to_trim(tmp_path):
    tenants = ", ".join(f"tenant{i:05d}" for i in range(800))
    path = write_allowlist(
        tmp_path, f"apps:\n  - app_key: K\n    tenants: [{tenants}]\ndestinations: {{cidrs: []}}\n"
    )
    result = run("validate", path)
    assert result.returncode == 1
    assert f"{path}:1: apps: the X-Amzn-Chime-Tenants header line would be" in result.stderr
    assert "over the 8,192-byte limit" in result.stderr


def test_validate_json_on_success():
    result = run("validate", "--format", "json")
    assert result.returncode == 0
    document = json.loads(result.stdout)
    assert document["valid"] is True
    assert document["problems"] == []
    assert document["summary"] == (
        "2 apps, 1 tenant, 2 prefixes, ranges syncToken 1787411825; mode observe"
    )
    assert document["mode"] == "observe"
    assert [app["app_key"] for app in document["apps"]] == ["ExampleAppKey1", "ExampleAppKey2"]
    assert document["apps"][0]["tenants"] == ["exampleOrgId"]
    assert document["tenants"] == 1
    assert [p["prefix"] for p in document["prefixes"]] == ["99.77.128.0/18", "2600:f0f0:4100::/40"]
    assert document["ranges"]["syncToken"] == "1787411825"
    assert document["headers"] == [
        {
            "name": "X-Amzn-Chime-App-Keys",
            "value": "ExampleAppKey1,ExampleAppKey2",
            "bytes": 52,
        },
        {"name": "X-Amzn-Chime-Tenants", "value": "ExampleAppKey1:exampleOrgId", "bytes": 49},
    ]
    assert document["max_header_line_bytes"] == 8192


def test_validate_json_on_failure(tmp_path):
    path = write_allowlist(tmp_path, BAD)
    result = run("validate", "--format", "json", path)
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["valid"] is False
    first = document["problems"][0]
    assert (first["path"], first["line"], first["field"]) == (str(path), 3, "apps[0].tenants[1]")
    assert first["text"] == f"{path}:3: apps[0].tenants[1]: {first['message']}"
    assert len(document["problems"]) == 4
    assert first["text"] in result.stderr  # humans reading the CI log see them too


def test_validate_cidrs_only_allowlist(tmp_path):
    path = write_allowlist(
        tmp_path, "apps: [{app_key: K}]\ndestinations: {cidrs: [192.0.2.0/24]}\n"
    )
    result = run("validate", path)
    assert result.returncode == 0
    assert "192.0.2.0/24  (destinations.cidrs)" in result.stdout
    assert "X-Amzn-Chime-Tenants" not in result.stdout  # not sent: no app has tenants


# headers


@pytest.mark.parametrize(
    ("apps", "expected"),
    [
        (
            "[{app_key: AppKey, tenants: [orgId]}]",
            "X-Amzn-Chime-App-Keys: AppKey\nX-Amzn-Chime-Tenants: AppKey:orgId\n",
        ),
        (
            "[{app_key: AppKey, tenants: [engineeringId, salesId]}]",
            "X-Amzn-Chime-App-Keys: AppKey\nX-Amzn-Chime-Tenants: AppKey:engineeringId,salesId\n",
        ),
        (
            "[{app_key: AppKey1, tenants: [orgId]}, {app_key: AppKey2}]",
            "X-Amzn-Chime-App-Keys: AppKey1,AppKey2\nX-Amzn-Chime-Tenants: AppKey1:orgId\n",
        ),
    ],
    ids=["one-app-one-tenant", "one-app-two-tenants", "two-apps-one-limited"],
)
def test_headers_reproduce_the_aws_guide_examples_byte_for_byte(tmp_path, apps, expected):
    path = write_allowlist(tmp_path, f"apps: {apps}\ndestinations: {{cidrs: [192.0.2.0/24]}}\n")
    result = run("headers", path)
    assert result.returncode == 0
    assert result.stdout == expected
    assert result.stderr == ""


def test_headers_of_the_shipped_allowlist_are_none_it_observes():
    result = run("headers")
    assert result.returncode == 0
    assert result.stdout == ""
    assert "observe mode: the proxy adds no headers" in result.stderr


def test_headers_of_the_shipped_allowlist_once_enforced_are_the_proxys(tmp_path):
    text = (ROOT / "config" / "allowlist.yaml").read_text(encoding="utf-8")
    assert text.count("\nmode: observe\n") == 1
    enforced = tmp_path / "allowlist.yaml"
    enforced.write_text(text.replace("\nmode: observe\n", "\nmode: enforce\n"), encoding="utf-8")
    (tmp_path / "chime-ip-ranges.json").write_bytes(SHIPPED_RANGES.read_bytes())
    result = run("headers", enforced)
    assert result.returncode == 0
    policy = load_policy(enforced)
    assert result.stdout == "".join(f"{line}\n" for line in policy.headers.lines())
    assert result.stdout.startswith("X-Amzn-Chime-App-Keys: ExampleAppKey1,ExampleAppKey2\n")


def test_headers_without_tenants_sends_one_line(tmp_path):
    path = write_allowlist(
        tmp_path, "apps: [{app_key: A}, {app_key: B}]\ndestinations: {cidrs: []}\n"
    )
    result = run("headers", path)
    assert result.stdout == "X-Amzn-Chime-App-Keys: A,B\n"


def test_headers_of_an_invalid_allowlist_prints_no_header(tmp_path):
    path = write_allowlist(tmp_path, BAD)
    result = run("headers", path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"{path}:3: apps[0].tenants[1]:" in result.stderr


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    # As with `chime-egress validate | head -1`: the pipe's read end is already closed.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [str(COMMAND), "validate"],
            cwd=ROOT,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
