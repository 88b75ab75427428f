"""`chime-egress`: the admin's command line, on the very code the proxy runs.

Every answer comes from the proxy's own modules: an allowlist is checked by load_policy (so the
messages are the proxy's, word for word), headers come from the compiled Policy, addresses are
matched by its PrefixTable, and a ranges update selects entries with the parser that later loads
them; the PAC file and firewall rules list the PrefixTable's own prefixes (`deploy`). Nothing
here imports mitmproxy, so the command runs wherever the package is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import stat
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from ..deploy import addresses
from ..deploy.health import probe_proxy
from ..deploy.nftables import DEFAULT_REDIRECT_PORTS, render_nftables
from ..deploy.pac import DEFAULT_PAC_HOSTS, render_pac
from ..errors import ConfigError, Problem
from ..policy.allowlist import Allowlist, App, load_allowlist
from ..policy.client_policy import ClientPolicy
from ..policy.compiled import Policy, load_policy
from ..policy.headers import APP_KEYS_HEADER, MAX_HEADER_LINE_BYTES, TENANTS_HEADER, ChimeHeaders
from ..policy.ranges import (
    Prefix,
    RangesSnapshot,
    filter_aws_ranges,
    load_aws_ranges,
    parse_address,
)
from ..policy.verdict import (
    BOTH_MUST_ACCEPT,
    RULES,
    InvalidSession,
    MalformedHeader,
    Session,
    Verdict,
    judge,
)
from .csp import add_csp_commands
from .observed import summarize
from .support import HelpFormatter, add_command, print_error, typed

DEFAULT_CONFIG = "config/allowlist.yaml"


EXIT_OK = 0
EXIT_INVALID = 1  # invalid allowlist, malformed header value, unreadable input, refused update
EXIT_USAGE = 2  # argparse's own code for a bad command line
EXIT_NO = 3  # the answer is "no": Chime answers 403, or an address is not a Chime destination

# AWS's file is about 3 MB; a source far larger is not an ip-ranges.json and must not fill memory.
MAX_SOURCE_BYTES = 64 * 1024 * 1024
URL_TIMEOUT_SECONDS = 60

# Past this many prefixes (a config selecting, say, all of AMAZON) the text summary only counts.
SUMMARY_PREFIX_LIMIT = 10

_EXIT_CODES = """\
exit codes:
  0  success{ok}
  1  {invalid}
  2  usage error (bad command line)"""


def _epilog(
    ok: str = "", invalid: str = "invalid allowlist (every problem on stderr)", no: str = ""
) -> str:
    text = _EXIT_CODES.format(ok=f": {ok}" if ok else "", invalid=invalid)
    return f"{text}\n  3  {no}" if no else text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chime-egress",
        formatter_class=HelpFormatter,
        description=(
            "Check and explain a chime-egress allowlist with the proxy's own code: what the\n"
            "proxy will send, what Chime will decide, and which addresses are Chime's; print\n"
            "what routes exactly those addresses to the proxy (a PAC file, firewall rules);\n"
            "check that a running proxy answers."
        ),
        epilog=(
            "CONFIG is the allowlist, config/allowlist.yaml by default.\n\n"
            "exit codes (see each command's --help):\n"
            "  0  success\n"
            "  1  invalid allowlist or input, or a refused update\n"
            "  2  usage error (bad command line)\n"
            "  3  the answer is no: Chime would answer 403 (explain), or an address is not\n"
            "     a Chime destination (ranges lookup)"
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = add_command(
        commands,
        "validate",
        summary="check an allowlist exactly as the proxy would",
        description=(
            "Check an allowlist and the ranges file it names exactly as the proxy does at start\n"
            "and on reload, with the same messages (file, line and field). Every problem goes\n"
            "to stderr; on success a summary goes to stdout."
        ),
        epilog=_epilog(ok="the allowlist is valid"),
    )
    validate.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="stdout format; json is one object with 'valid' and 'problems' (default: text)",
    )
    _config_argument(validate)
    validate.set_defaults(handler=_validate)

    headers = add_command(
        commands,
        "headers",
        summary="print the exact header lines the proxy sends",
        description=(
            "Print the header lines the proxy adds to every request bound for Chime, byte for\n"
            "byte (HTTP/2 sends the same values under lowercase names): those of the top-level\n"
            "settings, or with --client those of that client's network. Nothing is printed\n"
            "for clients in observe mode (a note says so on stderr)."
        ),
        epilog=_epilog(ok="headers printed"),
    )
    headers.add_argument(
        "--client",
        metavar="ADDRESS",
        type=typed(_client_address),
        help="the client's IP address: the headers of its network",
    )
    _config_argument(headers)
    headers.set_defaults(handler=_headers)

    explain = add_command(
        commands,
        "explain",
        summary="say whether Chime accepts a meeting session, and by which rule",
        description=(
            "Say whether Chime accepts or refuses (403) a meeting session created by the app\n"
            "with AppKey KEY and TenantIds ID..., given the headers the proxy sends, and which\n"
            "of the rules of AWS's guide 'Using AppKeys and TenantIDs' decided.\n\n"
            "  explain [--client ADDRESS] --app-key KEY [--tenant ID ...] [CONFIG]\n"
            "      the headers of an allowlist (for the network of client ADDRESS)\n"
            "  explain --app-keys-header V [--tenants-header V] --app-key KEY [--tenant ID ...]\n"
            "      raw header values (from a capture or another proxy); a header not given is\n"
            "      taken as not sent\n"
            "  explain [--client ADDRESS] [CONFIG]\n"
            "      every app of the allowlist, with and without a matching tenant, and an app\n"
            "      that is not listed\n\n"
            "With --client, the settings are those the proxy applies to that client address:\n"
            "the first 'networks' entry holding it, else the top level. In observe mode the\n"
            "proxy sends no headers, so Chime accepts every session."
        ),
        epilog=_epilog(
            ok="Chime accepts (always 0 without --app-key)",
            invalid="invalid allowlist, malformed header value, or impossible session",
            no="Chime answers 403",
        ),
    )
    explain.add_argument(
        "--client",
        metavar="ADDRESS",
        type=typed(_client_address),
        help="the client's IP address: use the settings of its network",
    )
    explain.add_argument("--app-key", metavar="KEY", help="the AppKey of the session's app")
    explain.add_argument(
        "--tenant",
        metavar="ID",
        action="append",
        default=[],
        help="a TenantId of the session (repeat for up to 5); none: a meeting without TenantIds",
    )
    explain.add_argument(
        "--app-keys-header", metavar="V", help="judge this X-Amzn-Chime-App-Keys value"
    )
    explain.add_argument(
        "--tenants-header", metavar="V", help="judge this X-Amzn-Chime-Tenants value"
    )
    explain.add_argument(
        "config",
        nargs="?",
        metavar="CONFIG",
        help=f"the allowlist (default: {DEFAULT_CONFIG}); not with the header options",
    )
    explain.set_defaults(handler=_explain, parser=explain)

    ranges = add_command(
        commands,
        "ranges",
        summary="look up addresses in, or update, the Chime ranges",
        description="Look up addresses in the Chime ranges, or update the ranges snapshot.",
        epilog="See `chime-egress ranges lookup --help` and `chime-egress ranges update --help`.",
    )
    ranges_commands = ranges.add_subparsers(dest="ranges_command", required=True, metavar="COMMAND")

    lookup = add_command(
        ranges_commands,
        "lookup",
        summary="the prefix, service and region matching each address",
        description=(
            "For each address, the prefix that makes it a Chime destination for the proxy, with\n"
            "its service and region, or 'not a Chime destination'. IPv4, IPv6 and IPv4-mapped\n"
            "IPv6 (::ffff:a.b.c.d) addresses. The last argument is read as CONFIG when it is\n"
            "not an IP address and names an existing file or ends in .yaml or .yml."
        ),
        epilog=_epilog(
            ok="every address is a Chime destination",
            invalid="invalid allowlist, or an argument that is not an IP address",
            no="at least one address is not a Chime destination",
        ),
    )
    lookup.add_argument("items", nargs="+", metavar="ADDRESS ... [CONFIG]", help="addresses")
    lookup.set_defaults(handler=_ranges_lookup)

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
            "Nothing is written when the source is malformed, empty, has no matching prefix,\n"
            "or is older (by syncToken) than the snapshot it would replace; --force overrides\n"
            "the last check (and an unreadable current snapshot), never the others."
        ),
        epilog=_epilog(
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
        help="replace the snapshot even if the source's syncToken is older",
    )
    _config_argument(update)
    update.set_defaults(handler=_ranges_update)

    pac = add_command(
        commands,
        "pac",
        summary="print a proxy auto-config (PAC) file sending only Chime traffic to the proxy",
        description=(
            "Print a PAC file that sends requests for the proxy's Chime destinations to the\n"
            "proxy and everything else DIRECT: host names matching --host (*.chime.aws by\n"
            "default) by name, other names and IP literals by address. IPv4 prefixes are\n"
            "checked with isInNet; IPv6 prefixes with isInNetEx where the browser has it\n"
            "(Chrome, Edge), else with the file's own matcher. The prefixes are the proxy's,\n"
            "from the same allowlist and ranges file; regenerate after changing either.\n\n"
            "With several --proxy, browsers try them in order. There is deliberately no DIRECT\n"
            "fallback: when no proxy answers, Chime requests fail instead of leaving without\n"
            "the headers."
        ),
        epilog=_epilog(ok="PAC file printed", invalid="invalid allowlist"),
    )
    pac.add_argument(
        "--proxy",
        required=True,
        action="append",
        type=typed(addresses.parse_proxy_address),
        metavar="HOST:PORT",
        help="the proxy browsers should use, e.g. proxy.example.com:8080 (repeat for fail-over)",
    )
    pac.add_argument(
        "--host",
        action="append",
        type=typed(addresses.check_host_pattern),
        metavar="PATTERN",
        help="send host names matching this shExpMatch pattern to the proxy (repeat; "
        f"default: {', '.join(DEFAULT_PAC_HOSTS)})",
    )
    _config_argument(pac)
    pac.set_defaults(handler=_pac)

    firewall = add_command(
        commands,
        "firewall",
        summary="print firewall rules redirecting Chime traffic to a transparent proxy",
        description=(
            "Print an nftables script that redirects TCP connections (ports 80 and 443 by\n"
            "default) bound for the proxy's Chime destinations, IPv4 and IPv6, to a local port\n"
            "where mitmdump runs with --mode transparent. It only prints: apply it yourself\n"
            "with `nft -f FILE`. Loading it again replaces its own table, inet chime_egress.\n\n"
            "  --hook prerouting (default): on a gateway the clients' traffic passes through\n"
            "  --hook output --proxy-user USER: for clients on the proxy's own machine; USER's\n"
            "      (the proxy's) connections are exempt, or they would loop back to the proxy"
        ),
        epilog=_epilog(ok="rules printed", invalid="invalid allowlist"),
    )
    firewall.add_argument(
        "--format",
        choices=("nftables",),
        default="nftables",
        help="the rule syntax (default: nftables)",
    )
    firewall.add_argument(
        "--proxy-port",
        required=True,
        type=typed(addresses.parse_port),
        metavar="N",
        help="the local port mitmdump --mode transparent listens on",
    )
    firewall.add_argument(
        "--ports",
        type=typed(addresses.parse_ports),
        default=DEFAULT_REDIRECT_PORTS,
        metavar="P,P",
        help="destination TCP ports to redirect (default: 80,443)",
    )
    firewall.add_argument(
        "--hook",
        choices=("prerouting", "output"),
        default="prerouting",
        help="prerouting: traffic routed through this machine; output: this machine's own",
    )
    firewall.add_argument(
        "--interface",
        type=typed(lambda text: addresses.check_nft_word(text, "interface name")),
        metavar="IFACE",
        help="only traffic arriving on (prerouting) or leaving by (output) this interface",
    )
    firewall.add_argument(
        "--proxy-user",
        type=typed(lambda text: addresses.check_nft_word(text, "user name or uid")),
        metavar="USER",
        help="the user mitmdump runs as; its traffic is not redirected (required with output)",
    )
    _config_argument(firewall)
    firewall.set_defaults(handler=_firewall, parser=firewall)

    health = add_command(
        commands,
        "health",
        summary="check that a running proxy answers (for container health checks)",
        description=(
            "Connect to the proxy and send it a request it must answer itself (no Host header,\n"
            "no destination): mitmproxy replies 400 from its own event loop. Healthy when the\n"
            "reply is HTTP from mitmproxy. Nothing is forwarded; no other host is contacted.\n"
            "Needs an HTTP proxy listener (regular or upstream mode); for a transparent proxy,\n"
            "add a loopback listener, e.g. --mode regular@127.0.0.1:8081, and probe that."
        ),
        epilog=_epilog(ok="healthy", invalid="unhealthy (the reason on stderr)"),
    )
    health.add_argument(
        "--proxy",
        type=typed(addresses.parse_proxy_address),
        default=addresses.parse_proxy_address("127.0.0.1:8080"),
        metavar="HOST:PORT",
        help="the proxy to probe (default: 127.0.0.1:8080)",
    )
    health.add_argument(
        "--timeout",
        type=typed(_seconds),
        default=5.0,
        metavar="SECONDS",
        help="give up after this long (default: 5)",
    )
    health.add_argument("--quiet", "-q", action="store_true", help="print nothing when healthy")
    health.set_defaults(handler=_health)

    observed = add_command(
        commands,
        "observed",
        summary="sum up what observe mode saw, per Chime host name, from the JSON log",
        description=(
            "Read the proxy's JSON log lines (written with --set chime_log_json=FILE) and sum\n"
            "up its Chime connections per TLS server name (else destination address): observed\n"
            "connections, the bytes each way, the clients and networks they came from, first\n"
            "and last seen; and, for comparison, intercepted connections and 403s from Chime.\n"
            "Busiest host first. The server names and clients tell which apps are in use and\n"
            "whom to ask for their AppKeys before enforcing."
        ),
        epilog=_epilog(ok="summary printed", invalid="a file cannot be read"),
    )
    observed.add_argument("logs", nargs="+", metavar="FILE", help="JSON log files ('-': stdin)")
    observed.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="stdout format; json is a list of hosts (default: text)",
    )
    observed.add_argument(
        "--clients",
        type=typed(_positive),
        default=5,
        metavar="N",
        help="client addresses listed per host in the text format (default: 5)",
    )
    observed.set_defaults(handler=_observed)

    add_csp_commands(commands)
    return parser


def _config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config",
        nargs="?",
        default=DEFAULT_CONFIG,
        metavar="CONFIG",
        help=f"the allowlist (default: {DEFAULT_CONFIG})",
    )


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    if not 0 < seconds <= 300:
        raise ValueError(f"{text!r}: expected more than 0 and at most 300 seconds")
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as other command-line tools do. Python's
        # recipe: point stdout at devnull so the flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return code


# Shared helpers


def _config_path(text: str) -> Path:
    # As the proxy does with its chime_allowlist option, so both name the file alike in messages.
    return Path(text).expanduser()


def _report_problems(what: Path | str, problems: Sequence[Problem], refusal: str) -> None:
    print_error(f"{what}: {refusal} ({_plural(len(problems), 'problem', 'problems')}):")
    for problem in problems:
        print_error(str(problem))


_PROXY_REFUSES = "invalid configuration; the proxy would refuse it"


def _load_policy(config: Path) -> Policy | None:
    try:
        return load_policy(config)
    except ConfigError as error:
        _report_problems(config, error.problems, _PROXY_REFUSES)
        return None


def _shown(path: Path) -> str:
    """A path as short as it can be said from here: relative when under the current folder."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _plural(count: int, word: str, words: str) -> str:
    return f"{count} {word if count == 1 else words}"


