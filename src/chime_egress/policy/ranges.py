"""CHIME_MEETINGS address ranges: loading AWS's ip-ranges.json and matching addresses against it.

Matching is by membership in any configured prefix, not by longest-prefix attribution across
all of AWS: the same /18 also lists smaller EC2 and Global Accelerator prefixes, and AWS tells
network owners to route "the CHIME_MEETINGS subnet" as a whole.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, Problem
from .files import MAX_RANGES_BYTES, read_text_file

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_SERVICES: tuple[str, ...] = ("CHIME_MEETINGS",)
# AWS's syncToken is a Unix time (10 digits); far longer ones are not AWS's, and Python refuses
# to turn more than 4,300 digits into a number at all.
MAX_SYNC_TOKEN_DIGITS = 20
# Every Chime service name lies under this domain (signal, media, the SDK's endpoints).
CHIME_DOMAIN = ".chime.aws"

# Addresses seen by one proxy repeat endlessly (a handful of Chime front ends); remembering
# answers makes the per-connection lookup a dict hit. Bounded so a scan cannot grow it forever.
_CACHE_LIMIT = 4096


@dataclass(frozen=True)
class Prefix:
    """One prefix that makes a destination count as Chime, and where it came from."""

    network: IPNetwork
    service: str
    region: str
    origin: str  # the ranges file, or "cidrs" for the allowlist's own extra CIDRs

    def __str__(self) -> str:
        return str(self.network)


@dataclass(frozen=True)
class RangesSnapshot:
    """The part of an AWS ip-ranges.json file that the proxy uses."""

    sync_token: str
    create_date: str
    prefixes: tuple[Prefix, ...]

    @property
    def sync_token_number(self) -> int:
        return int(self.sync_token)


def canonical_host(host: str) -> str:
    """A host name as DNS compares it: lowercase, without the root's trailing dot."""
    return host.lower().rstrip(".")


def is_chime_name(host: str) -> bool:
    return canonical_host(host).endswith(CHIME_DOMAIN)


def parse_address(text: str) -> IPAddress | None:
    """An IP address from a socket or URL host, IPv4-mapped IPv6 made IPv4; None if not an IP."""
    text = text.strip("[]").split("%", 1)[0]  # IPv6 literals in URLs, and zone ids on link-local
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class PrefixTable:
    """Answers "which configured prefix contains this address?" in a few dict lookups.

    For each address family and prefix length present, a dict maps the masked network number to
    its prefix; a lookup tries the lengths longest first, so the most specific prefix is reported.
    """

    prefixes: tuple[Prefix, ...]
    _by_length: dict[int, tuple[tuple[int, dict[int, Prefix]], ...]] = field(
        init=False, repr=False, compare=False
    )
    _cache: dict[str, Prefix | None] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        buckets: dict[int, dict[int, dict[int, Prefix]]] = {4: {}, 6: {}}
        for prefix in self.prefixes:
            network = prefix.network
            shift = network.max_prefixlen - network.prefixlen
            key = int(network.network_address) >> shift
            # The first listed wins when a prefix is listed twice (file before cidrs).
            buckets[network.version].setdefault(network.prefixlen, {}).setdefault(key, prefix)
        by_length = {
            version: tuple(
                (max_len - length, table) for length, table in sorted(lengths.items(), reverse=True)
            )
            for version, lengths, max_len in ((4, buckets[4], 32), (6, buckets[6], 128))
        }
        object.__setattr__(self, "_by_length", by_length)

    def __len__(self) -> int:
        return len(self.prefixes)

    def lookup(self, address: str) -> Prefix | None:
        """The most specific prefix holding `address` (an IP literal), or None."""
        try:
            return self._cache[address]
        except KeyError:
            pass
        parsed = parse_address(address)
        found = self.lookup_ip(parsed) if parsed is not None else None
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[address] = found
        return found

    def lookup_ip(self, address: IPAddress) -> Prefix | None:
        number = int(address)
        for shift, table in self._by_length[address.version]:
            found = table.get(number >> shift)
            if found is not None:
                return found
        return None


def _problem(path: str, field_name: str, message: str, line: int | None = None) -> Problem:
    return Problem(path=path, line=line, field=field_name, message=message)


def load_aws_ranges(
    path: Path,
    services: Iterable[str] | None = DEFAULT_SERVICES,
    regions: Iterable[str] = (),
) -> RangesSnapshot:
    """Read an AWS ip-ranges.json and keep the entries of `services` (None: all) and `regions`."""
    text = read_text_file(path, "ranges", MAX_RANGES_BYTES)
    return parse_aws_ranges(text, str(path), services, regions)


def parse_aws_ranges(
    text: str,
    path: str,
    services: Iterable[str] | None = DEFAULT_SERVICES,
    regions: Iterable[str] = (),
) -> RangesSnapshot:
    return _parse_aws_ranges(text, path, services, regions)[0]


def filter_aws_ranges(
    text: str,
    path: str,
    services: Iterable[str] | None = DEFAULT_SERVICES,
    regions: Iterable[str] = (),
) -> tuple[RangesSnapshot, str]:
    """Parse as parse_aws_ranges does, and render the selection as a snapshot file to write.

    The snapshot stays in AWS's own format with each selected entry exactly as the source wrote
    it (network_border_group included), so the selection is made by the very code the proxy
    loads with, and AWS's tools can still read the file.
    """
    snapshot, document = _parse_aws_ranges(text, path, services, regions)
    return snapshot, json.dumps(document, indent=2) + "\n"


