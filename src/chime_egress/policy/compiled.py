"""The compiled, immutable policy the proxy runs on: allowlist + ranges + ready-made headers.

A Policy is built completely (files read, prefixes indexed, headers rendered) before it is
published, and published by replacing one reference, so a request always sees one whole
configuration, old or new, never a mix.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, Problem, plural
from .allowlist import ENFORCE, Allowlist, header_input, load_allowlist
from .client_policy import ClientPolicies, compile_client_policies
from .headers import ChimeHeaders, build_headers
from .media import MediaHosts
from .ranges import Prefix, PrefixTable, RangesSnapshot, load_aws_ranges

# (device, inode, size, mtime in ns) of each watched file; None where the file is missing.
FilesSignature = tuple[tuple[int, int, int, int] | None, ...]


@dataclass(frozen=True)
class Policy:
    allowlist: Allowlist
    ranges: RangesSnapshot | None
    table: PrefixTable
    headers: ChimeHeaders  # of the top-level apps (empty values when there are none)
    media_hosts: MediaHosts
    # Fingerprints of the source files taken just before each was read: an edit made during or
    # after the read leaves the files different from this, so the watcher cannot miss it.
    loaded_signature: FilesSignature
    # Mode and rendered headers per client network; the top-level settings are the default.
    clients: ClientPolicies

    @property
    def sources(self) -> tuple[Path, ...]:
        """Files whose change means the policy must be rebuilt."""
        ranges_file = self.allowlist.destinations.ip_ranges
        files = (
            (self.allowlist.path,) if ranges_file is None else (self.allowlist.path, ranges_file)
        )
        return files + _identity_files(self.allowlist)

    def summary(self) -> str:
        apps = self.allowlist.apps
        tenants = sum(len(app.tenants) for app in apps)
        token = f", ranges syncToken {self.ranges.sync_token}" if self.ranges else ""
        text = (
            f"{plural(len(apps), 'app')}, {plural(tenants, 'tenant')}, "
            f"{plural(len(self.table), 'prefix', 'prefixes')}{token}"
        )
        if self.allowlist.mode != ENFORCE:
            text += f"; mode {self.allowlist.mode}"
        if identities := self.clients.identities:
            text += "; identities " + ", ".join(f"{i.name} ({i.mode})" for i in identities)
        if networks := self.clients.networks:
            text += "; networks " + ", ".join(f"{n.name} ({n.mode})" for n in networks)
        return text


def load_policy(allowlist_path: Path) -> Policy:
    """Read the allowlist and the ranges file it names; raises ConfigError naming file and line."""
    signature = files_signature((allowlist_path,))
    started = time.time_ns()
    allowlist = load_allowlist(allowlist_path)
    destinations = allowlist.destinations
    ranges: RangesSnapshot | None = None
    prefixes: list[Prefix] = []
    if destinations.ip_ranges is not None:
        signature += files_signature((destinations.ip_ranges,))
        ranges = _load_ranges(allowlist)
        prefixes.extend(ranges.prefixes)
    prefixes.extend(Prefix(network, "cidrs", "", "cidrs") for network in destinations.cidrs)
    signature += _read_signature(_identity_files(allowlist), started)
    headers = build_headers(header_input(allowlist.apps))
    return Policy(
        allowlist=allowlist,
        ranges=ranges,
        table=PrefixTable(tuple(prefixes)),
        headers=headers,
        media_hosts=MediaHosts(destinations.media_hosts),
        loaded_signature=signature,
        clients=compile_client_policies(allowlist),
    )


def _load_ranges(allowlist: Allowlist) -> RangesSnapshot:
    destinations = allowlist.destinations
    assert destinations.ip_ranges is not None
    where = (str(allowlist.path), destinations.ip_ranges_line, "destinations.ip_ranges")
    try:
        ranges = load_aws_ranges(
            destinations.ip_ranges, destinations.services, destinations.regions
        )
    except ConfigError as error:
        raise ConfigError(Problem(*where, str(problem)) for problem in error.problems) from None
    if not ranges.prefixes:
        regions = f" in regions {list(destinations.regions)}" if destinations.regions else ""
        raise ConfigError(
            [
                Problem(
                    *where,
                    f"{destinations.ip_ranges} has no prefix for services "
                    f"{list(destinations.services)}{regions}; check the file, "
                    "destinations.services and destinations.regions",
                )
            ]
        )
    return ranges


def _identity_files(allowlist: Allowlist) -> tuple[Path, ...]:
    return allowlist.identity.files if allowlist.identity is not None else ()


def _read_signature(paths: tuple[Path, ...], started_ns: int) -> FilesSignature:
    """Fingerprints of files already read: one changed while they were read counts as unread.

    These files are named by the allowlist, so they cannot be fingerprinted before they are
    read; a file edited while it was read gets a fingerprint no file has, so it is read again.
    """
    finished_ns = time.time_ns()
    return tuple(
        None if entry is None or started_ns <= entry[3] <= finished_ns else entry
        for entry in files_signature(paths)
    )


def files_signature(paths: tuple[Path, ...]) -> FilesSignature:
    """A cheap fingerprint of files, changed by edits, atomic renames and truncation alike."""
    signature: list[tuple[int, int, int, int] | None] = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            signature.append(None)
            continue
        signature.append((stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(signature)
