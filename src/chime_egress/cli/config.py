"""`chime-egress validate`, `headers` and `explain`: an allowlist as the proxy reads it.

`validate` checks it with load_policy (so the messages are the proxy's, word for word), `headers`
prints the lines the compiled Policy sends, and `explain` says what Chime decides with them, by
the rules of AWS's guide (policy.verdict).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError, Problem
from ..policy.allowlist import App
from ..policy.client_policy import ClientPolicy
from ..policy.compiled import Policy, load_policy
from ..policy.headers import APP_KEYS_HEADER, MAX_HEADER_LINE_BYTES, TENANTS_HEADER, ChimeHeaders
from ..policy.identifiers import unused_identifier
from ..policy.identity import Identity, fold
from ..policy.ranges import Prefix, parse_address
from ..policy.verdict import (
    BOTH_MUST_ACCEPT,
    RULES,
    InvalidSession,
    MalformedHeader,
    Session,
    Verdict,
    judge,
)
from .support import (
    DEFAULT_CONFIG,
    EXIT_INVALID,
    EXIT_NO,
    EXIT_OK,
    LIST_HELP,
    PROXY_REFUSES,
    ListAction,
    add_command,
    config_argument,
    config_path,
    epilog,
    format_argument,
    load_policy_or_report,
    prefix_columns,
    print_columns,
    print_error,
    report_problems,
    shown_path,
    typed,
)

# Past this many prefixes (a config selecting, say, all of AMAZON) the text summary only counts.
SUMMARY_PREFIX_LIMIT = 10


def add_config_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `validate`, `headers` and `explain` to the chime-egress command line."""
    _add_validate(commands)
    _add_headers(commands)
    _add_explain(commands)


def _add_validate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    validate = add_command(
        commands,
        "validate",
        summary="check an allowlist exactly as the proxy would",
        description=(
            "Check an allowlist and the ranges file it names exactly as the proxy does at start\n"
            "and on reload, with the same messages (file, line and field). Every problem goes\n"
            "to stderr; on success a summary goes to stdout."
        ),
        epilog=epilog(ok="the allowlist is valid"),
    )
    format_argument(validate, "json is one object with 'valid' and 'problems'")
    config_argument(validate)
    validate.set_defaults(handler=_validate)


def _add_headers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        epilog=epilog(ok="headers printed"),
    )
    headers.add_argument(
        "--client",
        metavar="ADDRESS",
        type=typed(_client_address),
        help="the client's IP address: the headers of its network",
    )
    format_argument(headers, "json is one object with the network, its mode and the headers")
    config_argument(headers)
    headers.set_defaults(handler=_headers)


