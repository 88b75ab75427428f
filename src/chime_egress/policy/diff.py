"""What an edit of the allowlist changes in what the proxy enforces, and for whom.

Two Policies are compared setting by setting: the top-level settings ("default") and each
`networks` entry, matched by name. For each: the mode, the clients, the apps and tenants added or
removed, the header values before and after, and the example meeting sessions whose verdict
changes (judged by `verdict.judge`, the AWS guide's rules, on the exact values the proxy sends).
Then the Chime prefixes and media host patterns. An app's `name` only labels logs, so renaming
one changes nothing.

Used by `chime-egress diff OLD NEW` (text for a review, JSON for CI) and by the proxy on every
reload, so the log says what an edit did instead of repeating the same counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import plural
from .allowlist import DEFAULT_NETWORK_NAME
from .client_policy import ClientPolicies, ClientPolicy
from .compiled import Policy
from .headers import APP_KEYS_HEADER, TENANTS_HEADER
from .identifiers import unused_identifier
from .identity import Identity
from .verdict import Session, judge_parsed

ADDED = "added"
REMOVED = "removed"
CHANGED = "changed"
UNCHANGED = "unchanged"

# Example identifiers for sessions of apps or tenants the allowlist does not name.
_OTHER_TENANT = "otherTenantId"
_OTHER_APP = "OtherAppKey"


@dataclass(frozen=True)
class SessionChange:
    """An example meeting session that Chime judges differently after the edit."""

    session: Session
    label: str
    before: str  # "accept" or "403"
    after: str


@dataclass(frozen=True)
class SettingsDiff:
    """One network's settings (or the top level's, named "default") before and after."""

    name: str
    status: str  # added, removed, changed, unchanged
    mode: tuple[str | None, str | None]
    clients: tuple[tuple[str, ...], tuple[str, ...]]
    apps_added: tuple[str, ...]
    apps_removed: tuple[str, ...]
    tenants_added: tuple[tuple[str, str], ...]  # (app_key, tenant) of apps on both sides
    tenants_removed: tuple[tuple[str, str], ...]
    headers: tuple[dict[str, str], dict[str, str]]  # name -> value; empty: nothing sent
    sessions: tuple[SessionChange, ...]
    # An entry added or removed: the entry its clients fell to before, or fall to now; the
    # apps, headers and sessions above compare with that entry's settings.
    stand_in: str | None = None

    @property
    def changed(self) -> bool:
        return self.status != UNCHANGED

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "mode": {"before": self.mode[0], "after": self.mode[1]},
            "clients": {"before": list(self.clients[0]), "after": list(self.clients[1])},
            "apps_added": list(self.apps_added),
            "apps_removed": list(self.apps_removed),
            "tenants_added": [{"app_key": a, "tenant": t} for a, t in self.tenants_added],
            "tenants_removed": [{"app_key": a, "tenant": t} for a, t in self.tenants_removed],
            "headers": {"before": self.headers[0], "after": self.headers[1]},
            "stand_in": self.stand_in,
            "sessions": [
                {
                    "app_key": change.session.app_key,
                    "tenant_ids": list(change.session.tenant_ids),
                    "label": change.label,
                    "before": change.before,
                    "after": change.after,
                }
                for change in self.sessions
            ],
        }


@dataclass(frozen=True)
class PolicyDiff:
    settings: tuple[SettingsDiff, ...]  # the default first, then networks in the new order
    prefixes_added: tuple[str, ...]
    prefixes_removed: tuple[str, ...]
    media_hosts: tuple[tuple[str, ...], tuple[str, ...]]
    sync_tokens: tuple[str | None, str | None]

    @property
    def changed(self) -> bool:
        return bool(
            any(s.changed for s in self.settings)
            or self.prefixes_added
            or self.prefixes_removed
            or self.media_hosts[0] != self.media_hosts[1]
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "networks": [s.to_json() for s in self.settings],
            "prefixes": {
                "added": list(self.prefixes_added),
                "removed": list(self.prefixes_removed),
            },
            "ranges_sync_token": {"before": self.sync_tokens[0], "after": self.sync_tokens[1]},
            "media_hosts": {
                "before": list(self.media_hosts[0]),
                "after": list(self.media_hosts[1]),
            },
        }


def diff_policies(old: Policy, new: Policy) -> PolicyDiff:
    old_prefixes = [str(p.network) for p in old.table.prefixes]
    new_prefixes = [str(p.network) for p in new.table.prefixes]
    old_set, new_set = set(old_prefixes), set(new_prefixes)  # AWS's whole file: 17,000
    return PolicyDiff(
        settings=_settings_diffs(old.clients, new.clients),
        prefixes_added=tuple(p for p in new_prefixes if p not in old_set),
        prefixes_removed=tuple(p for p in old_prefixes if p not in new_set),
        media_hosts=(old.media_hosts.patterns, new.media_hosts.patterns),
        sync_tokens=(
            old.ranges.sync_token if old.ranges else None,
            new.ranges.sync_token if new.ranges else None,
        ),
    )


def _settings_diffs(old: ClientPolicies, new: ClientPolicies) -> tuple[SettingsDiff, ...]:
    old_by_name = {policy.name: policy for policy in old.all}
    new_names = {policy.name for policy in new.all}
    diffs = []
    for policy in new.all:
        before = old_by_name.get(policy.name)
        if before is None:  # added: its clients had another entry's settings until now
            diffs.append(_settings_diff(_stand_in(policy, old), policy, ADDED))
        else:
            diffs.append(_settings_diff(before, policy))
    for policy in old.all:
        if policy.name not in new_names:  # removed: its clients fall to another entry now
            diffs.append(_settings_diff(policy, _stand_in(policy, new), REMOVED))
    return tuple(diffs)


def _stand_in(entry: ClientPolicy, other: ClientPolicies) -> ClientPolicy:
    """The settings `other` gives to the clients of `entry` (judged by its first range, or its
    first user or group): where they came from when it is new, where they go when it is gone."""
    if entry.kind == "identity":
        user = min(entry.users) if entry.users else None
        groups = frozenset({min(entry.groups)}) if entry.groups and user is None else frozenset()
        return other.select(Identity(user, groups, "diff"), "")
    if entry.clients:
        return other.for_client(str(entry.clients[0].network_address))
    return other.default


def _settings_diff(old: ClientPolicy, new: ClientPolicy, status: str | None = None) -> SettingsDiff:
    """`old` and `new` as they apply to the same clients; `status` for an added or removed
    entry, which is compared with its stand-in (named in the diff)."""
    clients: tuple[tuple[str, ...], tuple[str, ...]]
    if status == ADDED:
        stand_in, either, clients = old.name, new, ((), _clients(new))
    elif status == REMOVED:
        stand_in, either, clients = new.name, old, (_clients(old), ())
    else:
        stand_in, either, clients = None, new, (_clients(old), _clients(new))
    old_apps = _apps(old)
    new_apps = _apps(new)
    headers = (_header_values(old), _header_values(new))
    mode = (old.mode, new.mode)
    apps_added = tuple(key for key in new_apps if key not in old_apps)
    apps_removed = tuple(key for key in old_apps if key not in new_apps)
    tenants_added, tenants_removed = _tenant_changes(old_apps, new_apps)
    sessions = _session_changes(old_apps, new_apps)
    if status is None:
        changed = (mode[0], clients[0], headers[0]) != (mode[1], clients[1], headers[1])
        status = CHANGED if changed or old_apps != new_apps else UNCHANGED
    return SettingsDiff(
        name=either.name,
        status=status,
        mode=mode,
        clients=clients,
        apps_added=apps_added,
        apps_removed=apps_removed,
        tenants_added=tenants_added,
        tenants_removed=tenants_removed,
        headers=headers,
        sessions=sessions,
        stand_in=stand_in,
    )


def _apps(policy: ClientPolicy) -> dict[str, tuple[str, ...]]:
    """AppKey -> tenants (empty: any tenant) in force, in header order; none in observe mode."""
    if policy.observing:
        return {}
    return {app.app_key: app.tenants for app in policy.apps}


def _clients(policy: ClientPolicy) -> tuple[str, ...]:
    return tuple(str(network) for network in policy.clients)


def _header_values(policy: ClientPolicy) -> dict[str, str]:
    return dict(policy.http1_headers)


def _tenant_changes(
    old_apps: dict[str, tuple[str, ...]], new_apps: dict[str, tuple[str, ...]]
) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    added: list[tuple[str, str]] = []
    removed: list[tuple[str, str]] = []
    for key in new_apps.keys() & old_apps.keys():
        added += [(key, t) for t in new_apps[key] if t not in old_apps[key]]
        removed += [(key, t) for t in old_apps[key] if t not in new_apps[key]]
    return tuple(sorted(added)), tuple(sorted(removed))


def _example_sessions(
    old_apps: dict[str, tuple[str, ...]], new_apps: dict[str, tuple[str, ...]]
) -> list[tuple[str, Session]]:
    """Per app whose entry differs between the sides: each tenant named, an unnamed one, and
    none; and an app named on neither side.

    A session's verdict depends only on its own app's entry (listed or not, and its tenants), so
    the apps an edit left alone keep every verdict: a reload of a long allowlist judges only
    what changed."""
    sessions: list[tuple[str, Session]] = []
    changed = [
        key
        for key in dict.fromkeys([*old_apps, *new_apps])
        if (old_apps.get(key) != new_apps.get(key))
    ]
    for key in changed:
        tenants = list(dict.fromkeys([*old_apps.get(key, ()), *new_apps.get(key, ())]))
        other = unused_identifier(_OTHER_TENANT, tenants)
        sessions += [(f"AppKey {key}, TenantIds {t}", Session(key, (t,))) for t in tenants]
        sessions.append((f"AppKey {key}, TenantIds {other} (not listed)", Session(key, (other,))))
        sessions.append((f"AppKey {key}, no TenantIds", Session(key, ())))
    other_app = unused_identifier(_OTHER_APP, [*old_apps, *new_apps])
    sessions.append((f"any app not listed (AppKey {other_app})", Session(other_app, ())))
    return sessions


def _session_changes(
    old_apps: dict[str, tuple[str, ...]], new_apps: dict[str, tuple[str, ...]]
) -> tuple[SessionChange, ...]:
    if old_apps == new_apps:  # the same apps and tenants in force: every verdict is the same
        return ()
    # Parsed once: judging hundreds of sessions must not parse the headers hundreds of times.
    old_headers, new_headers = _parsed(old_apps), _parsed(new_apps)
    changes = []
    for label, session in _example_sessions(old_apps, new_apps):
        before = judge_parsed(session, *old_headers).decision.value
        after = judge_parsed(session, *new_headers).decision.value
        if before != after:
            changes.append(SessionChange(session, label, before, after))
    return tuple(changes)


def _parsed(
    apps: dict[str, tuple[str, ...]],
) -> tuple[frozenset[str] | None, dict[str, tuple[str, ...]] | None]:
    """What the headers sent for `apps` (`_apps`: none in observe mode) say, as `judge_parsed`
    takes it; none sent: (None, None).

    Taken from the apps the headers are rendered from (headers.build_headers), not by parsing
    the rendered values again: a long allowlist's reload must not re-validate every AppKey."""
    if not apps:
        return None, None
    tenants = {key: listed for key, listed in apps.items() if listed}
    return frozenset(apps), tenants or None


