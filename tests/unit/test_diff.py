"""What an edit changes: the pure comparison behind `chime-egress diff` and the reload log."""

from __future__ import annotations

import textwrap
from pathlib import Path

from chime_egress.policy.compiled import Policy, load_policy
from chime_egress.policy.diff import describe, diff_policies, summary

BASE = """\
mode: enforce
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


def policy(tmp_path: Path, text: str, name: str = "a.yaml") -> Policy:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_policy(path)


def test_the_same_policy_changes_nothing(tmp_path: Path) -> None:
    old = policy(tmp_path, BASE)
    # A comment, an app's name and key order change nothing the proxy does.
    renamed = BASE.replace("  - app_key: AppKey2\n", "  - app_key: AppKey2  # hi\n    name: x\n")
    diff = diff_policies(old, policy(tmp_path, renamed, "b.yaml"))
    assert not diff.changed
    assert describe(diff) == ["no change in what the proxy enforces"]
    assert summary(diff) == "no change in what the proxy enforces"
    assert diff.to_json()["changed"] is False


def test_a_tenant_added_shows_the_headers_and_the_sessions_it_lets_in(tmp_path: Path) -> None:
    old = policy(tmp_path, BASE)
    new = policy(tmp_path, BASE.replace("[orgId]", "[orgId, salesId]"), "b.yaml")
    diff = diff_policies(old, new)
    assert diff.changed
    assert describe(diff) == [
        "the top-level settings: changed:",
        "  + tenant AppKey1:salesId",
        "  X-Amzn-Chime-Tenants:",
        "    before: AppKey1:orgId",
        "    after:  AppKey1:orgId,salesId",
        "  sessions whose verdict changes:",
        "    AppKey AppKey1, TenantIds salesId  403 -> accept",
    ]
    assert summary(diff) == "default: +tenant AppKey1:salesId"


def test_an_app_removed_and_a_network_enforcing(tmp_path: Path) -> None:
    old = policy(tmp_path, BASE)
    edited = BASE.replace("  - app_key: AppKey2\n", "").replace("mode: observe", "mode: enforce")
    diff = diff_policies(old, policy(tmp_path, edited, "b.yaml"))
    lines = describe(diff)
    assert lines[:4] == [
        "the top-level settings: changed:",
        "  - app AppKey2",
        "  X-Amzn-Chime-App-Keys:",
        "    before: AppKey1,AppKey2",
    ]
    assert "    AppKey AppKey2, TenantIds otherTenantId (not listed)  accept -> 403" in lines
    assert "network sales (10.30.0.0/16): changed:" in lines
    assert "  mode: observe -> enforce" in lines
    # In observe mode nothing is sent: every session was accepted; now the headers decide.
    assert "    any app not listed (AppKey OtherAppKey)               accept -> 403" in lines
    assert "  + app AppKey1" in lines  # observed before: no app was in force there
    assert summary(diff) == (
        "default: -app AppKey2, 2 example sessions now 403; "
        "sales: mode observe -> enforce, +app AppKey1, 3 example sessions now 403"
    )


def test_networks_added_and_removed_prefixes_and_media_hosts(tmp_path: Path) -> None:
    old = policy(tmp_path, BASE)
    edited = BASE.replace("name: sales", "name: labs").replace(
        "[192.0.2.0/24]", "[192.0.2.0/24, 198.51.100.0/24], media_hosts: []"
    )
    diff = diff_policies(old, policy(tmp_path, edited, "b.yaml"))
    document = diff.to_json()
    statuses = {network["name"]: network["status"] for network in document["networks"]}
    assert statuses == {"default": "unchanged", "labs": "added", "sales": "removed"}
    assert document["prefixes"] == {"added": ["198.51.100.0/24"], "removed": []}
    assert document["media_hosts"] == {"before": ["ice.*.chime.aws"], "after": []}
    lines = describe(diff)
    assert lines == [
        "network labs (10.30.0.0/16): added:",
        "  mode: observe; its clients had the settings of sales (mode observe), compared below",
        "network sales (10.30.0.0/16): removed:",
        "  mode was observe; its clients now get the settings of labs (mode observe), compared "
        "below",
        "Chime prefixes:",
        "  + 198.51.100.0/24",
        "media hosts: ice.*.chime.aws -> (none)",
    ]
    assert summary(diff) == "labs: added; sales: removed; prefixes +1 -0; media hosts (none)"


def test_a_removed_network_is_compared_with_the_settings_its_clients_fall_to(
    tmp_path: Path,
) -> None:
    """Removing an entry that enforced the top level's own apps changes nothing for its clients:
    no header "(not sent)", no session "403 -> accept"."""
    both = (
        "apps: [{app_key: A, tenants: [orgId]}]\n"
        "networks:\n  - {name: pilot, clients: [10.20.0.0/16], mode: enforce}\n"
        "destinations: {cidrs: [192.0.2.0/24]}\n"
    )
    top_only = "apps: [{app_key: A, tenants: [orgId]}]\ndestinations: {cidrs: [192.0.2.0/24]}\n"
    diff = diff_policies(policy(tmp_path, both), policy(tmp_path, top_only, "b.yaml"))
    [removed] = [s for s in diff.settings if s.name == "pilot"]
    assert (removed.status, removed.stand_in) == ("removed", "default")
    assert removed.headers[0] == removed.headers[1]
    assert removed.sessions == ()
    assert describe(diff) == [
        "network pilot (10.20.0.0/16): removed:",
        "  mode was enforce; its clients now get the settings of the top level (mode enforce), "
        "compared below",
    ]
    # The other way round: the new entry is compared with what its clients had, the top level.
    added = diff_policies(policy(tmp_path, top_only, "c.yaml"), policy(tmp_path, both, "d.yaml"))
    [entry] = [s for s in added.settings if s.name == "pilot"]
    assert (entry.status, entry.stand_in, entry.sessions) == ("added", "default", ())


def test_reordering_apps_changes_the_header_value_only(tmp_path: Path) -> None:
    old = policy(
        tmp_path, "apps: [{app_key: A}, {app_key: B}]\ndestinations: {cidrs: [10.0.0.0/8]}\n"
    )
    new = policy(
        tmp_path, "apps: [{app_key: B}, {app_key: A}]\ndestinations: {cidrs: [10.0.0.0/8]}\n", "b"
    )
    diff = diff_policies(old, new)
    assert describe(diff) == [
        "the top-level settings: changed:",
        "  X-Amzn-Chime-App-Keys:",
        "    before: A,B",
        "    after:  B,A",
    ]
    assert summary(diff) == "default: app order"


def test_the_reload_line_names_a_few_of_many_changes(tmp_path: Path) -> None:
    apps = "".join(f"  - app_key: K{n}\n" for n in range(40))
    text = "mode: {mode}\napps:\n" + apps + "destinations: {{cidrs: [10.0.0.0/8]}}\n"
    observed = policy(tmp_path, text.format(mode="observe"))
    enforced = policy(tmp_path, text.format(mode="enforce"), "b.yaml")
    line = summary(diff_policies(observed, enforced))
    assert line == (
        # Sessions of the 40 apps stay accepted (listed, any tenant); any other app's is refused.
        "default: mode observe -> enforce, +app K0, +app K1, +app K2, +37 more apps, "
        "1 example session now 403"
    )
    # The review lists every one.
    assert (
        sum(line.startswith("  + app ") for line in describe(diff_policies(observed, enforced)))
        == 40
    )