def _parse_aws_ranges(
    text: str,
    path: str,
    services: Iterable[str] | None,
    regions: Iterable[str],
) -> tuple[RangesSnapshot, dict[str, Any]]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        message = f"not valid JSON: {error.msg} (column {error.colno})"
        raise ConfigError([_problem(path, "", message, error.lineno)]) from None
    except RecursionError:
        message = "not an AWS ip-ranges file: arrays or objects nested too deeply to read"
        raise ConfigError([_problem(path, "", message)]) from None
    except ValueError:  # json.loads' only other error: an integer Python will not convert
        message = "not an AWS ip-ranges file: a number of more than 4,300 digits"
        raise ConfigError([_problem(path, "", message)]) from None
    if not isinstance(document, dict):
        raise ConfigError([_problem(path, "", "expected a JSON object like AWS's ip-ranges.json")])

    problems: list[Problem] = []
    sync_token = document.get("syncToken")
    if not (isinstance(sync_token, str | int) and _is_decimal(str(sync_token))):
        problems.append(_problem(path, "syncToken", "missing, or not a number in a string"))
    elif len(str(sync_token)) > MAX_SYNC_TOKEN_DIGITS:
        problems.append(
            _problem(
                path,
                "syncToken",
                f"{len(str(sync_token))} digits; AWS's is a Unix time "
                f"(at most {MAX_SYNC_TOKEN_DIGITS} digits accepted)",
            )
        )
    create_date = document.get("createDate", "")
    if not isinstance(create_date, str):
        problems.append(_problem(path, "createDate", "must be a string"))

    wanted_services = None if services is None else frozenset(services)
    wanted_regions = frozenset(regions)
    prefixes: list[Prefix] = []
    selected: dict[str, Any] = {"syncToken": sync_token}
    if "createDate" in document:
        selected["createDate"] = create_date
    for list_key, prefix_key in (("prefixes", "ip_prefix"), ("ipv6_prefixes", "ipv6_prefix")):
        entries = document.get(list_key, [])
        selected[list_key] = []
        if not isinstance(entries, list):
            problems.append(_problem(path, list_key, "must be a list"))
            continue
        for prefix, entry in _select_entries(
            entries, list_key, prefix_key, path, wanted_services, wanted_regions, problems
        ):
            prefixes.append(prefix)
            selected[list_key].append(entry)
    if "prefixes" not in document and "ipv6_prefixes" not in document:
        problems.append(_problem(path, "prefixes", "missing: this is not an AWS ip-ranges file"))
    if problems:
        raise ConfigError(problems)
    return RangesSnapshot(str(sync_token), str(create_date), tuple(prefixes)), selected


def _select_entries(
    entries: Sequence[Any],
    list_key: str,
    prefix_key: str,
    path: str,
    services: frozenset[str] | None,
    regions: frozenset[str],
    problems: list[Problem],
) -> list[tuple[Prefix, Any]]:
    """The (prefix, entry as written) pairs of the wanted services and regions."""
    selected: list[tuple[Prefix, Any]] = []
    for index, entry in enumerate(entries):
        where = f"{list_key}[{index}]"
        if not isinstance(entry, dict):
            problems.append(_problem(path, where, "must be an object"))
            continue
        service = entry.get("service")
        region = entry.get("region")
        if not isinstance(service, str) or not isinstance(region, str):
            problems.append(_problem(path, where, "needs string 'service' and 'region'"))
            continue
        if services is not None and service not in services:
            continue
        if regions and region not in regions:
            continue
        version = 4 if prefix_key == "ip_prefix" else 6
        try:
            network = _entry_network(entry.get(prefix_key), version)
        except ValueError as error:
            problems.append(_problem(path, f"{where}.{prefix_key}", str(error)))
            continue
        selected.append((Prefix(network, service, region, path), entry))
    return selected


def _entry_network(raw: object, version: int) -> IPNetwork:
    """An entry's prefix text as a network of `version`; ValueError saying what is wrong."""
    if isinstance(raw, str):
        network = _fast_network(raw, version) or ipaddress.ip_network(raw, strict=True)
        if network.version == version:
            return network
    raise ValueError(f"must be an IPv{version} prefix")


def _fast_network(text: str, version: int) -> IPNetwork | None:
    """`text` as a network of `version`, or None to let ipaddress parse it and explain why not.

    AWS's full file has about 17,000 prefixes; parsing their text with the C socket functions
    instead of ipaddress's string parser keeps loading it well under the 200 ms goal.
    """
    address, slash, length = text.partition("/")
    if not (slash and length.isascii() and length.isdigit()):
        return None
    family, network_class = (
        (socket.AF_INET, ipaddress.IPv4Network)
        if version == 4
        else (socket.AF_INET6, ipaddress.IPv6Network)
    )
    try:
        number = int.from_bytes(socket.inet_pton(family, address), "big")
        return network_class((number, int(length)))  # strict: host bits set raise ValueError
    except (OSError, ValueError):
        return None


def _is_decimal(text: str) -> bool:
    # str.isdigit alone also accepts digits like "²" that int() and float() refuse.
    return text.isascii() and text.isdigit()