# Text: the review's lines, and the reload log's one-line summary.


def describe(diff: PolicyDiff) -> list[str]:
    """The diff as lines for a review; `no change ...` when nothing enforced changes."""
    lines: list[str] = []
    for settings in diff.settings:
        if settings.changed:
            lines += _describe_settings(settings)
    if diff.prefixes_added or diff.prefixes_removed:
        tokens = diff.sync_tokens
        token = f" (ranges syncToken {tokens[0]} -> {tokens[1]})" if tokens[0] != tokens[1] else ""
        lines.append(f"Chime prefixes{token}:")
        lines += [f"  + {prefix}" for prefix in diff.prefixes_added]
        lines += [f"  - {prefix}" for prefix in diff.prefixes_removed]
    if diff.media_hosts[0] != diff.media_hosts[1]:
        before, after = (", ".join(hosts) or "(none)" for hosts in diff.media_hosts)
        lines.append(f"media hosts: {before} -> {after}")
    return lines or ["no change in what the proxy enforces"]


def _title(settings: SettingsDiff) -> str:
    what = "the top-level settings" if settings.name == "default" else f"network {settings.name}"
    clients = settings.clients[1] or settings.clients[0]
    where = f" ({', '.join(clients)})" if clients else ""
    return f"{what}{where}: {settings.status}"