def _prefix_columns(prefix: Prefix) -> tuple[str, ...]:
    if prefix.origin == "cidrs":
        return ("(destinations.cidrs)",)
    return (prefix.service, prefix.region)


def _print_columns(rows: Sequence[Sequence[str]], indent: str = "") -> None:
    """Rows as columns two spaces apart; a row's last cell is never padded."""
    widths: dict[int, int] = {}
    for row in rows:
        for index, cell in enumerate(row[:-1]):
            widths[index] = max(widths.get(index, 0), len(cell))
    for row in rows:
        cells = [cell.ljust(widths[index]) for index, cell in enumerate(row[:-1])]
        print(indent + "  ".join([*cells, row[-1]]))


def _header_sizes(headers: ChimeHeaders) -> list[tuple[str, str, int]]:
    # Measured as oversized_lines measures them: "Name: value" in bytes, without CRLF.
    return [(name, value, len(f"{name}: {value}".encode())) for name, value in headers.items()]


# validate


def _validate(args: argparse.Namespace) -> int:
    config = _config_path(args.config)
    try:
        policy = load_policy(config)
    except ConfigError as error:
        _report_problems(config, error.problems, _PROXY_REFUSES)
        if args.format == "json":
            _print_json(
                {
                    "valid": False,
                    "config": str(config),
                    "problems": [_problem_json(p) for p in error.problems],
                }
            )
        return EXIT_INVALID
    for warning in policy.allowlist.warnings:
        print_error(f"warning: {warning}")
    if args.format == "json":
        _print_json(_policy_json(config, policy))
    else:
        _print_summary(config, policy)
    return EXIT_OK


