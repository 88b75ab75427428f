"""The allowlist file: its model, and a parser that names file, line and field for every mistake.

The parser walks PyYAML's node tree instead of the constructed objects, because only nodes keep
line numbers, and because PyYAML silently keeps the last of two duplicate keys: a duplicated
`tenants:` would otherwise widen or narrow a policy without anyone noticing.
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import ConfigError, Problem
from .headers import MAX_HEADER_LINE_BYTES, build_headers, oversized_lines
from .identifiers import app_key_problem, tenant_id_problem
from .media import DEFAULT_MEDIA_HOSTS, media_host_problem
from .ranges import DEFAULT_SERVICES, IPNetwork

_NULL_TAG = "tag:yaml.org,2002:null"


@dataclass(frozen=True)
class App:
    app_key: str
    name: str | None
    tenants: tuple[str, ...]  # empty: every session of this app is allowed
    line: int

    @property
    def label(self) -> str:
        return f"{self.name} ({self.app_key})" if self.name else self.app_key


@dataclass(frozen=True)
class Destinations:
    ip_ranges: Path | None  # resolved against the allowlist's folder
    ip_ranges_line: int | None
    services: tuple[str, ...]
    regions: tuple[str, ...]
    cidrs: tuple[IPNetwork, ...]
    media_hosts: tuple[str, ...]  # TLS server names of TURN relays, passed through undecrypted


@dataclass(frozen=True)
class Allowlist:
    path: Path
    apps: tuple[App, ...]
    destinations: Destinations

    def header_input(self) -> list[tuple[str, tuple[str, ...]]]:
        return [(app.app_key, app.tenants) for app in self.apps]


class _Reader:
    """Turns YAML nodes into values, recording a Problem (with the node's line) for each mistake."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.problems: list[Problem] = []

    def problem(self, node: yaml.Node | None, field: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else None
        self.problems.append(Problem(self.path, line, field, message))

    def mapping(
        self, node: yaml.Node, field: str, allowed: tuple[str, ...]
    ) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, field, f"must be a mapping with keys {', '.join(allowed)}")
            return None
        found: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            key_field = f"{field}.{key}" if field and key else (key or field)
            if key is None or key not in allowed:
                hint = difflib.get_close_matches(str(key), allowed, n=1)
                suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
                self.problem(
                    key_node,
                    key_field,
                    f"unknown key {key!r}{suggestion} (allowed: {', '.join(allowed)})",
                )
                continue
            if key in found:
                first_line = found[key][0].start_mark.line + 1
                self.problem(
                    key_node, key_field, f"duplicate key; first given on line {first_line}"
                )
                continue
            found[key] = (key_node, value_node)
        return found

    def text(self, node: yaml.Node, field: str) -> str | None:
        """A scalar's text exactly as written: `0123` stays "0123", `yes` stays "yes"."""
        if not isinstance(node, yaml.ScalarNode) or node.tag == _NULL_TAG:
            self.problem(node, field, "must be a single value (text)")
            return None
        return str(node.value)

    def text_list(self, node: yaml.Node, field: str) -> list[tuple[yaml.Node, str]] | None:
        if not isinstance(node, yaml.SequenceNode):
            self.problem(node, field, "must be a list, for example [a, b]")
            return None
        items = []
        for index, item in enumerate(node.value):
            text = self.text(item, f"{field}[{index}]")
            if text is not None:
                items.append((item, text))
        return items


_TOP_KEYS = ("apps", "destinations")
_APP_KEYS = ("app_key", "name", "tenants")
_DESTINATION_KEYS = ("ip_ranges", "services", "regions", "cidrs", "media_hosts")


def parse_allowlist(text: str, path: Path) -> Allowlist:
    """Parse and validate allowlist YAML; raises ConfigError listing every problem found."""
    reader = _Reader(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(p for p in (error.context, error.problem) if p)
        raise ConfigError([Problem(str(path), line, "", f"YAML syntax error: {problem}")]) from None
    except yaml.YAMLError as error:
        raise ConfigError([Problem(str(path), None, "", f"YAML error: {error}")]) from None
    if root is None:
        raise ConfigError([Problem(str(path), 1, "", "the file is empty; it needs 'apps'")])

    top = reader.mapping(root, "", _TOP_KEYS)
    apps: tuple[App, ...] = ()
    destinations = _default_destinations()
    if top is not None:
        if "apps" in top:
            apps = _parse_apps(reader, *top["apps"])
        else:
            reader.problem(root, "apps", "missing: list at least one app with its app_key")
        if "destinations" in top:
            destinations = _parse_destinations(reader, top["destinations"][1], path)
        else:
            reader.problem(
                root,
                "destinations",
                "missing: set destinations.ip_ranges, destinations.cidrs "
                "or both, so the proxy knows which addresses are Chime",
            )
        if apps and "apps" in top:
            _check_header_size(reader, top["apps"][0], apps)
    if reader.problems:
        raise ConfigError(reader.problems)
    return Allowlist(path=path, apps=apps, destinations=destinations)


def load_allowlist(path: Path) -> Allowlist:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(str(path), None, "", "allowlist file not found")]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([Problem(str(path), None, "", f"cannot read: {error}")]) from None
    return parse_allowlist(text, path)


def _default_destinations() -> Destinations:
    return Destinations(None, None, DEFAULT_SERVICES, (), (), DEFAULT_MEDIA_HOSTS)


def _parse_apps(reader: _Reader, key_node: yaml.Node, node: yaml.Node) -> tuple[App, ...]:
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        reader.problem(node, "apps", "must be a non-empty list of apps, each with an app_key")
        return ()
    apps: list[App] = []
    first_seen: dict[str, int] = {}
    for index, app_node in enumerate(node.value):
        field = f"apps[{index}]"
        fields = reader.mapping(app_node, field, _APP_KEYS)
        if fields is None:
            continue
        line = app_node.start_mark.line + 1
        if "app_key" not in fields:
            reader.problem(app_node, f"{field}.app_key", "missing; every app needs its AppKey")
            continue
        app_key_node = fields["app_key"][1]
        app_key = reader.text(app_key_node, f"{field}.app_key")
        if app_key is None:
            continue
        if (why := app_key_problem(app_key)) is not None:
            reader.problem(app_key_node, f"{field}.app_key", f"{app_key!r} {why}")
            continue
        if app_key in first_seen:
            reader.problem(
                app_key_node,
                f"{field}.app_key",
                f"{app_key!r} is already listed on line {first_seen[app_key]}; "
                "merge the two entries",
            )
            continue
        first_seen[app_key] = app_key_node.start_mark.line + 1
        name = reader.text(fields["name"][1], f"{field}.name") if "name" in fields else None
        tenants = (
            _parse_tenants(reader, fields["tenants"][1], f"{field}.tenants")
            if ("tenants" in fields)
            else ()
        )
        apps.append(App(app_key=app_key, name=name, tenants=tenants, line=line))
    return tuple(apps)


def _parse_tenants(reader: _Reader, node: yaml.Node, field: str) -> tuple[str, ...]:
    items = reader.text_list(node, field)
    if items is None:
        return ()
    if not items and isinstance(node, yaml.SequenceNode) and not node.value:
        reader.problem(
            node,
            field,
            "is empty; remove 'tenants' to allow every session of this app, or list TenantIds",
        )
        return ()
    tenants: list[str] = []
    first_seen: dict[str, int] = {}
    for index, (item_node, tenant) in enumerate(items):
        item_field = f"{field}[{index}]"
        if (why := tenant_id_problem(tenant)) is not None:
            reader.problem(item_node, item_field, f"{tenant!r} {why}")
        elif tenant in first_seen:
            reader.problem(
                item_node,
                item_field,
                f"{tenant!r} is listed twice (first on line {first_seen[tenant]})",
            )
        else:
            first_seen[tenant] = item_node.start_mark.line + 1
            tenants.append(tenant)
    return tuple(tenants)


def _parse_destinations(reader: _Reader, node: yaml.Node, path: Path) -> Destinations:
    fields = reader.mapping(node, "destinations", _DESTINATION_KEYS)
    if fields is None:
        return _default_destinations()
    ip_ranges: Path | None = None
    ip_ranges_line: int | None = None
    if "ip_ranges" in fields:
        value_node = fields["ip_ranges"][1]
        text = reader.text(value_node, "destinations.ip_ranges")
        if text:
            ip_ranges = (path.parent / text).resolve()
            ip_ranges_line = value_node.start_mark.line + 1
    services = DEFAULT_SERVICES
    if "services" in fields:
        items = reader.text_list(fields["services"][1], "destinations.services")
        if items is not None:
            if not items:
                reader.problem(fields["services"][1], "destinations.services", "must not be empty")
            services = tuple(text for _, text in items)
    regions: tuple[str, ...] = ()
    if "regions" in fields:
        items = reader.text_list(fields["regions"][1], "destinations.regions")
        regions = tuple(text for _, text in items or ())
    cidrs: list[IPNetwork] = []
    if "cidrs" in fields:
        for index, (item_node, text) in enumerate(
            reader.text_list(fields["cidrs"][1], "destinations.cidrs") or ()
        ):
            network = _parse_cidr(reader, item_node, f"destinations.cidrs[{index}]", text)
            if network is not None:
                cidrs.append(network)
    media_hosts = DEFAULT_MEDIA_HOSTS
    if "media_hosts" in fields:
        items = reader.text_list(fields["media_hosts"][1], "destinations.media_hosts") or []
        for index, (item_node, pattern) in enumerate(items):
            if (why := media_host_problem(pattern)) is not None:
                reader.problem(
                    item_node, f"destinations.media_hosts[{index}]", f"{pattern!r} {why}"
                )
        media_hosts = tuple(pattern for _, pattern in items)
    if "ip_ranges" not in fields and "cidrs" not in fields:
        reader.problem(node, "destinations", "names no destination: set ip_ranges, cidrs or both")
    return Destinations(ip_ranges, ip_ranges_line, services, regions, tuple(cidrs), media_hosts)


def _parse_cidr(reader: _Reader, node: yaml.Node, field: str, text: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as error:
        hint = ""
        with contextlib.suppress(ValueError):
            hint = f"; did you mean {ipaddress.ip_network(text, strict=False)}?"
        reader.problem(node, field, f"{text!r} is not a CIDR: {error}{hint}")
        return None


def _check_header_size(reader: _Reader, apps_key_node: yaml.Node, apps: tuple[App, ...]) -> None:
    headers = build_headers((app.app_key, app.tenants) for app in apps)
    for name, size in oversized_lines(headers):
        what = "apps" if name.endswith("App-Keys") else "apps or their tenants"
        reader.problem(
            apps_key_node,
            "apps",
            f"the {name} header line would be {size:,} bytes, over the "
            f"{MAX_HEADER_LINE_BYTES:,}-byte limit; remove {what} to trim at least "
            f"{size - MAX_HEADER_LINE_BYTES:,} bytes",
        )