def _describe_settings(settings: SettingsDiff) -> list[str]:
    lines = [f"{_title(settings)}:"]
    before, after = settings.mode
    if settings.status == ADDED:
        lines.append(
            f"  mode: {after}; its clients had the settings of {_named(settings.stand_in)} "
            f"(mode {before}), compared below"
        )
    elif settings.status == REMOVED:
        lines.append(
            f"  mode was {before}; its clients now get the settings of "
            f"{_named(settings.stand_in)} (mode {after}), compared below"
        )
    elif before != after:
        lines.append(f"  mode: {before} -> {after}")
    if settings.clients[0] != settings.clients[1] and settings.status == CHANGED:
        old_clients, new_clients = (", ".join(c) for c in settings.clients)
        lines.append(f"  clients: {old_clients} -> {new_clients}")
    lines += [f"  + app {key}" for key in settings.apps_added]
    lines += [f"  - app {key}" for key in settings.apps_removed]
    lines += [f"  + tenant {key}:{tenant}" for key, tenant in settings.tenants_added]
    lines += [f"  - tenant {key}:{tenant}" for key, tenant in settings.tenants_removed]
    old_headers, new_headers = settings.headers
    for name in (APP_KEYS_HEADER, TENANTS_HEADER):
        old_value = old_headers.get(name, "(not sent)")
        new_value = new_headers.get(name, "(not sent)")
        if old_value != new_value:
            lines.append(f"  {name}:")
            lines.append(f"    before: {old_value}")
            lines.append(f"    after:  {new_value}")
    if settings.sessions:
        lines.append("  sessions whose verdict changes:")
        width = max(len(change.label) for change in settings.sessions)
        lines += [
            f"    {change.label:<{width}}  {change.before} -> {change.after}"
            for change in settings.sessions
        ]
    return lines