def _print_json(document: dict[str, Any]) -> None:
    print(json.dumps(document, indent=2))


def _problem_json(problem: Problem) -> dict[str, Any]:
    return {
        "path": problem.path,
        "line": problem.line,
        "field": problem.field,
        "message": problem.message,
        "text": str(problem),
    }


def _policy_json(config: Path, policy: Policy) -> dict[str, Any]:
    ranges = policy.ranges
    ranges_file = policy.allowlist.destinations.ip_ranges
    return {
        "valid": True,
        "config": str(config),
        "summary": policy.summary(),
        "apps": [
            {
                "app_key": app.app_key,
                "name": app.name,
                "tenants": list(app.tenants),
                "line": app.line,
            }
            for app in policy.allowlist.apps
        ],
        "tenants": sum(len(app.tenants) for app in policy.allowlist.apps),
        "mode": policy.allowlist.mode,
        "networks": [
            {
                "name": network.name,
                "clients": [str(client) for client in network.clients],
                "mode": network.mode,
                "line": network.line,
                "app_keys": [app.app_key for app in network.apps],
                "headers": [
                    {"name": name, "value": value} for name, value in network.http1_headers
                ],
            }
            for network in policy.clients.networks
        ],
        "warnings": [_problem_json(warning) for warning in policy.allowlist.warnings],
        "prefixes": [
            {
                "prefix": str(prefix.network),
                "service": prefix.service,
                "region": prefix.region,
                "origin": prefix.origin,
            }
            for prefix in policy.table.prefixes
        ],
        "ranges": None
        if ranges is None
        else {
            "file": str(ranges_file),
            "syncToken": ranges.sync_token,
            "createDate": ranges.create_date,
        },
        "headers": [
            {"name": name, "value": value, "bytes": size}
            for name, value, size in _header_sizes(policy.headers)
        ],
        "max_header_line_bytes": MAX_HEADER_LINE_BYTES,
        "problems": [],
    }


