"""The allowlist file: its model, and a parser that names file, line and field for every mistake.

The parser walks PyYAML's node tree instead of the constructed objects, because only nodes keep
line numbers, and because PyYAML silently keeps the last of two duplicate keys: a duplicated
`tenants:` would otherwise widen or narrow a policy without anyone noticing.
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import ConfigError, Problem
from .files import MAX_ALLOWLIST_BYTES, read_text_file
from .headers import MAX_HEADER_LINE_BYTES, build_headers, oversized_lines
from .identifiers import app_key_problem, tenant_id_problem
from .identity import IdentityEntry, IdentitySettings
from .media import DEFAULT_MEDIA_HOSTS, media_host_problem
from .ranges import DEFAULT_SERVICES, IPNetwork
from .source_text import yaml_problems

_NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")

_NULL_TAG = "tag:yaml.org,2002:null"
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

ENFORCE = "enforce"
OBSERVE = "observe"
MODES = (ENFORCE, OBSERVE)
DEFAULT_NETWORK_NAME = "default"  # the top-level settings, in logs and metric labels


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
class Network:
    """Clients (by source address) that get their own mode and, optionally, their own apps."""

    name: str
    clients: tuple[IPNetwork, ...]
    mode: str
    apps: tuple[App, ...] | None  # None: the top-level apps
    line: int


@dataclass(frozen=True)
class Allowlist:
    path: Path
    apps: tuple[App, ...]
    destinations: Destinations
    mode: str = ENFORCE
    networks: tuple[Network, ...] = ()
    # Who is asking: the `identity:` sources and the `identities` entries (chosen before networks).
    identity: IdentitySettings | None = None
    identities: tuple[IdentityEntry, ...] = ()
    # Legal but worth a look (a network that partly hides another); shown by validate and logged.
    warnings: tuple[Problem, ...] = ()


def header_input(apps: tuple[App, ...]) -> list[tuple[str, tuple[str, ...]]]:
    return [(app.app_key, app.tenants) for app in apps]


def _line(node: yaml.Node) -> int:
    """The 1-based line a node starts on (PyYAML counts from 0)."""
    return int(node.start_mark.line) + 1


def _did_you_mean(text: str, choices: tuple[str, ...]) -> str:
    hint = difflib.get_close_matches(text, choices, n=1)
    return f"; did you mean {hint[0]!r}?" if hint else ""


class _Reader:
    """Turns YAML nodes into values, recording a Problem (with the node's line) for each mistake."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []

    def problem(self, node: yaml.Node, field: str, message: str) -> None:
        self.problems.append(Problem(self.path, _line(node), field, message))

    def warning(self, node: yaml.Node, field: str, message: str) -> None:
        self.warnings.append(Problem(self.path, _line(node), field, message))

    def choice(self, node: yaml.Node, field: str, choices: tuple[str, ...]) -> str | None:
        text = self.text(node, field)
        if text is not None and text not in choices:
            suggestion = _did_you_mean(text, choices)
            self.problem(node, field, f"{text!r} is not one of {', '.join(choices)}{suggestion}")
            return None
        return text

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
                suggestion = _did_you_mean(str(key), allowed)
                self.problem(
                    key_node,
                    key_field,
                    f"unknown key {key!r}{suggestion} (allowed: {', '.join(allowed)})",
                )
                continue
            if key in found:
                first_line = _line(found[key][0])
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


# The deepest a valid allowlist goes is 4 (networks[].apps[].tenants[]); this leaves room for
# YAML written in flow style and refuses what would exhaust the composer's recursion.
MAX_NESTING = 16

_TOP_KEYS = ("mode", "apps", "identity", "identities", "networks", "destinations")
_NETWORK_KEYS = ("name", "clients", "mode", "apps")
_APP_KEYS = ("app_key", "name", "tenants")
_DESTINATION_KEYS = ("ip_ranges", "services", "regions", "cidrs", "media_hosts")


def parse_allowlist(text: str, path: Path) -> Allowlist:
    """Parse and validate allowlist YAML; raises ConfigError listing every problem found."""
    reader = _Reader(path)
    try:
        _check_nesting(text, path)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        raise ConfigError(yaml_problems(error, text, str(path))) from None
    if root is None:
        raise ConfigError([Problem(str(path), 1, "", "the file is empty; it needs 'apps'")])

    top = reader.mapping(root, "", _TOP_KEYS)
    apps: tuple[App, ...] = ()
    mode: str | None = ENFORCE
    networks: tuple[Network, ...] = ()
    identity: IdentitySettings | None = None
    identities: tuple[IdentityEntry, ...] = ()
    destinations = _default_destinations()
    if top is not None:
        if "mode" in top:
            mode = reader.choice(top["mode"][1], "mode", MODES)  # None: already reported
        if "apps" in top:
            apps = _parse_apps(reader, top["apps"][1], "apps")
        elif mode == ENFORCE:
            reader.problem(
                root,
                "apps",
                "missing: list at least one app with its app_key (or set 'mode: observe' to "
                "watch the traffic before enforcing)",
            )
        if "networks" in top:
            networks = _parse_networks(reader, top["networks"][1], has_default_apps=bool(apps))
        if "destinations" in top:
            destinations = _parse_destinations(reader, top["destinations"][1], path)
        else:
            reader.problem(
                root,
                "destinations",
                "missing: set destinations.ip_ranges, destinations.cidrs "
                "or both, so the proxy knows which addresses are Chime",
            )
        if apps:
            _check_header_size(reader, top["apps"][0], apps, "apps")
        identity, identities = _parse_identity_sections(reader, top, path, networks, bool(apps))
    if reader.problems:
        raise ConfigError(reader.problems)
    return Allowlist(
        path=path,
        apps=apps,
        destinations=destinations,
        mode=mode or ENFORCE,
        networks=networks,
        identity=identity,
        identities=identities,
        warnings=tuple(reader.warnings),
    )


_ALLOWLIST_NESTING = (
    "an allowlist needs at most 5 (apps, networks and destinations hold lists of entries)"
)


def _check_nesting(text: str, path: Path, needs: str = _ALLOWLIST_NESTING) -> None:
    """Refuse nesting no such file needs, before PyYAML's recursive composer meets it.

    The event parser is iterative, so even a file of a million '[' is read to its end here,
    while composing it would exhaust Python's recursion limit.
    """
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_NESTING:
                line = event.start_mark.line + 1 if event.start_mark else None
                raise ConfigError(
                    [
                        Problem(
                            str(path),
                            line,
                            "",
                            f"nested more than {MAX_NESTING} levels deep; {needs}",
                        )
                    ]
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _parse_identity_sections(
    reader: _Reader,
    top: dict[str, tuple[yaml.Node, yaml.Node]],
    path: Path,
    networks: tuple[Network, ...],
    has_default_apps: bool,
) -> tuple[IdentitySettings | None, tuple[IdentityEntry, ...]]:
    # Imported here: identity_config builds on this module's reader and app parser.
    from .identity_config import parse_identities, parse_identity

    settings = parse_identity(reader, top["identity"][1], path) if "identity" in top else None
    if "identities" not in top:
        return settings, ()
    identities = parse_identities(
        reader,
        top["identities"][1],
        settings=settings,
        identity_given="identity" in top,
        has_default_apps=has_default_apps,
        taken_names={network.name: network.line for network in networks},
    )
    return settings, identities


def load_allowlist(path: Path) -> Allowlist:
    return parse_allowlist(read_text_file(path, "allowlist", MAX_ALLOWLIST_BYTES), path)


def _default_destinations() -> Destinations:
    return Destinations(None, None, DEFAULT_SERVICES, (), (), DEFAULT_MEDIA_HOSTS)


def _parse_apps(reader: _Reader, node: yaml.Node, where: str) -> tuple[App, ...]:
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        reader.problem(node, where, "must be a non-empty list of apps, each with an app_key")
        return ()
    apps: list[App] = []
    first_seen: dict[str, int] = {}
    for index, app_node in enumerate(node.value):
        field = f"{where}[{index}]"
        fields = reader.mapping(app_node, field, _APP_KEYS)
        if fields is None:
            continue
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
        first_seen[app_key] = _line(app_key_node)
        name = reader.text(fields["name"][1], f"{field}.name") if "name" in fields else None
        if name is not None and (control := _CONTROL.search(name)):
            # A name is printed in log lines and on the check page: an escape would garble them.
            reader.problem(
                fields["name"][1],
                f"{field}.name",
                f"contains the control character U+{ord(control.group()):04X}; remove it",
            )
            name = None
        tenants = (
            _parse_tenants(reader, fields["tenants"][1], f"{field}.tenants")
            if ("tenants" in fields)
            else ()
        )
        apps.append(App(app_key=app_key, name=name, tenants=tenants, line=_line(app_node)))
    return tuple(apps)


def _parse_tenants(reader: _Reader, node: yaml.Node, field: str) -> tuple[str, ...]:
    items = reader.text_list(node, field)
    if items is None:
        return ()
    if not node.value:  # a list (text_list said so), but an empty one
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
            first_seen[tenant] = _line(item_node)
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
        if text == "":  # would name no file, yet count as a destination
            reader.problem(
                value_node,
                "destinations.ip_ranges",
                "is empty; name the AWS ip-ranges.json file, or remove it",
            )
        elif text:
            ip_ranges = (path.parent / text).resolve()
            ip_ranges_line = _line(value_node)
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
    """The range, or None (and a problem reported) for what is not one, or could never match.

    Addresses are matched in their IPv4 form even when they arrive IPv4-mapped (a client on a
    dual-stack socket, a destination written ::ffff:a.b.c.d), so a mapped range would silently
    match nobody: a destination would pass through without the headers, a parent proxy's
    identity header would be ignored.
    """
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as error:
        hint = ""
        with contextlib.suppress(ValueError):
            hint = f"; did you mean {ipaddress.ip_network(text, strict=False)}?"
        reader.problem(node, field, f"{text!r} is not a CIDR: {error}{hint}")
        return None
    if isinstance(network, ipaddress.IPv6Network) and (
        mapped := network.network_address.ipv4_mapped
    ):
        reader.problem(
            node,
            field,
            f"{text!r} is an IPv4-mapped IPv6 range; write it as IPv4 "
            f"({mapped}/{max(network.prefixlen - 96, 0)})",
        )
        return None
    return network


def _check_header_size(
    reader: _Reader, apps_key_node: yaml.Node, apps: tuple[App, ...], field: str
) -> None:
    headers = build_headers(header_input(apps))
    for name, size in oversized_lines(headers):
        what = "apps" if name.endswith("App-Keys") else "apps or their tenants"
        reader.problem(
            apps_key_node,
            field,
            f"the {name} header line would be {size:,} bytes, over the "
            f"{MAX_HEADER_LINE_BYTES:,}-byte limit; remove {what} to trim at least "
            f"{size - MAX_HEADER_LINE_BYTES:,} bytes",
        )


def _parse_networks(
    reader: _Reader, node: yaml.Node, *, has_default_apps: bool
) -> tuple[Network, ...]:
    if not isinstance(node, yaml.SequenceNode):
        reader.problem(node, "networks", "must be a list of networks, each with name and clients")
        return ()
    networks: list[Network] = []
    names: dict[str, int] = {}
    # (range, its field, its line, index of its network): earlier entries win, so each range is
    # checked against all those before it.
    seen: list[tuple[IPNetwork, str, int, int]] = []
    for index, network_node in enumerate(node.value):
        field = f"networks[{index}]"
        fields = reader.mapping(network_node, field, _NETWORK_KEYS)
        if fields is None:
            continue
        name = _network_name(reader, fields, network_node, field, names)
        mode, apps = _entry_mode_and_apps(
            reader, fields, network_node, field, has_default_apps, "these clients"
        )
        clients = _network_clients(reader, fields, network_node, field, index, seen)
        if name is not None and mode is not None and clients:
            networks.append(Network(name, clients, mode, apps, _line(network_node)))
    return tuple(networks)


def _entry_mode_and_apps(
    reader: _Reader,
    fields: dict[str, tuple[yaml.Node, yaml.Node]],
    node: yaml.Node,
    field: str,
    has_default_apps: bool,
    whom: str,
) -> tuple[str | None, tuple[App, ...] | None]:
    """An entry's `mode` (None: missing or invalid, reported) and `apps` (None: the top level's)."""
    mode: str | None = None
    if "mode" in fields:
        mode = reader.choice(fields["mode"][1], f"{field}.mode", MODES)
    else:
        reader.problem(node, f"{field}.mode", f"missing: say 'enforce' or 'observe' for {whom}")
    apps: tuple[App, ...] | None = None
    if "apps" in fields:
        apps = _parse_apps(reader, fields["apps"][1], f"{field}.apps")
        if apps:
            _check_header_size(reader, fields["apps"][0], apps, f"{field}.apps")
    elif mode == ENFORCE and not has_default_apps:
        reader.problem(
            node,
            f"{field}.apps",
            "missing: mode enforce needs apps, listed here or at the top level",
        )
    return mode, apps


def _network_name(
    reader: _Reader,
    fields: dict[str, tuple[yaml.Node, yaml.Node]],
    network_node: yaml.Node,
    field: str,
    names: dict[str, int],
    what: str = "network",
) -> str | None:
    """The entry's name, unique among `names` (networks and identities share them)."""
    if "name" not in fields:
        reader.problem(
            network_node, f"{field}.name", f"missing: name the {what} (for logs and metrics)"
        )
        return None
    name_node = fields["name"][1]
    name = reader.text(name_node, f"{field}.name")
    if name is None:
        return None
    if not _NAME_PATTERN.fullmatch(name):
        reader.problem(
            name_node,
            f"{field}.name",
            f"{name!r} must be 1-64 letters, digits, '.', '_' or '-'",
        )
        return None
    if name == DEFAULT_NETWORK_NAME:
        reader.problem(
            name_node,
            f"{field}.name",
            f"{name!r} is reserved for the top-level settings; choose another name",
        )
        return None
    if name in names:
        reader.problem(
            name_node, f"{field}.name", f"{name!r} is already used on line {names[name]}"
        )
        return None
    names[name] = _line(name_node)
    return name


def _network_clients(
    reader: _Reader,
    fields: dict[str, tuple[yaml.Node, yaml.Node]],
    network_node: yaml.Node,
    field: str,
    index: int,
    seen: list[tuple[IPNetwork, str, int, int]],
) -> tuple[IPNetwork, ...]:
    if "clients" not in fields:
        reader.problem(
            network_node,
            f"{field}.clients",
            "missing: list the client address ranges, for example [10.20.0.0/16]",
        )
        return ()
    clients_node = fields["clients"][1]
    items = reader.text_list(clients_node, f"{field}.clients")
    if items is not None and not items:  # text_list returns a list only for a list node
        reader.problem(clients_node, f"{field}.clients", "is empty; list at least one range")
    clients: list[IPNetwork] = []
    for position, (item_node, text) in enumerate(items or ()):
        item_field = f"{field}.clients[{position}]"
        network = _parse_cidr(reader, item_node, item_field, text)
        if network is None:
            continue
        _report_overlaps(reader, item_node, item_field, network, index, seen)
        seen.append((network, item_field, _line(item_node), index))
        clients.append(network)
    return tuple(clients)


def _report_overlaps(
    reader: _Reader,
    node: yaml.Node,
    field: str,
    network: IPNetwork,
    index: int,
    seen: list[tuple[IPNetwork, str, int, int]],
) -> None:
    """First match wins: a range inside earlier ones is dead; one around an earlier is legal."""
    inner: list[tuple[IPNetwork, str, int]] = []  # earlier, more specific ranges of other entries
    for earlier, earlier_field, earlier_line, earlier_index in seen:
        if earlier.version != network.version or not earlier.overlaps(network):
            continue
        where = f"{earlier} ({earlier_field}, line {earlier_line})"
        if network.subnet_of(earlier):  # type: ignore[arg-type]
            if earlier_index == index:
                message = f"{network} is already covered by {where}; remove one"
            else:
                message = (
                    f"{network} lies inside {where}, which comes first, so this entry never "
                    "applies to those clients; move it above, or remove it"
                )
            reader.problem(node, field, message)
            return
        if earlier_index == index:
            reader.problem(node, field, f"{network} covers {where}; remove one")
            return
        # CIDR blocks nest or are disjoint: the earlier one is the more specific here.
        inner.append((earlier, where, earlier_index))
    if inner and not _remainder(network, [earlier for earlier, _, _ in inner]):
        listed = "; ".join(where for _, where, _ in inner)
        reader.problem(
            node,
            field,
            f"{network} is wholly covered by earlier entries ({listed}), which come first, so "
            "this entry never applies to those clients; move it above, or remove it",
        )
        return
    for earlier, where, earlier_index in inner:
        reader.warning(
            node,
            field,
            f"{network} contains {where}, which comes first: clients in {earlier} get "
            f"networks[{earlier_index}]",
        )


def _remainder(network: IPNetwork, taken: list[IPNetwork]) -> list[IPNetwork]:
    """The parts of `network` outside every range of `taken` (each of which lies inside it)."""
    pieces = [network]
    for excluded in taken:
        kept: list[IPNetwork] = []
        for piece in pieces:
            if not piece.overlaps(excluded):
                kept.append(piece)
            elif not piece.subnet_of(excluded):  # type: ignore[arg-type]
                kept.extend(piece.address_exclude(excluded))  # type: ignore[arg-type]
        pieces = kept
    return pieces