def _add_explain(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    explain = add_command(
        commands,
        "explain",
        summary="say whether Chime accepts a meeting session, and by which rule",
        description=(
            "Say whether Chime accepts or refuses (403) a meeting session created by the app\n"
            "with AppKey KEY and TenantIds ID..., given the headers the proxy sends, and which\n"
            "of the rules of AWS's guide 'Using AppKeys and TenantIDs' decided.\n\n"
            "  explain [--client ADDRESS] [--user U] [--group G ...] --app-key KEY\n"
            "          [--tenant ID ...] [CONFIG]\n"
            "      the headers of an allowlist (for that user, groups and client address)\n"
            "  explain --app-keys-header V [--tenants-header V] --app-key KEY [--tenant ID ...]\n"
            "      raw header values (from a capture or another proxy); a header not given is\n"
            "      taken as not sent\n"
            "  explain [--client ADDRESS] [CONFIG]\n"
            "      every app of the allowlist, with and without a matching tenant, and an app\n"
            "      that is not listed\n\n"
            "With --client, the settings are those the proxy applies to that client address:\n"
            "the first 'networks' entry holding it, else the top level. With --user and\n"
            "--group, the first 'identities' entry naming the user or one of the groups comes\n"
            "first (groups from the allowlist's group file are added; the directory is not\n"
            "asked). In observe mode the proxy sends no headers, so Chime accepts every session."
        ),
        epilog=epilog(
            ok="Chime accepts (always 0 without --app-key)",
            invalid="invalid allowlist, malformed header value, or impossible session",
            no="Chime answers 403",
        ),
    )
    _explain_arguments(explain)
    explain.set_defaults(handler=_explain)


def _explain_arguments(explain: argparse.ArgumentParser) -> None:
    explain.add_argument(
        "--client",
        metavar="ADDRESS",
        type=typed(_client_address),
        help="the client's IP address: use the settings of its network",
    )
    explain.add_argument(
        "--user",
        metavar="USER",
        help="who is asking: use the identities entry naming this user (or one of its groups)",
    )
    explain.add_argument(
        "--group",
        metavar="GROUP",
        action=ListAction,
        default=[],
        help=f"groups of the user ({LIST_HELP}); the group file's are added",
    )
    explain.add_argument("--app-key", metavar="KEY", help="the AppKey of the session's app")
    explain.add_argument(
        "--tenant",
        metavar="ID",
        action=ListAction,
        default=[],
        help=f"TenantIds of the session (up to 5; {LIST_HELP}); none: a meeting without TenantIds",
    )
    explain.add_argument(
        "--app-keys-header", metavar="V", help="judge this X-Amzn-Chime-App-Keys value"
    )
    explain.add_argument(
        "--tenants-header", metavar="V", help="judge this X-Amzn-Chime-Tenants value"
    )
    format_argument(explain, "json is one object with the verdict and the rules that decided")
    config_argument(
        explain,
        default=None,
        help=f"the allowlist (default: {DEFAULT_CONFIG}); not with the header options",
    )


# validate


def _validate(args: argparse.Namespace) -> int:
    config = config_path(args.config)
    try:
        policy = load_policy(config)
    except ConfigError as error:
        report_problems(config, error.problems, PROXY_REFUSES)
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
        "networks": [_network_json(network) for network in policy.clients.networks],
        "identity": _identity_sources(policy),
        "identities": [_network_json(entry) for entry in policy.clients.identities],
        "warnings": [_problem_json(warning) for warning in policy.allowlist.warnings],
        "prefixes": [_prefix_json(prefix) for prefix in policy.table.prefixes],
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


def _network_json(network: ClientPolicy) -> dict[str, Any]:
    where: dict[str, Any] = {"clients": [str(client) for client in network.clients]}
    if network.kind == "identity":
        where = {"users": sorted(network.users), "groups": sorted(network.groups)}
    return {
        "name": network.name,
        **where,
        "mode": network.mode,
        "line": network.line,
        "app_keys": [app.app_key for app in network.apps],
        "headers": [{"name": name, "value": value} for name, value in network.http1_headers],
    }


def _identity_sources(policy: Policy) -> list[str]:
    """Where the proxy learns who is asking, one phrase per source (no secrets)."""
    settings = policy.allowlist.identity
    if settings is None:
        return []
    found: list[str] = []
    if settings.htpasswd is not None:
        found.append(f"proxy_auth htpasswd ({shown_path(settings.htpasswd.path)})")
    if settings.ldap is not None:
        uses = ["proxy_auth"] if settings.proxy_auth == "ldap" else []
        uses += [f"groups by {settings.ldap.groups}"] if settings.ldap_groups else []
        found.append(f"ldap {settings.ldap.url} ({', '.join(uses)})")
    if settings.group_file is not None:
        found.append(f"group_file {shown_path(settings.group_file.path)}")
    if (header := settings.trusted_header) is not None:
        parents = ", ".join(map(str, header.parents))
        groups = f" and {header.groups}" if header.groups else ""
        found.append(f"trusted_header {header.user}{groups} from {parents}")
    found.append(f"cache {settings.cache_seconds:g}s")
    return found


def _prefix_json(prefix: Prefix) -> dict[str, Any]:
    return {
        "prefix": str(prefix.network),
        "service": prefix.service,
        "region": prefix.region,
        "origin": prefix.origin,
    }


def _header_sizes(headers: ChimeHeaders) -> list[tuple[str, str, int]]:
    # Measured as oversized_lines measures them: "Name: value" in bytes, without CRLF.
    return [(name, value, len(f"{name}: {value}".encode())) for name, value in headers.items()]


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
    if sources := _identity_sources(policy):
        print("identity: " + "; ".join(sources))
    if identities := policy.clients.identities:
        print(
            f"identities ({len(identities)}, before networks; the first naming the user or one "
            "of its groups wins):"
        )
        for entry in identities:
            apps = ", ".join(app.app_key for app in entry.apps) if not entry.observing else ""
            print(f"  {entry.describe()}" + (f", apps {apps}" if apps else ", no headers"))
    prefixes = policy.table.prefixes
    source = ""
    if policy.ranges is not None and allowlist.destinations.ip_ranges is not None:
        source = (
            f" from {shown_path(allowlist.destinations.ip_ranges)} (syncToken "
            f"{policy.ranges.sync_token}, created {policy.ranges.create_date})"
        )
    print(f"prefixes ({len(prefixes)}){source}:")
    print_columns(
        [(str(p.network), *prefix_columns(p)) for p in prefixes[:SUMMARY_PREFIX_LIMIT]], "  "
    )
    if len(prefixes) > SUMMARY_PREFIX_LIMIT:
        print(f"  ... and {len(prefixes) - SUMMARY_PREFIX_LIMIT} more (--format json lists all)")
    print(f"header lines (limit {MAX_HEADER_LINE_BYTES:,} bytes each):")
    for name, _, size in _header_sizes(policy.headers):
        print(f"  {name}: {size:,} bytes")


# headers


def _headers(args: argparse.Namespace) -> int:
    policy = load_policy_or_report(config_path(args.config))
    if policy is None:
        return EXIT_INVALID
    clients = policy.clients
    chosen = clients.default if args.client is None else clients.for_client(args.client)
    if args.format == "json":
        _print_json(
            {
                "config": str(args.config),
                "client": args.client,
                "network": _network_json(chosen),
                "mode": chosen.mode,
                "headers": [{"name": n, "value": v} for n, v in chosen.http1_headers],
            }
        )
        return EXIT_OK
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
    if raw and (args.user is not None or args.group):
        parser.error("--user and --group cannot be combined with --app-keys-header")
    if raw and args.app_key is None:
        parser.error("--app-keys-header and --tenants-header need --app-key")
    if args.tenant and args.app_key is None:
        parser.error("--tenant needs --app-key")
    out = _Output(args.format == "json")
    try:
        session = Session(args.app_key, tuple(args.tenant)) if args.app_key is not None else None
    except InvalidSession as error:
        for problem in error.problems:
            print_error(f"session: {problem}")
        out.finish({"verdict": None, "problems": [f"session: {p}" for p in error.problems]})
        return EXIT_INVALID

    if raw:
        assert session is not None
        return _explain_one(out, session, args.app_keys_header, args.tenants_header, "as given")

    config = config_path(args.config or DEFAULT_CONFIG)
    policy = load_policy_or_report(config)
    if policy is None:
        return EXIT_INVALID
    identity = _explained_identity(out, policy, args.user, args.group)
    client_policy = _explained_client_policy(out, policy, args.client, identity)
    headers = client_policy.headers
    app_keys, tenants = (headers.app_keys, headers.tenants) if headers else (None, None)
    entries = policy.clients.networks or policy.clients.identities
    network = f" for {client_policy.kind} {client_policy.name}" if entries else ""
    origin = f"the proxy's{network}, from {config}"
    if session is not None:
        return _explain_one(out, session, app_keys, tenants, origin)
    return _explain_all(out, client_policy.apps, app_keys, tenants, origin)


class _Output:
    """Text printed as it comes, or one JSON object collected and printed at the end."""

    def __init__(self, json_format: bool) -> None:
        self.json = json_format
        self.document: dict[str, Any] = {}

    def line(self, text: str = "") -> None:
        if not self.json:
            print(text)

    def finish(self, document: dict[str, Any]) -> None:
        if self.json:
            _print_json({**self.document, **document})


def _client_address(text: str) -> str:
    address = parse_address(text)
    if address is None:
        raise ValueError(f"{text!r} is not an IP address")
    return str(address)


def _explained_identity(
    out: _Output, policy: Policy, user: str | None, groups: list[str]
) -> Identity | None:
    """Who --user and --group describe, with the group file's groups; None when not given."""
    if user is None and not groups:
        return None
    settings = policy.allowlist.identity
    named = frozenset(fold(group) for group in groups)
    from_file = settings.group_file.groups_of(user) if settings and settings.group_file else None
    identity = Identity(user, named | (from_file or frozenset()), "explain")
    shown = ", ".join(sorted(identity.groups)) or "none"
    out.line(f"identity: user {user or '(not given)'}, groups {shown}")
    if settings is not None and settings.group_file is not None and user is not None:
        listed = ", ".join(sorted(from_file or ())) or "none"
        out.line(f"  groups of {user} in {shown_path(settings.group_file.path)}: {listed}")
    if settings is not None and settings.ldap_groups:
        out.line("  groups in the directory are not looked up here: give them with --group")
    out.document["identity"] = {"user": user, "groups": sorted(identity.groups)}
    return identity


def _explained_client_policy(
    out: _Output, policy: Policy, client: str | None, identity: Identity | None = None
) -> ClientPolicy:
    clients = policy.clients
    if identity is not None:
        chosen = clients.select(identity, client or "")
        if chosen.kind == "identity":
            out.line(
                f"identities entry {chosen.name} (line {chosen.line}) applies, mode {chosen.mode}"
            )
            if chosen.observing:
                out.line("observe mode: the proxy adds no headers and decrypts nothing for them")
            out.document.update({"network": _network_json(chosen), "mode": chosen.mode})
            return chosen
        names = ", ".join(entry.name for entry in clients.identities) or "none defined"
        out.line(f"no identities entry names them ({names}): the client's address decides")
    if client is None:
        chosen = clients.default
        if clients.networks:
            names = ", ".join(network.name for network in clients.networks)
            out.line(
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
        out.line(f"client {client}: {where}, mode {chosen.mode}")
    if chosen.observing:
        out.line("observe mode: the proxy adds no headers and decrypts nothing for these clients")
    out.document.update({"client": client, "network": _network_json(chosen), "mode": chosen.mode})
    return chosen


def _print_headers(out: _Output, app_keys: str | None, tenants: str | None, origin: str) -> None:
    out.line(f"headers ({origin}):")
    for name, value in ((APP_KEYS_HEADER, app_keys), (TENANTS_HEADER, tenants)):
        out.line(f"  {name}: {value}" if value is not None else f"  {name}: (not sent)")
    out.document.update(
        {"headers_origin": origin, "headers": {APP_KEYS_HEADER: app_keys, TENANTS_HEADER: tenants}}
    )


def _describe_session(session: Session) -> str:
    tenants = ", ".join(session.tenant_ids) if session.tenant_ids else "none"
    return f"AppKey {session.app_key}, TenantIds {tenants}"


def _session_json(session: Session) -> dict[str, Any]:
    return {"app_key": session.app_key, "tenant_ids": list(session.tenant_ids)}


def _explain_one(
    out: _Output, session: Session, app_keys: str | None, tenants: str | None, origin: str
) -> int:
    try:
        verdict = judge(session, app_keys, tenants)
    except MalformedHeader as error:
        for problem in error.problems:
            print_error(problem)
        print_error("cannot say what Chime would do: the AWS guide does not define such values")
        out.finish({"verdict": None, "problems": list(error.problems)})
        return EXIT_INVALID
    out.line(f"session: {_describe_session(session)}")
    _print_headers(out, app_keys, tenants, origin)
    out.line(f"verdict: {verdict.decision.value}")
    for applied in verdict.rules:
        out.line(f"  {applied.decision.value:<6}  {applied.detail}")
        out.line(f'          AWS: "{applied.rule.wording}"')
    out.line(BOTH_MUST_ACCEPT)
    out.finish(
        {
            "session": _session_json(session),
            "verdict": verdict.decision.value,
            "rules": [
                {
                    "code": applied.rule.code,
                    "header": applied.rule.header,
                    "decision": applied.decision.value,
                    "detail": applied.detail,
                    "wording": applied.rule.wording,
                }
                for applied in verdict.rules
            ],
        }
    )
    return EXIT_OK if verdict.accepted else EXIT_NO


def _example_sessions(app: App) -> list[tuple[str, Session]]:
    if app.tenants:
        other = unused_identifier("otherTenantId", app.tenants)
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
    out: _Output, apps: tuple[App, ...], app_keys: str | None, tenants: str | None, origin: str
) -> int:
    _print_headers(out, app_keys, tenants, origin)
    groups: list[tuple[str, list[tuple[str, Session]]]] = []
    for app in apps:
        limit = f"tenants {', '.join(app.tenants)}" if app.tenants else "any tenant"
        groups.append((f"{app.label}, {limit}", _example_sessions(app)))
    other_app = unused_identifier("OtherAppKey", [app.app_key for app in apps])
    groups.append(
        (
            f"any app not listed (for example AppKey {other_app})",
            [("any TenantIds", Session(other_app, ("anyTenantId",)))],
        )
    )
    used: set[str] = set()
    judged: list[dict[str, Any]] = []
    for title, sessions in groups:
        out.line()
        out.line(f"{title}:")
        width = max(len(label) for label, _ in sessions)
        for label, session in sessions:
            verdict = judge(session, app_keys, tenants)
            used.update(applied.rule.code for applied in verdict.deciding)
            out.line(f"  {verdict.decision.value:<6}  {label:<{width}}  {_deciding(verdict)}")
            judged.append(
                {
                    "group": title,
                    "label": label,
                    "session": _session_json(session),
                    "verdict": verdict.decision.value,
                    "deciding": [applied.rule.code for applied in verdict.deciding],
                }
            )
    out.line()
    out.line(BOTH_MUST_ACCEPT)
    out.line("The rules that decided, from the AWS guide 'Using AppKeys and TenantIDs':")
    rules = [rule for rule in RULES if rule.code in used]
    for rule in rules:
        out.line(f'  {rule.code}: "{rule.wording}"')
    out.finish(
        {"sessions": judged, "rules": [{"code": r.code, "wording": r.wording} for r in rules]}
    )
    return EXIT_OK


def _deciding(verdict: Verdict) -> str:
    # The row's label already says which tenant; the legend below quotes each rule in full.
    return f"({', '.join(applied.rule.code for applied in verdict.deciding)})"