def _print_summary(config: Path, policy: Policy) -> None:
    allowlist = policy.allowlist
    print(f"{config}: valid: {policy.summary()}")
    print(f"mode: {allowlist.mode}")
    print(f"apps ({len(allowlist.apps)}, in header order):")
    for app in allowlist.apps:
        tenants = f"tenants {', '.join(app.tenants)}" if app.tenants else "any tenant"
        print(f"  {app.label}: {tenants}")
    if allowlist.networks:
        print(f"networks ({len(allowlist.networks)}, the first holding a client's address wins):")
        for network in allowlist.networks:
            apps = (
                "the top-level apps"
                if network.apps is None
                else f"apps {', '.join(app.app_key for app in network.apps)}"
            )
            if network.mode == "observe":
                apps = "no headers"
            clients = ", ".join(map(str, network.clients))
            print(f"  {network.name} ({clients}): {network.mode}, {apps}")
    prefixes = policy.table.prefixes
    source = ""
    if policy.ranges is not None and allowlist.destinations.ip_ranges is not None:
        source = (
            f" from {_shown(allowlist.destinations.ip_ranges)} (syncToken "
            f"{policy.ranges.sync_token}, created {policy.ranges.create_date})"
        )
    print(f"prefixes ({len(prefixes)}){source}:")
    _print_columns(
        [(str(p.network), *_prefix_columns(p)) for p in prefixes[:SUMMARY_PREFIX_LIMIT]], "  "
    )
    if len(prefixes) > SUMMARY_PREFIX_LIMIT:
        print(f"  ... and {len(prefixes) - SUMMARY_PREFIX_LIMIT} more (--format json lists all)")
    print(f"header lines (limit {MAX_HEADER_LINE_BYTES:,} bytes each):")
    for name, _, size in _header_sizes(policy.headers):
        print(f"  {name}: {size:,} bytes")


