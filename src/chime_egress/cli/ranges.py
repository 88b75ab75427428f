"""`chime-egress ranges lookup` and `ranges update`: the Chime ranges the proxy matches.

Addresses are matched by the proxy's own PrefixTable, and an update selects entries with the
parser that later loads them (filter_aws_ranges), checks what would change
(policy.ranges_update), then writes the snapshot atomically. A URL source is fetched over
http(s), following redirects only to https, within one deadline for the whole fetch.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import socket
import stat
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from .. import __version__
from ..errors import ConfigError
from ..policy.allowlist import Allowlist, Destinations, load_allowlist
from ..policy.compiled import Policy
from ..policy.files import MAX_RANGES_BYTES
from ..policy.ranges import (
    Prefix,
    RangesSnapshot,
    filter_aws_ranges,
    load_aws_ranges,
    parse_address,
)
from ..policy.ranges_update import MIN_PREFIX_LENGTH, prefix_key, update_concerns
from .support import (
    EXIT_INVALID,
    EXIT_NO,
    EXIT_OK,
    add_command,
    config_argument,
    config_option,
    config_path,
    epilog,
    format_argument,
    load_policy_or_report,
    plural,
    print_columns,
    print_error,
    report_problems,
    seconds,
    shown_path,
    typed,
)

# AWS's file is about 3 MB; a source far larger is not an ip-ranges.json and must not fill memory.
MAX_SOURCE_BYTES = MAX_RANGES_BYTES  # what update writes, load_aws_ranges must read back
# The whole read of the source, connecting and redirects included: a source that trickles a byte
# at a time must not hold the update (and the cron job running it) forever.
DEFAULT_DEADLINE_SECONDS = 120.0


def add_ranges_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `ranges lookup` and `ranges update` to the chime-egress command line."""
    ranges = add_command(
        commands,
        "ranges",
        summary="look up addresses in, or update, the Chime ranges",
        description="Look up addresses in the Chime ranges, or update the ranges snapshot.",
        epilog="See `chime-egress ranges lookup --help` and `chime-egress ranges update --help`.",
    )
    ranges_commands = ranges.add_subparsers(dest="ranges_command", required=True, metavar="COMMAND")
    _add_lookup(ranges_commands)
    _add_update(ranges_commands)


