"""The allowlist's `identity:` and `identities:` sections (the files they name: identity_files).

Parsed from YAML nodes by the allowlist's reader, so every mistake names file, line and field.
What is checked beyond syntax, because each would
silently give someone another policy than the admin meant:
- an entry naming a user or group that an earlier entry already matches (it never applies);
- an entry naming a group (or user) that the only source of groups (or users) does not know;
- entries with no source able to tell who is asking, or naming groups with no group source.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from .allowlist import (
    _did_you_mean,
    _entry_mode_and_apps,
    _line,
    _network_name,
    _parse_cidr,
    _Reader,
)
from .headers import CHIME_HEADER_NAMES
from .identity import (
    DEFAULT_CACHE_SECONDS,
    DEFAULT_FAILURE_CACHE_SECONDS,
    DEFAULT_LDAP_TIMEOUT_SECONDS,
    DEFAULT_USER_HEADER,
    LDAP_GROUP_METHODS,
    LDAP_GROUPS_MEMBER_OF,
    LDAP_GROUPS_NONE,
    LDAP_GROUPS_SEARCH,
    PROXY_AUTH_HTPASSWD,
    PROXY_AUTH_LDAP,
    PROXY_AUTH_METHODS,
    IdentityEntry,
    IdentitySettings,
    LdapSettings,
    TrustedHeader,
    fold,
)
from .identity_files import read_group_file, read_htpasswd, read_secret
from .ranges import IPNetwork

_IDENTITY_KEYS = (
    "proxy_auth",
    "htpasswd",
    "ldap",
    "group_file",
    "trusted_header",
    "cache_seconds",
    "failure_cache_seconds",
    "log_users",
)
_LDAP_KEYS = (
    "url",
    "bind_dn",
    "bind_password_file",
    "user_base",
    "user_attribute",
    "groups",
    "group_base",
    "timeout_seconds",
)
_HEADER_KEYS = ("parents", "user", "groups")
_ENTRY_KEYS = ("name", "users", "groups", "mode", "apps")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 field names
_LDAP_URL = re.compile(r"ldaps?://[^/\s?#]+/?")
_ATTRIBUTE = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
# Headers that carry something else: accepting an identity in them would confuse both meanings.
_RESERVED_HEADERS = frozenset(
    name.lower()
    for name in (
        *CHIME_HEADER_NAMES,
        "Proxy-Authorization",
        "Authorization",
        "Host",
        "Connection",
        "Cookie",
    )
)


def _bool(reader: _Reader, node: yaml.Node, field: str) -> bool | None:
    text = reader.text(node, field)
    if text is None:
        return None
    if text.lower() in ("true", "yes", "on"):
        return True
    if text.lower() in ("false", "no", "off"):
        return False
    reader.problem(node, field, f"{text!r} must be true or false")
    return None


_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def _seconds(reader: _Reader, node: yaml.Node, field: str, low: float, high: float) -> float:
    text = reader.text(node, field)
    # Plain decimals only, as the schema says: float() would also take "1e3", "1_000" or "inf".
    value = float(text) if text is not None and _DECIMAL.fullmatch(text) else None
    if value is None or not low <= value <= high:
        reader.problem(node, field, f"must be a number of seconds from {low:g} to {high:g}")
        return low
    return value


def _file(reader: _Reader, node: yaml.Node, field: str, base: Path) -> Path | None:
    text = reader.text(node, field)
    return (base.parent / text).resolve() if text else None


def parse_identity(reader: _Reader, node: yaml.Node, path: Path) -> IdentitySettings | None:
    """The `identity:` section; None (and problems recorded) when it is unusable."""
    fields = reader.mapping(node, "identity", _IDENTITY_KEYS)
    if fields is None:
        return None
    before = len(reader.problems)
    proxy_auth = None
    if "proxy_auth" in fields:
        proxy_auth = reader.choice(
            fields["proxy_auth"][1], "identity.proxy_auth", PROXY_AUTH_METHODS
        )
    htpasswd = None
    if "htpasswd" in fields:
        value = fields["htpasswd"][1]
        if proxy_auth != PROXY_AUTH_HTPASSWD:
            reader.problem(
                value,
                "identity.htpasswd",
                "is only read with 'proxy_auth: htpasswd'; set that, or remove this line",
            )
        elif (file := _file(reader, value, "identity.htpasswd", path)) is not None:
            htpasswd = read_htpasswd(reader, value, file)
    elif proxy_auth == PROXY_AUTH_HTPASSWD:
        reader.problem(
            fields["proxy_auth"][1],
            "identity.htpasswd",
            "missing: 'proxy_auth: htpasswd' needs the file, e.g. 'htpasswd: users.htpasswd' "
            "(made with htpasswd -B)",
        )
    ldap = None
    if "ldap" in fields:
        ldap = _parse_ldap(reader, fields["ldap"][1], path)
        if ldap is not None and ldap.groups == LDAP_GROUPS_NONE and proxy_auth != PROXY_AUTH_LDAP:
            reader.problem(
                fields["ldap"][0],
                "identity.ldap",
                "is used for nothing: set 'proxy_auth: ldap', or ldap.groups to member_of or "
                "search, or remove it",
            )
    elif proxy_auth == PROXY_AUTH_LDAP:
        reader.problem(
            fields["proxy_auth"][1],
            "identity.ldap",
            "missing: 'proxy_auth: ldap' needs the directory: ldap.url, bind_dn, "
            "bind_password_file and user_base",
        )
    group_file = None
    if "group_file" in fields:
        value = fields["group_file"][1]
        if (file := _file(reader, value, "identity.group_file", path)) is not None:
            group_file = read_group_file(reader, value, file)
    trusted = None
    if "trusted_header" in fields:
        trusted = _parse_trusted_header(reader, fields["trusted_header"][1])
    if "proxy_auth" not in fields and "trusted_header" not in fields:
        reader.problem(
            node,
            "identity",
            "names no way to tell who is asking: set proxy_auth, trusted_header or both",
        )
    cache = DEFAULT_CACHE_SECONDS
    if "cache_seconds" in fields:
        cache = _seconds(reader, fields["cache_seconds"][1], "identity.cache_seconds", 0, 86400)
    failure_cache = DEFAULT_FAILURE_CACHE_SECONDS
    if "failure_cache_seconds" in fields:
        failure_cache = _seconds(
            reader, fields["failure_cache_seconds"][1], "identity.failure_cache_seconds", 0, 3600
        )
    log_users = False
    if "log_users" in fields:
        log_users = bool(_bool(reader, fields["log_users"][1], "identity.log_users"))
    if len(reader.problems) > before:
        return None
    return IdentitySettings(
        proxy_auth=proxy_auth,
        htpasswd=htpasswd,
        ldap=ldap,
        group_file=group_file,
        trusted_header=trusted,
        cache_seconds=cache,
        failure_cache_seconds=failure_cache,
        log_users=log_users,
        line=_line(node),
    )


def _parse_ldap(reader: _Reader, node: yaml.Node, path: Path) -> LdapSettings | None:
    fields = reader.mapping(node, "identity.ldap", _LDAP_KEYS)
    if fields is None:
        return None
    before = len(reader.problems)
    values: dict[str, str] = {}
    for key in ("url", "bind_dn", "bind_password_file", "user_base"):
        if key in fields:
            text = reader.text(fields[key][1], f"identity.ldap.{key}")
            if text:
                values[key] = text
        else:
            reader.problem(node, f"identity.ldap.{key}", "missing")
    url = values.get("url", "")
    if url and not _LDAP_URL.fullmatch(url):
        reader.problem(
            fields["url"][1],
            "identity.ldap.url",
            f"{url!r} must be ldap://HOST[:PORT] or ldaps://HOST[:PORT]",
        )
    attribute = "uid"
    if "user_attribute" in fields:
        attribute = reader.text(fields["user_attribute"][1], "identity.ldap.user_attribute") or ""
        if not _ATTRIBUTE.fullmatch(attribute):
            reader.problem(
                fields["user_attribute"][1],
                "identity.ldap.user_attribute",
                f"{attribute!r} is not an attribute name (e.g. uid, sAMAccountName)",
            )
    groups: str | None = LDAP_GROUPS_MEMBER_OF
    if "groups" in fields:
        groups = reader.choice(fields["groups"][1], "identity.ldap.groups", LDAP_GROUP_METHODS)
    group_base = None
    if "group_base" in fields:
        group_base = reader.text(fields["group_base"][1], "identity.ldap.group_base")
        if groups != LDAP_GROUPS_SEARCH:
            reader.problem(
                fields["group_base"][1],
                "identity.ldap.group_base",
                "is only read with 'groups: search'; set that, or remove this line",
            )
    elif groups == LDAP_GROUPS_SEARCH:
        reader.problem(
            node,
            "identity.ldap.group_base",
            "missing: 'groups: search' looks for groups with (member=USER-DN) under this base",
        )
    timeout = DEFAULT_LDAP_TIMEOUT_SECONDS
    if "timeout_seconds" in fields:
        timeout = _seconds(
            reader, fields["timeout_seconds"][1], "identity.ldap.timeout_seconds", 0.1, 60
        )
    password = ""
    password_file = None
    if "bind_password_file" in values:
        password_file = (path.parent / values["bind_password_file"]).resolve()
        password = read_secret(reader, fields["bind_password_file"][1], password_file)
    if len(reader.problems) > before or groups is None or password_file is None:
        return None
    return LdapSettings(
        url=url,
        bind_dn=values["bind_dn"],
        bind_password_file=password_file,
        bind_password=password,
        user_base=values["user_base"],
        user_attribute=attribute,
        groups=groups,
        group_base=group_base,
        timeout_seconds=timeout,
    )


def _parse_trusted_header(reader: _Reader, node: yaml.Node) -> TrustedHeader | None:
    fields = reader.mapping(node, "identity.trusted_header", _HEADER_KEYS)
    if fields is None:
        return None
    before = len(reader.problems)
    parents: list[IPNetwork] = []
    if "parents" in fields:
        items = reader.text_list(fields["parents"][1], "identity.trusted_header.parents")
        if items is not None and not items:
            reader.problem(
                fields["parents"][1],
                "identity.trusted_header.parents",
                "is empty; list the parent proxy's addresses, e.g. [10.0.0.5/32]",
            )
        for index, (item, text) in enumerate(items or ()):
            network = _parse_cidr(reader, item, f"identity.trusted_header.parents[{index}]", text)
            if network is not None:
                parents.append(network)
    else:
        reader.problem(
            node,
            "identity.trusted_header.parents",
            "missing: the header is believed only from these addresses, e.g. [10.0.0.5/32]",
        )
    names: dict[str, str] = {}
    for key in ("user", "groups"):
        if key not in fields:
            continue
        value = reader.text(fields[key][1], f"identity.trusted_header.{key}")
        if value is None:
            continue
        if not _TOKEN.fullmatch(value):
            reader.problem(
                fields[key][1], f"identity.trusted_header.{key}", f"{value!r} is not a header name"
            )
        elif value.lower() in _RESERVED_HEADERS:
            reader.problem(
                fields[key][1],
                f"identity.trusted_header.{key}",
                f"{value} carries something else; use a header of its own, e.g. "
                f"{DEFAULT_USER_HEADER}",
            )
        elif value.lower() in {name.lower() for name in names.values()}:
            reader.problem(
                fields[key][1], f"identity.trusted_header.{key}", "is the same as the user header"
            )
        else:
            names[key] = value
    if len(reader.problems) > before:
        return None
    return TrustedHeader(
        parents=tuple(parents),
        user=names.get("user", DEFAULT_USER_HEADER),
        groups=names.get("groups"),
    )


# The `identities` entries


def parse_identities(
    reader: _Reader,
    node: yaml.Node,
    *,
    settings: IdentitySettings | None,
    identity_given: bool,
    has_default_apps: bool,
    taken_names: dict[str, int],
) -> tuple[IdentityEntry, ...]:
    """The `identities` list: the first entry matching the user or one of the groups applies."""
    if not isinstance(node, yaml.SequenceNode):
        reader.problem(node, "identities", "must be a list of entries, each with name and groups")
        return ()
    if not identity_given:
        reader.problem(
            node,
            "identities",
            "needs an 'identity:' section saying how the proxy learns who is asking "
            "(proxy_auth, trusted_header)",
        )
    entries: list[IdentityEntry] = []
    earlier: dict[tuple[str, str], tuple[str, int]] = {}  # (kind, folded name) -> (field, line)
    known = {kind: _known(settings, kind) for kind in ("users", "groups")}  # once, not per entry
    for index, entry_node in enumerate(node.value):
        field = f"identities[{index}]"
        fields = reader.mapping(entry_node, field, _ENTRY_KEYS)
        if fields is None:
            continue
        name = _network_name(reader, fields, entry_node, field, taken_names, "entry")
        mode, apps = _entry_mode_and_apps(
            reader, fields, entry_node, field, has_default_apps, "them"
        )
        users = _names(reader, fields, "users", field, settings, known["users"], earlier)
        groups = _names(reader, fields, "groups", field, settings, known["groups"], earlier)
        if "users" not in fields and "groups" not in fields:
            reader.problem(entry_node, field, "matches nobody: list users, groups or both")
        if name is not None and mode is not None and (users or groups):
            line = _line(entry_node)
            entries.append(
                IdentityEntry(name, frozenset(users), frozenset(groups), mode, apps, line)
            )
    return tuple(entries)


def _names(
    reader: _Reader,
    fields: dict[str, tuple[yaml.Node, yaml.Node]],
    kind: str,
    field: str,
    settings: IdentitySettings | None,
    known: tuple[str, frozenset[str]] | None,
    earlier: dict[tuple[str, str], tuple[str, int]],
) -> list[str]:
    if kind not in fields:
        return []
    list_node = fields[kind][1]
    items = reader.text_list(list_node, f"{field}.{kind}")
    if items is not None and not items:
        reader.problem(list_node, f"{field}.{kind}", f"is empty; list {kind} or remove the key")
    if items and kind == "groups" and settings is not None and not _has_group_source(settings):
        reader.problem(
            list_node,
            f"{field}.groups",
            "no identity source tells groups: set identity.group_file, identity.ldap (groups: "
            "member_of or search) or identity.trusted_header.groups",
        )
        return []
    names: list[str] = []
    for position, (item, text) in enumerate(items or ()):
        item_field = f"{field}.{kind}[{position}]"
        folded = fold(text)
        if not folded:
            reader.problem(item, item_field, "is empty")
            continue
        if (kind, folded) in earlier:
            where, line = earlier[(kind, folded)]
            same = where.split(".")[0] == field
            reader.problem(
                item,
                item_field,
                f"{text!r} is listed twice in this entry (line {line})"
                if same
                else f"{text!r} is already matched by {where} (line {line}), which comes "
                "first, so this never applies to it; move this entry above, or remove it",
            )
            continue
        if known is not None and folded not in known[1]:
            hint = _did_you_mean(folded, tuple(sorted(known[1])))
            reader.problem(item, item_field, f"{text!r} is not in {known[0]}{hint}")
            continue
        earlier[(kind, folded)] = (item_field, _line(item))
        names.append(folded)
    return names


def _has_group_source(settings: IdentitySettings) -> bool:
    header = settings.trusted_header
    return (
        settings.group_file is not None
        or settings.ldap_groups
        or (header is not None and header.groups is not None)
    )


def _known(settings: IdentitySettings | None, kind: str) -> tuple[str, frozenset[str]] | None:
    """(where, names) when one closed list is the only source of such names; else None."""
    if settings is None:
        return None
    if kind == "groups":
        header = settings.trusted_header
        only_file = not settings.ldap_groups and (header is None or header.groups is None)
        if settings.group_file is not None and only_file:
            return str(settings.group_file.path), settings.group_file.groups
        return None
    if settings.htpasswd is not None and settings.trusted_header is None:
        return str(settings.htpasswd.path), frozenset(fold(u) for u in settings.htpasswd.hashes)
    return None