# headers


def _headers(args: argparse.Namespace) -> int:
    policy = _load_policy(_config_path(args.config))
    if policy is None:
        return EXIT_INVALID
    clients = policy.clients
    chosen = clients.default if args.client is None else clients.for_client(args.client)
    if args.client is None and clients.networks:
        names = ", ".join(network.name for network in clients.networks)
        print_error(f"note: the top-level headers; networks {names} have their own: see --client")
    if chosen.headers is None:
        print_error(
            f"note: network {chosen.name} is in observe mode: the proxy adds no headers there"
        )
        return EXIT_OK
    for line in chosen.headers.lines():
        print(line)
    return EXIT_OK


# explain


def _explain(args: argparse.Namespace) -> int:
    raw = args.app_keys_header is not None or args.tenants_header is not None
    parser: argparse.ArgumentParser = args.parser
    # parser.error prints the usage and exits with 2, like every other bad command line.
    if raw and args.config is not None:
        parser.error("CONFIG cannot be combined with --app-keys-header or --tenants-header")
    if raw and args.client is not None:
        parser.error("--client cannot be combined with --app-keys-header or --tenants-header")
    if raw and args.app_key is None:
        parser.error("--app-keys-header and --tenants-header need --app-key")
    if args.tenant and args.app_key is None:
        parser.error("--tenant needs --app-key")
    try:
        session = Session(args.app_key, tuple(args.tenant)) if args.app_key is not None else None
    except InvalidSession as error:
        for problem in error.problems:
            print_error(f"session: {problem}")
        return EXIT_INVALID

    if raw:
        assert session is not None
        return _explain_one(session, args.app_keys_header, args.tenants_header, "as given")

    config = _config_path(args.config or DEFAULT_CONFIG)
    policy = _load_policy(config)
    if policy is None:
        return EXIT_INVALID
    client_policy = _explained_client_policy(policy, args.client)
    headers = client_policy.headers
    app_keys, tenants = (headers.app_keys, headers.tenants) if headers else (None, None)
    network = f" for network {client_policy.name}" if policy.clients.networks else ""
    origin = f"the proxy's{network}, from {config}"
    if session is not None:
        return _explain_one(session, app_keys, tenants, origin)
    return _explain_all(client_policy.apps, app_keys, tenants, origin)