def _named(name: str | None) -> str:
    return "the top level" if name in (None, DEFAULT_NETWORK_NAME) else str(name)


def summary(diff: PolicyDiff) -> str:
    """One line for the reload log: what changed, per network, in a few words."""
    if not diff.changed:
        return "no change in what the proxy enforces"
    parts: list[str] = []
    for settings in diff.settings:
        if not settings.changed:
            continue
        items: list[str] = []
        if settings.status in (ADDED, REMOVED):
            parts.append(f"{settings.name}: {settings.status}")
            continue
        if settings.mode[0] != settings.mode[1]:
            items.append(f"mode {settings.mode[0]} -> {settings.mode[1]}")
        if settings.clients[0] != settings.clients[1] and settings.status == CHANGED:
            items.append(f"clients {', '.join(settings.clients[1])}")
        items += _few("+app", settings.apps_added, "apps")
        items += _few("-app", settings.apps_removed, "apps")
        items += _few("+tenant", [f"{k}:{t}" for k, t in settings.tenants_added], "tenants")
        items += _few("-tenant", [f"{k}:{t}" for k, t in settings.tenants_removed], "tenants")
        if not items and settings.headers[0] != settings.headers[1]:
            items.append("app order")
        flips = [change for change in settings.sessions if change.after == "403"]
        if flips:
            items.append(f"{plural(len(flips), 'example session')} now 403")
        parts.append(f"{settings.name}: {', '.join(items)}")
    if diff.prefixes_added or diff.prefixes_removed:
        parts.append(f"prefixes +{len(diff.prefixes_added)} -{len(diff.prefixes_removed)}")
    if diff.media_hosts[0] != diff.media_hosts[1]:
        parts.append(f"media hosts {', '.join(diff.media_hosts[1]) or '(none)'}")
    return "; ".join(parts)


def _few(sign: str, names: Sequence[str], what: str, shown: int = 3) -> list[str]:
    """A log line names a few; switching 500 apps to enforce must not make it 500 items long."""
    if len(names) <= shown + 1:
        return [f"{sign} {name}" for name in names]
    more = f"{sign[0]}{len(names) - shown} more {what}"
    return [*(f"{sign} {name}" for name in names[:shown]), more]