def _add_lookup(ranges_commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lookup = add_command(
        ranges_commands,
        "lookup",
        summary="the prefix, service and region matching each address",
        description=(
            "For each address, the prefix that makes it a Chime destination for the proxy, with\n"
            "its service and region, or 'not a Chime destination'. IPv4, IPv6 and IPv4-mapped\n"
            "IPv6 (::ffff:a.b.c.d) addresses. A host name is resolved (as the proxy does when\n"
            "it must judge a name) and each of its addresses is judged. The last argument is\n"
            "read as CONFIG when it is not an address and names an existing file or ends in\n"
            ".yaml or .yml; --config CONFIG says so explicitly."
        ),
        epilog=epilog(
            ok="every address is a Chime destination",
            invalid="invalid allowlist, or a host name that does not resolve",
            no="at least one address is not a Chime destination",
        ),
    )
    # argparse garbles the usage of a nargs="+" positional with such a metavar: say it.
    lookup.usage = (
        "chime-egress ranges lookup [-h] [--format {text,json}] [--config CONFIG]\n"
        "                                  ADDRESS|HOST [ADDRESS|HOST ...] [CONFIG]"
    )
    lookup.add_argument(
        "items", nargs="+", metavar="ADDRESS|HOST", help="IP addresses or host names"
    )
    format_argument(lookup, "json is a list with one object per address judged")
    config_option(lookup)
    lookup.set_defaults(handler=_ranges_lookup)


def _add_update(ranges_commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    update = add_command(
        ranges_commands,
        "update",
        summary="rewrite the ranges snapshot from an AWS ip-ranges.json",
        description=(
            "Read an AWS ip-ranges.json (a file, or an http(s) URL such as\n"
            "https://ip-ranges.amazonaws.com/ip-ranges.json), keep the entries of the\n"
            "allowlist's destinations.services and destinations.regions, and write them, with\n"
            "syncToken and createDate, as the snapshot the proxy reads. Prints the prefixes\n"
            "added and removed. The write is atomic (a temporary file in the same folder, then\n"
            "a rename); a running proxy picks the new file up on its next reload check.\n\n"
            "Nothing is written when the source is malformed, empty, or has no matching\n"
            "prefix, nor, unless --force, when it looks like no file AWS publishes or changes\n"
            "more than an update should unseen: a prefix wider than "
            f"/{MIN_PREFIX_LENGTH[4]} (IPv4) or /{MIN_PREFIX_LENGTH[6]} (IPv6),\n"
            "or not public unicast; the number of prefixes changing by more than half (and\n"
            "more than 4); services or regions appearing or going; a syncToken older than\n"
            "the current snapshot's, or equal to it with other prefixes; an unreadable\n"
            "current snapshot. A URL's redirects are followed to https only; the whole read\n"
            "must finish within --timeout."
        ),
        epilog=epilog(
            ok="snapshot written, or already up to date",
            invalid="invalid allowlist, unreadable or refused source; nothing written",
        ),
    )
    update.add_argument(
        "--source", required=True, metavar="FILE_OR_URL", help="an AWS ip-ranges.json"
    )
    update.add_argument(
        "--output",
        metavar="PATH",
        help="where to write (default: the allowlist's destinations.ip_ranges)",
    )
    update.add_argument(
        "--force",
        action="store_true",
        help="write the snapshot despite the checks above (never a malformed source)",
    )
    update.add_argument(
        "--timeout",
        type=typed(lambda text: seconds(text, 3600)),
        default=DEFAULT_DEADLINE_SECONDS,
        metavar="SECONDS",
        help=f"give up reading the source after this long (default: {DEFAULT_DEADLINE_SECONDS:g})",
    )
    format_argument(
        update,
        "json is one object: source, current, added, removed, unchanged, concerns and the "
        "outcome (written, up_to_date or refused, with the reason)",
    )
    config_argument(update)
    update.set_defaults(handler=_ranges_update)


# ranges lookup


def _looks_like_config(text: str) -> bool:
    return text.endswith((".yaml", ".yml")) or Path(text).expanduser().is_file()


def _ranges_lookup(args: argparse.Namespace) -> int:
    items: list[str] = list(args.items)
    config_text = args.config
    if (
        args.config_option is None
        and len(items) > 1
        and parse_address(items[-1]) is None
        and _looks_like_config(items[-1])
    ):
        config_text = items.pop()
    policy = load_policy_or_report(config_path(config_text))
    if policy is None:
        return EXIT_INVALID
    results: list[dict[str, Any]] = []
    unresolved = False
    for text in items:
        if parse_address(text) is not None:
            results.append(_judged(policy, text, None))
            continue
        addresses = _resolve(text)
        if not addresses:
            print_error(f"{text}: cannot resolve this host name (nor is it an IP address)")
            unresolved = True
        results += [_judged(policy, address, text) for address in addresses]
    if args.format == "json":
        print(json.dumps(results, indent=2))
    else:
        print_columns([_lookup_row(result) for result in results])
    if unresolved:
        return EXIT_INVALID
    return EXIT_OK if all(result["chime"] for result in results) else EXIT_NO


def _resolve(host: str) -> list[str]:
    """Every address of `host`, IPv4 and IPv6, in the resolver's order, without repeats."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))


def _judged(policy: Policy, text: str, host: str | None) -> dict[str, Any]:
    address = parse_address(text)
    assert address is not None
    prefix = policy.table.lookup(text)
    return {
        "query": host or text,
        "host": host,
        "address": text,
        "ipv4_mapped": str(address) if address.version == 4 and ":" in text else None,
        "chime": prefix is not None,
        "prefix": None if prefix is None else str(prefix.network),
        "service": None if prefix is None else prefix.service,
        "region": None if prefix is None else prefix.region,
        "origin": None if prefix is None else prefix.origin,
    }


def _lookup_row(result: dict[str, Any]) -> tuple[str, ...]:
    text = result["address"]
    shown = text
    if result["ipv4_mapped"]:
        shown = f"{text} (IPv4-mapped {result['ipv4_mapped']})"
    elif str(parse_address(text)) != text:
        shown = f"{text} ({parse_address(text)})"
    if result["host"]:
        shown = f"{result['host']} -> {shown}"
    if not result["chime"]:
        return (shown, "not a Chime destination")
    if result["origin"] == "cidrs":
        return (shown, result["prefix"], "(destinations.cidrs)")
    return (shown, result["prefix"], result["service"], result["region"])


# ranges update


class _Refused(Exception):
    """The update must not write: the message says why."""


def _ranges_update(args: argparse.Namespace) -> int:
    config = config_path(args.config)
    try:
        allowlist = load_allowlist(config)
    except ConfigError as error:
        report_problems(config, error.problems, "invalid configuration; fix it first")
        return EXIT_INVALID
    report: dict[str, Any] = {"source": {"name": args.source}, "outcome": None}
    show = print if args.format == "text" else _quiet
    try:
        report["outcome"] = _update(
            allowlist, args.source, args.output, args.force, args.timeout, report, show
        )
    except _Refused as refusal:
        print_error(f"{refusal}")
        print_error("refused; nothing written")
        report.update(outcome="refused", reason=str(refusal))
    if args.format == "json":
        print(json.dumps(report, indent=2))
    return EXIT_INVALID if report["outcome"] == "refused" else EXIT_OK


def _quiet(*_: object) -> None:
    """The text lines' printer under --format json: the one JSON object is printed at the end."""


def _update(
    allowlist: Allowlist,
    source: str,
    output_text: str | None,
    force: bool,
    deadline: float,
    report: dict[str, Any],
    show: Callable[[str], None],
) -> str:
    """Writes the snapshot (or refuses: _Refused), filling `report`; the outcome."""
    destinations = allowlist.destinations
    output = _output_path(allowlist, output_text)
    report["output"] = str(output)
    selection = f"services {list(destinations.services)}" + (
        f" in regions {list(destinations.regions)}" if destinations.regions else ""
    )
    snapshot, rendered = _selected_ranges(
        _read_within(source, deadline), source, destinations, selection
    )
    current = _current_snapshot(output, destinations.services, destinations.regions, force)
    report["source"].update(
        sync_token=snapshot.sync_token,
        create_date=snapshot.create_date,
        prefixes=len(snapshot.prefixes),
        services=list(destinations.services),
        regions=list(destinations.regions),
    )
    report["current"] = (
        None
        if current is None
        else {"sync_token": current.sync_token, "create_date": current.create_date}
    )
    show(
        f"source: {source}: syncToken {snapshot.sync_token} ({snapshot.create_date}), "
        f"{plural(len(snapshot.prefixes), 'prefix', 'prefixes')} for {selection}"
    )
    state = "none" if current is None else f"syncToken {current.sync_token} ({current.create_date})"
    show(f"current: {shown_path(output)}: {state}")
    # Shown before any refusal, so an admin sees what the refused file would have changed.
    report.update(_changes(current.prefixes if current else (), snapshot.prefixes, show))
    concerns = [f"{source}: {concern}" for concern in update_concerns(current, snapshot)]
    report["concerns"] = concerns
    if concerns and not force:
        raise _Refused("\n".join(concerns) + "\n--force writes it anyway, once you have checked")
    for concern in concerns:
        print_error(f"warning: {concern}; replacing it (--force)")
    return _write_snapshot(output, rendered, show)


def _output_path(allowlist: Allowlist, output_text: str | None) -> Path:
    if output_text is not None:
        return Path(output_text).expanduser()
    if allowlist.destinations.ip_ranges is not None:
        return allowlist.destinations.ip_ranges
    raise _Refused(f"{allowlist.path} names no destinations.ip_ranges; give --output PATH")


def _selected_ranges(
    text: str, source: str, destinations: Destinations, selection: str
) -> tuple[RangesSnapshot, str]:
    """The snapshot of the source's entries the allowlist selects, and its text as written."""
    try:
        snapshot, rendered = filter_aws_ranges(
            text, source, destinations.services, destinations.regions
        )
    except ConfigError as error:
        lines = "\n".join(str(problem) for problem in error.problems)
        raise _Refused(f"{lines}\n{source}: not a valid AWS ip-ranges.json") from None
    if not snapshot.prefixes:
        if _entry_count(text) == 0:
            raise _Refused(f"{source}: lists no prefixes at all (an empty or truncated copy?)")
        raise _Refused(f"{source}: has no prefix for {selection}")
    return snapshot, rendered


def _write_snapshot(output: Path, rendered: str, show: Callable[[str], None]) -> str:
    with contextlib.suppress(OSError):
        if output.read_text(encoding="utf-8") == rendered:
            show(f"{shown_path(output)} is already up to date; nothing written")
            return "up_to_date"
    try:
        _write_atomically(output, rendered)
    except OSError as error:
        raise _Refused(f"cannot write {output}: {error}") from None
    show(f"wrote {shown_path(output)}")
    return "written"


class _HttpsRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to https: never from https down to plain http, nor to ftp."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme.lower() != "https":
            raise _Refused(
                f"{req.full_url}: redirected ({code}) to {newurl!r}; only redirects to https "
                "are followed"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _read_within(source: str, deadline: float) -> str:
    """The source's text, read completely within `deadline` seconds, or _Refused.

    A socket timeout bounds each wait, not the whole: a source trickling a byte at a time, or a
    name that takes long to resolve, is only bounded by running the read in a thread and giving
    up on it. The thread is a daemon: the command ends, and the read with it.
    """
    outcome: list[str | BaseException] = []

    def read() -> None:
        try:
            outcome.append(_read_source(source, deadline))
        except BaseException as error:
            outcome.append(error)

    reader = threading.Thread(target=read, name="ranges source", daemon=True)
    reader.start()
    reader.join(deadline)
    if not outcome:
        raise _Refused(f"{source}: not read completely within {deadline:g} s (--timeout)")
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


def _read_source(source: str, timeout: float) -> str:
    scheme = urllib.parse.urlsplit(source).scheme.lower()
    if scheme in ("http", "https"):
        opener = urllib.request.build_opener(_HttpsRedirectsOnly)
        request = urllib.request.Request(
            source, headers={"User-Agent": f"chime-egress/{__version__}"}
        )
        try:
            with opener.open(request, timeout=timeout) as response:
                data: bytes = response.read(MAX_SOURCE_BYTES + 1)
        except urllib.error.HTTPError as error:
            raise _Refused(f"{source}: HTTP {error.code} {error.reason}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise _Refused(f"{source}: cannot fetch: {reason}") from None
    elif "://" in source:
        raise _Refused(f"{source}: only http and https URLs, or a file path, are supported")
    else:
        try:
            with Path(source).expanduser().open("rb") as file:
                data = file.read(MAX_SOURCE_BYTES + 1)
        except OSError as error:
            raise _Refused(f"{source}: cannot read: {error.strerror or error}") from None
    if len(data) > MAX_SOURCE_BYTES:
        raise _Refused(f"{source}: larger than {MAX_SOURCE_BYTES:,} bytes; not an ip-ranges.json")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _Refused(f"{source}: not UTF-8 text: {error}") from None


def _entry_count(text: str) -> int:
    document = json.loads(text)  # already parsed once by filter_aws_ranges: cannot fail here
    return sum(len(document.get(key) or ()) for key in ("prefixes", "ipv6_prefixes"))


def _current_snapshot(
    output: Path, services: Sequence[str], regions: Sequence[str], force: bool
) -> RangesSnapshot | None:
    if not output.exists():
        return None
    try:
        return load_aws_ranges(output, services, regions)
    except ConfigError as error:
        lines = "\n".join(str(problem) for problem in error.problems)
        message = f"{lines}\nthe current snapshot {output} cannot be read, so its age is unknown"
        if not force:
            raise _Refused(f"{message}; --force replaces it anyway") from None
        print_error(f"warning: {message}; replacing it (--force)")
        return None


def _changes(
    old: Sequence[Prefix], new: Sequence[Prefix], show: Callable[[str], None]
) -> dict[str, Any]:
    """The prefixes added and removed (shown as lines; returned for the JSON report)."""

    old_keys = {prefix_key(prefix) for prefix in old}
    new_keys = {prefix_key(prefix) for prefix in new}
    added = [prefix for prefix in new if prefix_key(prefix) not in old_keys]
    removed = [prefix for prefix in old if prefix_key(prefix) not in new_keys]
    print_columns(
        [
            (f"{sign} {prefix.network}", prefix.service, prefix.region)
            for sign, prefixes in (("+", added), ("-", removed))
            for prefix in prefixes
        ],
        "  ",
        show,
    )
    kept = len(new) - len(added)
    show(f"prefixes: {len(added)} added, {len(removed)} removed, {kept} unchanged")

    def listed(prefixes: list[Prefix]) -> list[dict[str, str]]:
        return [
            {"prefix": str(p.network), "service": p.service, "region": p.region} for p in prefixes
        ]

    return {"added": listed(added), "removed": listed(removed), "unchanged": kept}


def _write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and a rename: readers see old or new, whole."""
    # Through a symlink, replace its target: renaming over the link would turn it into a file.
    path = path.resolve()
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        # mkstemp makes the file private (0600); the proxy may run as another user.
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    # Make the rename itself durable; not every platform lets a folder be opened for this.
    with contextlib.suppress(OSError):
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