def _client_address(text: str) -> str:
    address = parse_address(text)
    if address is None:
        raise ValueError(f"{text!r} is not an IP address")
    return str(address)


def _explained_client_policy(policy: Policy, client: str | None) -> ClientPolicy:
    clients = policy.clients
    if client is None:
        chosen = clients.default
        if clients.networks:
            names = ", ".join(network.name for network in clients.networks)
            print(
                f"settings: the top level (mode {chosen.mode}); networks {names} have their "
                "own: see --client"
            )
    else:
        chosen = clients.for_client(client)
        where = (
            f"network {chosen.name} ({', '.join(map(str, chosen.clients))}, line {chosen.line})"
            if chosen.line is not None
            else "no networks entry holds it: the top-level settings"
        )
        print(f"client {client}: {where}, mode {chosen.mode}")
    if chosen.observing:
        print("observe mode: the proxy adds no headers and decrypts nothing for these clients")
    return chosen


def _print_headers(app_keys: str | None, tenants: str | None, origin: str) -> None:
    print(f"headers ({origin}):")
    for name, value in ((APP_KEYS_HEADER, app_keys), (TENANTS_HEADER, tenants)):
        print(f"  {name}: {value}" if value is not None else f"  {name}: (not sent)")


def _describe_session(session: Session) -> str:
    tenants = ", ".join(session.tenant_ids) if session.tenant_ids else "none"
    return f"AppKey {session.app_key}, TenantIds {tenants}"


def _explain_one(session: Session, app_keys: str | None, tenants: str | None, origin: str) -> int:
    try:
        verdict = judge(session, app_keys, tenants)
    except MalformedHeader as error:
        for problem in error.problems:
            print_error(problem)
        print_error("cannot say what Chime would do: the AWS guide does not define such values")
        return EXIT_INVALID
    print(f"session: {_describe_session(session)}")
    _print_headers(app_keys, tenants, origin)
    print(f"verdict: {verdict.decision.value}")
    for applied in verdict.rules:
        print(f"  {applied.decision.value:<6}  {applied.detail}")
        print(f'          AWS: "{applied.rule.wording}"')
    print(BOTH_MUST_ACCEPT)
    return EXIT_OK if verdict.accepted else EXIT_NO


def _unused(base: str, taken: Sequence[str]) -> str:
    """`base`, or base2, base3...: an example identifier that is not in the allowlist."""
    candidate, number = base, 1
    while candidate in taken:
        number += 1
        candidate = f"{base}{number}"
    return candidate


def _example_sessions(app: App) -> list[tuple[str, Session]]:
    if app.tenants:
        other = _unused("otherTenantId", app.tenants)
        return [
            (f"TenantIds {app.tenants[0]}", Session(app.app_key, (app.tenants[0],))),
            (f"TenantIds {other} (not listed)", Session(app.app_key, (other,))),
            ("no TenantIds", Session(app.app_key, ())),
        ]
    return [
        ("TenantIds anyTenantId", Session(app.app_key, ("anyTenantId",))),
        ("no TenantIds", Session(app.app_key, ())),
    ]


def _explain_all(
    apps: tuple[App, ...], app_keys: str | None, tenants: str | None, origin: str
) -> int:
    _print_headers(app_keys, tenants, origin)
    groups: list[tuple[str, list[tuple[str, Session]]]] = []
    for app in apps:
        limit = f"tenants {', '.join(app.tenants)}" if app.tenants else "any tenant"
        groups.append((f"{app.label}, {limit}", _example_sessions(app)))
    other_app = _unused("OtherAppKey", [app.app_key for app in apps])
    groups.append(
        (
            f"any app not listed (for example AppKey {other_app})",
            [("any TenantIds", Session(other_app, ("anyTenantId",)))],
        )
    )
    used: set[str] = set()
    for title, sessions in groups:
        print()
        print(f"{title}:")
        width = max(len(label) for label, _ in sessions)
        for label, session in sessions:
            verdict = judge(session, app_keys, tenants)
            used.update(applied.rule.code for applied in verdict.deciding)
            print(f"  {verdict.decision.value:<6}  {label:<{width}}  {_deciding(verdict)}")
    print()
    print(BOTH_MUST_ACCEPT)
    print("The rules that decided, from the AWS guide 'Using AppKeys and TenantIDs':")
    for rule in RULES:
        if rule.code in used:
            print(f'  {rule.code}: "{rule.wording}"')
    return EXIT_OK


