"""`chime-egress validate` and `explain --user/--group` on an allowlist with identities."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .support import run, write_allowlist

ALLOWLIST = """\
apps:
  - app_key: CorpKey
identity:
  trusted_header:
    parents: [10.0.0.5/32]
    groups: X-Authenticated-Groups
  group_file: groups.yaml
identities:
  - name: contractors
    groups: [contractors]
    mode: enforce
    apps:
      - app_key: CorpKey
        tenants: [corpOrg]
  - name: sales
    groups: [sales]
    mode: enforce
    apps: [{app_key: CorpKey}, {app_key: CrmKey}]
  - name: pilot
    users: [carol]
    mode: observe
networks:
  - name: branch
    clients: [10.20.0.0/16]
    mode: enforce
    apps: [{app_key: BranchKey}]
destinations: {cidrs: [192.0.2.0/24]}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "groups.yaml").write_text("sales: [alice]\ncontractors: [bob, alice]\n")
    return write_allowlist(tmp_path, ALLOWLIST)


def test_validate_lists_sources_and_entries(config: Path) -> None:
    result = run("validate", config)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert (
        "; identities contractors (enforce), sales (enforce), pilot (observe); networks branch "
        "(enforce)\n"
    ) in out
    assert (
        "identity: group_file groups.yaml; trusted_header X-Authenticated-User and "
        "X-Authenticated-Groups from 10.0.0.5/32; cache 300s"
    ) in out.replace(str(config.parent) + "/", "")
    assert (
        "identities (3, before networks; the first naming the user or one of its groups wins):"
    ) in out
    assert (
        "  identity sales (groups sales), mode enforce, apps CorpKey, CrmKey\n"
        "  identity pilot (users carol), mode observe, no headers\n"
    ) in out
    document = json.loads(run("validate", "--format", "json", config).stdout)
    assert [entry["name"] for entry in document["identities"]] == ["contractors", "sales", "pilot"]
    assert document["identities"][0]["groups"] == ["contractors"]
    assert document["identities"][0]["headers"] == [
        {"name": "X-Amzn-Chime-App-Keys", "value": "CorpKey"},
        {"name": "X-Amzn-Chime-Tenants", "value": "CorpKey:corpOrg"},
    ]


def test_explain_user_with_groups_from_the_group_file(config: Path) -> None:
    # alice is in both groups in the file: the first entry in file order applies.
    result = run("explain", "--user", "alice", "--app-key", "CrmKey", config)
    assert result.returncode == 3, result  # contractors do not get the CRM app
    assert "identity: user alice, groups contractors, sales\n" in result.stdout
    assert "  groups of alice in groups.yaml: contractors, sales\n" in result.stdout.replace(
        str(config.parent) + "/", ""
    )
    assert "identities entry contractors (line 9) applies, mode enforce\n" in result.stdout
    assert "headers (the proxy's for identity contractors, from" in result.stdout


def test_explain_group_given_on_the_command_line(config: Path) -> None:
    result = run("explain", "--user", "erin", "--group", "Sales", "--app-key", "CrmKey", config)
    assert result.returncode == 0, result
    assert "identities entry sales (line 15) applies, mode enforce\n" in result.stdout
    assert "  X-Amzn-Chime-App-Keys: CorpKey,CrmKey\n" in result.stdout


def test_explain_groups_follow_the_list_convention(config: Path) -> None:
    # "--group a,b" is two groups, as "--tenant a,b" is two tenants: not one group named "a,b".
    result = run(
        "explain", "--user", "erin", "--group", "Nobody,Sales", "--app-key", "CrmKey", config
    )
    assert result.returncode == 0, result
    assert "identities entry sales (line 15) applies, mode enforce\n" in result.stdout


def test_explain_identity_in_observe_mode(config: Path) -> None:
    result = run("explain", "--user", "Carol", config)
    assert result.returncode == 0, result
    assert "identities entry pilot (line 19) applies, mode observe\n" in result.stdout
    assert "observe mode: the proxy adds no headers" in result.stdout


def test_explain_falls_back_to_the_address(config: Path) -> None:
    result = run(
        "explain", "--user", "zoe", "--client", "10.20.1.1", "--app-key", "BranchKey", config
    )
    assert result.returncode == 0, result
    assert (
        "no identities entry names them (contractors, sales, pilot): the client's address decides"
    ) in result.stdout
    assert "client 10.20.1.1: network branch (10.20.0.0/16, line 23), mode enforce" in result.stdout


def test_explain_user_with_raw_headers_is_a_usage_error(config: Path) -> None:
    result = run("explain", "--user", "x", "--app-keys-header", "K", "--app-key", "K")
    assert result.returncode == 2
    assert "--user and --group cannot be combined with --app-keys-header" in result.stderr
