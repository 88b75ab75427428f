"""One convention across `chime-egress`: --format text|json, one way to give lists, usage errors
that name the subcommand, --config; and `diff`, which compares two allowlists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .support import SHIPPED_ALLOWLIST, run, write_allowlist

ALLOWLIST = """\
apps:
  - app_key: AppKey1
    tenants: [orgId]
  - app_key: AppKey2
destinations: {cidrs: [192.0.2.0/24]}
networks:
  - name: sales
    clients: [10.30.0.0/16]
    mode: observe
"""


@pytest.fixture
def allowlist(tmp_path: Path) -> Path:
    return write_allowlist(tmp_path, ALLOWLIST)


# --format json wherever a command prints a result

JSON_COMMANDS = {
    "validate": ["validate", "{config}"],
    "headers": ["headers", "{config}"],
    "explain-one": ["explain", "--app-key", "AppKey1", "--tenant", "orgId", "{config}"],
    "explain-all": ["explain", "{config}"],
    "ranges-lookup": ["ranges", "lookup", "192.0.2.1", "--config", "{config}"],
    "diff": ["diff", "{config}", "{config}"],
    "csp-check": ["csp", "check", "--policy", "default-src 'self'", "--features", "meetings"],
    "observed": ["observed", "{log}"],
}


@pytest.mark.parametrize("name", sorted(JSON_COMMANDS))
def test_every_result_has_a_json_format(tmp_path: Path, allowlist: Path, name: str) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text('{"event": "connection_observed", "sni": "a.chime.aws"}\n')
    args = [a.format(config=allowlist, log=log) for a in JSON_COMMANDS[name]]
    text = run(*args)
    result = run(*args, "--format", "json")
    assert result.returncode == text.returncode, result.stderr
    json.loads(result.stdout)  # one document, nothing else on stdout
    assert text.stdout != result.stdout


def test_headers_json_names_the_network_and_mode(allowlist: Path) -> None:
    document = json.loads(run("headers", "--format", "json", allowlist).stdout)
    assert document["network"]["name"] == "default" and document["mode"] == "enforce"
    assert document["headers"] == [
        {"name": "X-Amzn-Chime-App-Keys", "value": "AppKey1,AppKey2"},
        {"name": "X-Amzn-Chime-Tenants", "value": "AppKey1:orgId"},
    ]
    observed = json.loads(
        run("headers", "--client", "10.30.1.1", "--format", "json", allowlist).stdout
    )
    assert observed["network"]["name"] == "sales" and observed["network"]["line"] == 7
    assert (observed["mode"], observed["headers"]) == ("observe", [])


def test_explain_json_has_the_verdict_and_the_rules(allowlist: Path) -> None:
    result = run("explain", "--app-key", "AppKey1", "--tenant", "x1", "--format", "json", allowlist)
    assert result.returncode == 3  # 403, as in text
    document = json.loads(result.stdout)
    assert document["verdict"] == "403"
    assert [rule["code"] for rule in document["rules"]] == [
        "app-keys-listed",
        "tenants-other-tenants",
    ]
    assert document["headers"]["X-Amzn-Chime-Tenants"] == "AppKey1:orgId"
    malformed = run("explain", "--app-keys-header", "A,", "--app-key", "A", "--format", "json")
    assert malformed.returncode == 1
    assert json.loads(malformed.stdout)["verdict"] is None


def test_csp_check_keeps_its_old_json_spelling() -> None:
    args = ["csp", "check", "--policy", "connect-src 'self'", "--features", "meetings"]
    old = run(*args, "--json")
    new = run(*args, "--format", "json")
    assert old.returncode == new.returncode == 1  # meetings is blocked
    assert json.loads(old.stdout) == json.loads(new.stdout)


# One list convention: repeat the option, or separate with commas


@pytest.mark.parametrize(
    ("repeated", "commas"),
    [
        (
            ["explain", "--app-key", "AppKey1", "--tenant", "orgId", "--tenant", "t2", "{c}"],
            ["explain", "--app-key", "AppKey1", "--tenant", "orgId,t2", "{c}"],
        ),
        (
            ["pac", "--proxy", "p1:8080", "--proxy", "p2:8080", "--host", "*.a.aws", "{c}"],
            ["pac", "--proxy", "p1:8080,p2:8080", "--host", "*.a.aws", "{c}"],
        ),
        (
            ["firewall", "--proxy-port", "8081", "--ports", "80", "--ports", "8443", "{c}"],
            ["firewall", "--proxy-port", "8081", "--ports", "80,8443", "{c}"],
        ),
        (
            ["csp", "generate", "--features", "meetings", "--features", "video-fx"],
            ["csp", "generate", "--features", "video-fx,meetings"],
        ),
    ],
    ids=["explain-tenant", "pac-proxy", "firewall-ports", "csp-features"],
)
def test_lists_are_given_alike_everywhere(allowlist: Path, repeated, commas) -> None:
    one = run(*[a.format(c=allowlist) for a in repeated])
    other = run(*[a.format(c=allowlist) for a in commas])
    assert one.returncode == other.returncode, (one.stderr, other.stderr)
    assert one.stdout == other.stdout and one.stdout


def test_a_list_option_replaces_its_default(allowlist: Path) -> None:
    result = run("firewall", "--proxy-port", "8081", "--ports", "8443", allowlist)
    rules = [line for line in result.stdout.splitlines() if "dport" in line]
    assert rules and all("tcp dport { 8443 } redirect" in line for line in rules), rules


def test_a_bad_list_item_is_a_usage_error_naming_the_option(allowlist: Path) -> None:
    result = run("pac", "--proxy", "p1:8080,not a proxy", allowlist)
    assert result.returncode == 2
    assert "chime-egress pac: error: argument --proxy: " in result.stderr


# Usage errors name the subcommand


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "a.yaml", "b.yaml"],
        ["explain", "--bogus"],
        ["ranges", "lookup", "192.0.2.1", "--bogus"],
        ["csp", "check", "--features", "meetings", "--policy", "x", "--bogus"],
        ["diff", "only-one.yaml"],
        ["headers", "--format", "xml"],
    ],
)
def test_usage_errors_name_the_subcommand(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 2 and result.stdout == ""
    command = " ".join(a for a in args[:2] if not a.startswith("-") and "." not in a)
    assert f"usage: chime-egress {command}" in result.stderr, result.stderr
    assert f"chime-egress {command}: error: " in result.stderr


def test_config_as_an_option_or_an_argument(allowlist: Path) -> None:
    as_argument = run("headers", allowlist)
    as_option = run("headers", "--config", allowlist)
    assert (
        as_argument.stdout
        == as_option.stdout
        == ("X-Amzn-Chime-App-Keys: AppKey1,AppKey2\nX-Amzn-Chime-Tenants: AppKey1:orgId\n")
    )
    both = run("headers", "--config", allowlist, SHIPPED_ALLOWLIST)
    assert both.returncode == 2 and "the allowlist is given twice" in both.stderr


# diff


def test_diff_of_an_edit_for_review_and_for_ci(tmp_path: Path, allowlist: Path) -> None:
    edited = write_allowlist(
        tmp_path, ALLOWLIST.replace("[orgId]", "[orgId, salesId]"), "edited.yaml"
    )
    result = run("diff", allowlist, edited)
    assert result.returncode == 3, result.stderr  # there are changes
    assert result.stdout == (
        f"--- {allowlist}\n"
        f"+++ {edited}\n"
        "the top-level settings: changed:\n"
        "  + tenant AppKey1:salesId\n"
        "  X-Amzn-Chime-Tenants:\n"
        "    before: AppKey1:orgId\n"
        "    after:  AppKey1:orgId,salesId\n"
        "  sessions whose verdict changes:\n"
        "    AppKey AppKey1, TenantIds salesId  403 -> accept\n"
    )
    document = json.loads(run("diff", allowlist, edited, "--format", "json").stdout)
    assert document["changed"] is True
    default = document["networks"][0]
    assert default["tenants_added"] == [{"app_key": "AppKey1", "tenant": "salesId"}]
    assert default["sessions"][0]["before"] == "403" and default["sessions"][0]["after"] == "accept"


def test_diff_without_changes_exits_0(allowlist: Path) -> None:
    result = run("diff", allowlist, allowlist)
    assert result.returncode == 0
    assert result.stdout.splitlines()[-1] == "no change in what the proxy enforces"


def test_diff_of_an_invalid_file_exits_1(tmp_path: Path, allowlist: Path) -> None:
    broken = write_allowlist(tmp_path, "apps: []\n", "broken.yaml")
    result = run("diff", allowlist, broken)
    assert result.returncode == 1 and result.stdout == ""
    assert f"{broken}:1: apps: must be a non-empty list" in result.stderr


@pytest.mark.parametrize("args", [["diff"], ["schema"], ["completion"], ["ca"]])
def test_new_commands_have_help_with_exit_codes(args: list[str]) -> None:
    result = run(*args, "--help")
    assert result.returncode == 0
    assert "exit codes:" in result.stdout and "2  usage error" in result.stdout


def test_run_help_lists_the_launchers_own_options_and_mitmdumps() -> None:
    result = run("run", "--help")
    assert result.returncode == 0, result
    assert "--workers N" in result.stdout
    assert "--event-loop {asyncio,uvloop}" in result.stdout
    assert "--listen-port PORT" in result.stdout  # mitmdump's, from mitmproxy's own parser