def _deciding(verdict: Verdict) -> str:
    # The row's label already says which tenant; the legend below quotes each rule in full.
    return f"({', '.join(applied.rule.code for applied in verdict.deciding)})"


# ranges lookup


def _looks_like_config(text: str) -> bool:
    return text.endswith((".yaml", ".yml")) or Path(text).expanduser().is_file()


def _ranges_lookup(args: argparse.Namespace) -> int:
    items: list[str] = list(args.items)
    config_text = DEFAULT_CONFIG
    if len(items) > 1 and parse_address(items[-1]) is None and _looks_like_config(items[-1]):
        config_text = items.pop()
    policy = _load_policy(_config_path(config_text))
    if policy is None:
        return EXIT_INVALID
    rows: list[tuple[str, ...]] = []
    bad = outside = False
    for text in items:
        address = parse_address(text)
        if address is None:
            print_error(f"{text!r} is not an IP address")
            bad = True
            continue
        prefix = policy.table.lookup(text)
        if address.version == 4 and ":" in text:
            shown = f"{text} (IPv4-mapped {address})"
        elif str(address) != text:
            shown = f"{text} ({address})"
        else:
            shown = text
        if prefix is None:
            outside = True
            rows.append((shown, "not a Chime destination"))
        else:
            rows.append((shown, str(prefix.network), *_prefix_columns(prefix)))
    _print_columns(rows)
    if bad:
        return EXIT_INVALID
    return EXIT_NO if outside else EXIT_OK


# ranges update


class _Refused(Exception):
    """The update must not write: the message says why."""


def _ranges_update(args: argparse.Namespace) -> int:
    config = _config_path(args.config)
    try:
        allowlist = load_allowlist(config)
    except ConfigError as error:
        _report_problems(config, error.problems, "invalid configuration; fix it first")
        return EXIT_INVALID
    try:
        _update(allowlist, args.source, args.output, args.force)
    except _Refused as refusal:
        print_error(f"{refusal}")
        print_error("refused; nothing written")
        return EXIT_INVALID
    return EXIT_OK


def _update(allowlist: Allowlist, source: str, output_text: str | None, force: bool) -> None:
    destinations = allowlist.destinations
    if output_text is not None:
        output = Path(output_text).expanduser()
    elif destinations.ip_ranges is not None:
        output = destinations.ip_ranges
    else:
        raise _Refused(f"{allowlist.path} names no destinations.ip_ranges; give --output PATH")

    text = _read_source(source)
    try:
        snapshot, rendered = filter_aws_ranges(
            text, source, destinations.services, destinations.regions
        )
    except ConfigError as error:
        lines = "\n".join(str(problem) for problem in error.problems)
        raise _Refused(f"{lines}\n{source}: not a valid AWS ip-ranges.json") from None
    selection = f"services {list(destinations.services)}" + (
        f" in regions {list(destinations.regions)}" if destinations.regions else ""
    )
    if not snapshot.prefixes:
        if _entry_count(text) == 0:
            raise _Refused(f"{source}: lists no prefixes at all (an empty or truncated copy?)")
        raise _Refused(f"{source}: has no prefix for {selection}")

    current = _current_snapshot(output, destinations.services, destinations.regions, force)
    print(
        f"source: {source}: syncToken {snapshot.sync_token} ({snapshot.create_date}), "
        f"{_plural(len(snapshot.prefixes), 'prefix', 'prefixes')} for {selection}"
    )
    if current is None:
        print(f"current: {_shown(output)}: none")
    else:
        print(f"current: {_shown(output)}: syncToken {current.sync_token} ({current.create_date})")
    # Shown before any refusal, so an admin sees what the refused file would have changed.
    _print_changes(current.prefixes if current else (), snapshot.prefixes)
    if current is not None and snapshot.sync_token_number < current.sync_token_number:
        older = (
            f"{source}: syncToken {snapshot.sync_token} ({snapshot.create_date}) is older "
            f"than the current snapshot's {current.sync_token} ({current.create_date})"
        )
        if not force:
            # AWS's change notifications can arrive out of order; an older file is stale.
            raise _Refused(f"{older}; --force replaces it anyway")
        print_error(f"warning: {older}; replacing it (--force)")
    with contextlib.suppress(OSError):
        if output.read_text(encoding="utf-8") == rendered:
            print(f"{_shown(output)} is already up to date; nothing written")
            return
    try:
        _write_atomically(output, rendered)
    except OSError as error:
        raise _Refused(f"cannot write {output}: {error}") from None
    print(f"wrote {_shown(output)}")


