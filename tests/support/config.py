"""Writing allowlist YAML files and AWS-format ``ip-ranges.json`` files for the tests."""

from __future__ import annotations

import json
import os
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

CHIME_SERVICE = "CHIME_MEETINGS"
APP_KEYS_HEADER = "X-Amzn-Chime-App-Keys"
TENANTS_HEADER = "X-Amzn-Chime-Tenants"


def write_text(path: Path, text: str, *, atomic: bool = False) -> Path:
    """Write ``text`` to ``path`` and make sure its mtime moves forward.

    ``atomic=True`` writes a sibling file and renames it over ``path`` (what many editors do);
    otherwise the file is rewritten in place. Either way the new mtime is strictly later than the
    old one, so a poller comparing mtimes cannot miss the change even on coarse timestamps.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    old_mtime = path.stat().st_mtime_ns if path.exists() else 0
    if atomic:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    else:
        with path.open("w", encoding="utf-8") as fh:
            fh.write(text)
    new_mtime = path.stat().st_mtime_ns
    if new_mtime <= old_mtime:
        bumped = max(old_mtime + 1_000_000_000, time.time_ns())
        os.utime(path, ns=(bumped, bumped))
    return path


def write_allowlist(
    directory: Path, text: str, name: str = "allowlist.yaml", *, atomic: bool = False
) -> Path:
    """Write an allowlist (``text`` is dedented, so triple-quoted literals can be indented)."""
    return write_text(directory / name, textwrap.dedent(text).lstrip("\n"), atomic=atomic)


@dataclass(frozen=True)
class Prefix:
    """One entry of an AWS ``ip-ranges.json``."""

    prefix: str
    service: str = CHIME_SERVICE
    region: str = "GLOBAL"
    network_border_group: str = "GLOBAL"


def ranges_document(
    prefixes: Sequence[Prefix | str],
    *,
    sync_token: str = "1767225600",
    create_date: str = "2026-01-01-00-00-00",
) -> dict[str, object]:
    """An AWS ``ip-ranges.json`` document; bare strings are CHIME_MEETINGS / GLOBAL prefixes."""
    v4: list[dict[str, str]] = []
    v6: list[dict[str, str]] = []
    for item in prefixes:
        entry = Prefix(item) if isinstance(item, str) else item
        common = {
            "region": entry.region,
            "service": entry.service,
            "network_border_group": entry.network_border_group,
        }
        if ":" in entry.prefix:
            v6.append({"ipv6_prefix": entry.prefix, **common})
        else:
            v4.append({"ip_prefix": entry.prefix, **common})
    return {"syncToken": sync_token, "createDate": create_date, "prefixes": v4, "ipv6_prefixes": v6}


def write_ranges(
    path: Path,
    prefixes: Sequence[Prefix | str],
    *,
    sync_token: str = "1767225600",
    atomic: bool = False,
) -> Path:
    """Write an AWS-format ranges file holding ``prefixes``."""
    document = ranges_document(prefixes, sync_token=sync_token)
    return write_text(path, json.dumps(document, indent=2) + "\n", atomic=atomic)


@dataclass(frozen=True)
class App:
    """One ``apps:`` entry."""

    app_key: str
    tenants: Sequence[str] | None = None
    name: str | None = None


@dataclass(frozen=True)
class Allowlist:
    """A whole allowlist, rendered to YAML with :meth:`render`."""

    apps: Sequence[App]
    cidrs: Sequence[str] = ()
    ip_ranges: str | None = None
    services: Sequence[str] | None = None
    regions: Sequence[str] | None = None
    extra_destination_lines: Sequence[str] = field(default_factory=tuple)
    mode: str | None = None

    def render(self) -> str:
        q = json.dumps  # a JSON string is a valid YAML flow scalar
        lines = [f"mode: {self.mode}"] if self.mode is not None else []
        lines.append("apps:")
        for app in self.apps:
            lines.append(f"  - app_key: {q(app.app_key)}")
            if app.name is not None:
                lines.append(f"    name: {q(app.name)}")
            if app.tenants is not None:
                lines.append(f"    tenants: [{', '.join(q(t) for t in app.tenants)}]")
        lines.append("destinations:")
        if self.ip_ranges is not None:
            lines.append(f"  ip_ranges: {q(self.ip_ranges)}")
        if self.services is not None:
            lines.append(f"  services: [{', '.join(q(s) for s in self.services)}]")
        if self.regions is not None:
            lines.append(f"  regions: [{', '.join(q(r) for r in self.regions)}]")
        lines.append(f"  cidrs: [{', '.join(q(c) for c in self.cidrs)}]")
        lines.extend(self.extra_destination_lines)
        return "\n".join(lines) + "\n"

    def write(self, directory: Path, name: str = "allowlist.yaml", *, atomic: bool = False) -> Path:
        return write_text(directory / name, self.render(), atomic=atomic)


AWS_CHIME_PREFIXES: tuple[str, ...] = ("99.77.128.0/18", "2600:f0f0:4100::/40")
"""The real CHIME_MEETINGS prefixes: written into ranges files as data, never contacted."""


def write_config(
    directory: Path,
    apps: Sequence[App],
    *,
    cidrs: Sequence[str] = ("127.0.0.2/32",),
    ranges: Sequence[Prefix | str] = AWS_CHIME_PREFIXES,
    services: Sequence[str] | None = None,
    regions: Sequence[str] | None = None,
    ranges_name: str = "chime-ip-ranges.json",
    mode: str | None = None,
) -> Path:
    """Write a ranges file and an allowlist naming it (relative path); return the allowlist."""
    directory.mkdir(parents=True, exist_ok=True)
    write_ranges(directory / ranges_name, ranges)
    allowlist = Allowlist(
        apps=apps,
        cidrs=cidrs,
        ip_ranges=ranges_name,
        services=services,
        regions=regions,
        mode=mode,
    )
    return allowlist.write(directory)