def _read_source(source: str) -> str:
    scheme = urllib.parse.urlsplit(source).scheme.lower()
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(
                urllib.request.Request(
                    source, headers={"User-Agent": f"chime-egress/{__version__}"}
                ),
                timeout=URL_TIMEOUT_SECONDS,
            ) as response:
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


def _print_changes(old: Sequence[Prefix], new: Sequence[Prefix]) -> None:
    def key(prefix: Prefix) -> tuple[str, str, str]:
        return (str(prefix.network), prefix.service, prefix.region)

    old_keys = {key(prefix) for prefix in old}
    new_keys = {key(prefix) for prefix in new}
    added = [prefix for prefix in new if key(prefix) not in old_keys]
    removed = [prefix for prefix in old if key(prefix) not in new_keys]
    _print_columns(
        [
            (f"{sign} {prefix.network}", prefix.service, prefix.region)
            for sign, prefixes in (("+", added), ("-", removed))
            for prefix in prefixes
        ],
        "  ",
    )
    kept = len(new) - len(added)
    print(f"prefixes: {len(added)} added, {len(removed)} removed, {kept} unchanged")


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


# pac


def _pac(args: argparse.Namespace) -> int:
    config = _config_path(args.config)
    policy = _load_policy(config)
    if policy is None:
        return EXIT_INVALID
    hosts = tuple(dict.fromkeys(args.host or DEFAULT_PAC_HOSTS))
    sys.stdout.write(render_pac(policy, str(config), args.proxy, hosts, __version__))
    return EXIT_OK


# firewall


def _firewall(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    if args.hook == "output" and args.proxy_user is None:
        parser.error("--hook output needs --proxy-user (the proxy's own traffic must not loop)")
    config = _config_path(args.config)
    policy = _load_policy(config)
    if policy is None:
        return EXIT_INVALID
    sys.stdout.write(
        render_nftables(
            policy,
            str(config),
            args.proxy_port,
            ports=args.ports,
            hook=args.hook,
            interface=args.interface,
            proxy_user=args.proxy_user,
            version=__version__,
        )
    )
    return EXIT_OK


# health


def _health(args: argparse.Namespace) -> int:
    health = probe_proxy(args.proxy, args.timeout)
    if not health.healthy:
        print_error(f"unhealthy: {health.detail}")
        return EXIT_INVALID
    if not args.quiet:
        print(f"healthy: {health.detail}")
    return EXIT_OK


# observed


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _observed(args: argparse.Namespace) -> int:
    sources: list[tuple[str, list[str]]] = []
    for name in args.logs:
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            print_error(f"{name}: cannot read: {error}")
            return EXIT_INVALID
        sources.append((name, text.splitlines()))
    summary = summarize(sources)
    for name, line, why in summary.unreadable[:10]:
        print_error(f"{name}:{line}: skipped: {why}")
    if len(summary.unreadable) > 10:
        print_error(f"... and {len(summary.unreadable) - 10} more lines skipped")
    hosts = summary.ordered()
    if args.format == "json":
        print(json.dumps([host.to_json() for host in hosts], indent=2))
        return EXIT_OK
    if not hosts:
        print(f"no Chime connections in {summary.lines_read} log lines")
        return EXIT_OK
    rows = [("host", "observed", "intercepted", "403", "from clients", "from servers", "clients")]
    for host in hosts:
        shown = sorted(host.clients)[: args.clients]
        more = f" (+{len(host.clients) - len(shown)})" if len(host.clients) > len(shown) else ""
        rows.append(
            (
                host.host,
                str(host.connections),
                str(host.intercepted),
                str(host.refusals),
                _bytes(host.bytes_from_clients),
                _bytes(host.bytes_from_servers),
                f"{', '.join(shown)}{more}",
            )
        )
    _print_columns(rows)
    return EXIT_OK


def _bytes(count: int) -> str:
    if count < 1000:
        return f"{count} B"
    value = float(count)
    for unit in ("KB", "MB", "GB"):
        value /= 1000
        if value < 1000 or unit == "GB":
            break
    return f"{value:.1f} {unit}"


if __name__ == "__main__":
    sys.exit(main())
