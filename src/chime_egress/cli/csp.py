"""`chime-egress csp`: generate, check and merge Content Security Policies for Chime SDK pages.

Everything is decided by chime_egress.csp (pure CSP Level 3 code); this module only reads the
policies (arguments, a file, or an app's own response) and prints. --url fetches with urllib as
`ranges update` does. Exit codes follow the brief for these commands: 0 fine, 1 a requested
feature is blocked (check), 2 a bad command line or unreadable input.
"""

from __future__ import annotations

import argparse
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from .. import __version__
from ..csp import (
    FEATURES,
    SAMPLE_ORIGIN,
    CheckReport,
    check_policies,
    generate_policy,
    merge_policies,
    needed_sources,
    parse_features,
)
from ..csp.features import check_features
from ..csp.matching import parse_origin
from .support import LIST_HELP, ListAction, add_command, format_argument, print_error, typed

EXIT_OK = 0
EXIT_BLOCKED = 1
EXIT_USAGE = 2

HEADER = "Content-Security-Policy"
REPORT_ONLY_HEADER = "Content-Security-Policy-Report-Only"
URL_TIMEOUT_SECONDS = 30
MAX_BODY_BYTES = 2 * 1024 * 1024  # enough to find <meta> policies in the page's head

_FEATURE_HELP = f"the features the page uses ({LIST_HELP}), from: {', '.join(FEATURES)}"


def _feature(name: str) -> str:
    (feature,) = parse_features(name)
    return feature


_POLICY_FILE_HELP = (
    "a file of policies, one header value per line; a line may start with "
    f"'{HEADER}:' or '{REPORT_ONLY_HEADER}:'; # starts a comment line"
)


def _epilog(ok: str, problem: str = "") -> str:
    lines = ["exit codes:", f"  0  {ok}"]
    if problem:
        lines.append(f"  1  {problem}")
    lines.append("  2  usage error (bad command line) or unreadable input")
    return "\n".join(lines)


def _origin(text: str) -> str:
    return parse_origin(text).serialized


def add_csp_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `csp generate`, `csp check` and `csp merge` to the chime-egress command line."""
    csp = add_command(
        commands,
        "csp",
        summary="generate, check or merge a web page's Content Security Policy for the Chime SDK",
        description=(
            "Content Security Policy for web apps using the Amazon Chime SDK for JavaScript,\n"
            "by the CSP Level 3 rules browsers follow. Features:\n"
            + "".join(f"  {feature}\n" for feature in FEATURES)
            + "See docs/csp.md for what each feature needs and the mistakes `check` finds."
        ),
        epilog="See `chime-egress csp generate|check|merge --help`.",
    )
    csp_commands = csp.add_subparsers(dest="csp_command", required=True, metavar="COMMAND")
    _add_generate(csp_commands)
    _add_check(csp_commands)
    _add_merge(csp_commands)


def _add_generate(csp_commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    generate = add_command(
        csp_commands,
        "generate",
        summary="print a policy allowing the chosen features",
        description=(
            "Print the smallest policy allowing the chosen features on top of\n"
            "default-src 'self' (the app's own resources stay allowed; everything else is\n"
            "blocked). WebAssembly gets 'wasm-unsafe-eval'; --allow-unsafe-eval gives\n"
            "'unsafe-eval' instead, which also allows eval(). Add the app's own needs, or use\n"
            "`csp merge` to extend the policy the app already has."
        ),
        epilog=_epilog(ok="policy printed"),
    )
    _features_argument(generate)
    _unsafe_eval_argument(generate)
    generate.add_argument(
        "--report-uri", metavar="PATH", help="add report-uri PATH (where violations are POSTed)"
    )
    generate.add_argument(
        "--header", action="store_true", help=f"print a whole '{HEADER}: ...' header line"
    )
    generate.set_defaults(handler=_generate)


def _add_check(csp_commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = add_command(
        csp_commands,
        "check",
        summary="say whether a policy lets each feature work, and what is wrong with it",
        description=(
            "For each feature: allowed, or blocked with the directive and a request the SDK\n"
            "makes that the policy blocks. Then the policy's mistakes that browsers accept\n"
            "silently (quoted hosts, a colon after a directive name, unknown or duplicate\n"
            "directives, misplaced keywords, 'unsafe-inline', 'unsafe-eval'...).\n\n"
            "Several --policy are several policies (several headers): each must allow a\n"
            "request. --url reads every Content-Security-Policy header of the app's response\n"
            "and <meta http-equiv> policies in its HTML; Report-Only headers are checked too\n"
            f"but block nothing. The page's origin is --origin, else the --url's origin, else\n"
            f"{SAMPLE_ORIGIN}."
        ),
        epilog=_epilog(ok="every feature is allowed", problem="a feature is blocked"),
    )
    _policy_arguments(check, url=True)
    _features_argument(check)
    check.add_argument(
        "--origin",
        type=typed(_origin),
        metavar="ORIGIN",
        help=f"the page's origin, e.g. https://app.example.com (default: {SAMPLE_ORIGIN}, or "
        "the --url's)",
    )
    check.add_argument(
        "--cacert",
        metavar="FILE",
        help="with an https --url: trust the CA certificates in FILE (PEM) instead of the "
        "system's, e.g. a development server's own CA",
    )
    format_argument(check, "json is one object with the features and findings", "--json")
    check.set_defaults(handler=_check)


def _add_merge(csp_commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    merge = add_command(
        csp_commands,
        "merge",
        summary="add the features' needs to existing policies without loosening anything else",
        description=(
            "Print each given policy (header value) with what the features need added:\n"
            "a directive present is extended ('none' is replaced); a missing one whose\n"
            "fallback is present (default-src...) is created from the fallback's sources and\n"
            "extended, leaving the fallback as it was; where nothing in the chain restricts\n"
            "the requests, nothing is added. Every policy in a value is merged on its own;\n"
            "'unsafe-inline' is never added. Report-Only lines of a --policy-file are printed\n"
            "unchanged."
        ),
        epilog=_epilog(ok="merged policies printed"),
    )
    _policy_arguments(merge, url=False)
    _features_argument(merge)
    _unsafe_eval_argument(merge)
    merge.set_defaults(handler=_merge)


def _features_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--features",
        required=True,
        action=ListAction,
        item=_feature,
        metavar="F",
        help=_FEATURE_HELP,
    )


def _unsafe_eval_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-unsafe-eval",
        action="store_true",
        help="use 'unsafe-eval' instead of 'wasm-unsafe-eval' (it also allows eval())",
    )


def _policy_arguments(parser: argparse.ArgumentParser, *, url: bool) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--policy",
        action="append",
        metavar="POLICY",
        help="a Content-Security-Policy header value (repeat for several policies)",
    )
    source.add_argument("--policy-file", metavar="FILE", help=_POLICY_FILE_HELP)
    if url:
        source.add_argument(
            "--url", metavar="URL", help="fetch this page and check the policies it is served with"
        )


# Reading policies


@dataclass(frozen=True)
class _Header:
    value: str
    report_only: bool = False
    name: str | None = None
    """The header name written before the value in a policy file, if any."""


class _InputError(Exception):
    """Unreadable input: the message says why."""


def _read_policy_file(path_text: str) -> list[_Header]:
    try:
        text = Path(path_text).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise _InputError(f"{path_text}: cannot read: {reason}") from None
    headers: list[_Header] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, colon, rest = stripped.partition(":")
        if colon and name.strip().lower() in (HEADER.lower(), REPORT_ONLY_HEADER.lower()):
            report_only = name.strip().lower() == REPORT_ONLY_HEADER.lower()
            headers.append(_Header(rest.strip(), report_only, name.strip()))
        else:
            headers.append(_Header(stripped))
    if not headers:
        raise _InputError(f"{path_text}: holds no policy")
    return headers


class _MetaPolicies(HTMLParser):
    """<meta http-equiv="Content-Security-Policy" content="..."> elements of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.policies: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "meta":
            return
        values = {name.lower(): value or "" for name, value in attrs}
        # A Report-Only <meta> is ignored by browsers (#meta-element), so only this one counts.
        if values.get("http-equiv", "").strip().lower() == HEADER.lower():
            self.policies.append(values.get("content", ""))


def _fetch(url: str, cacert: str | None = None) -> tuple[list[_Header], str]:
    """The policies a page is served with, and its final URL (after redirects)."""
    if not url.lower().startswith(("http://", "https://")):
        raise _InputError(f"{url}: only http and https URLs are supported")
    request = urllib.request.Request(url, headers={"User-Agent": f"chime-egress/{__version__}"})
    try:
        context = ssl.create_default_context(cafile=cacert) if cacert else None
    except (OSError, ssl.SSLError) as error:
        raise _InputError(f"{cacert}: cannot use as CA certificates: {error}") from None
    try:
        with urllib.request.urlopen(
            request, timeout=URL_TIMEOUT_SECONDS, context=context
        ) as response:
            final_url: str = response.geturl()
            enforced = response.headers.get_all(HEADER) or []
            report_only = response.headers.get_all(REPORT_ONLY_HEADER) or []
            content_type = response.headers.get_content_type()
            body: bytes = response.read(MAX_BODY_BYTES) if content_type == "text/html" else b""
            charset = response.headers.get_content_charset() or "utf-8"
    except urllib.error.HTTPError as error:
        raise _InputError(f"{url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise _InputError(f"{url}: cannot fetch: {reason}") from None
    headers = [_Header(value, False, HEADER) for value in enforced]
    headers += [_Header(value, True, REPORT_ONLY_HEADER) for value in report_only]
    if body:
        parser = _MetaPolicies()
        parser.feed(body.decode(charset, errors="replace"))
        headers += [_Header(value, False, "<meta>") for value in parser.policies]
    return headers, final_url


def _given_policies(args: argparse.Namespace) -> list[_Header]:
    if args.policy_file is not None:
        return _read_policy_file(args.policy_file)
    return [_Header(value) for value in args.policy]


# generate


def _generate(args: argparse.Namespace) -> int:
    try:
        policy = generate_policy(
            check_features(args.features),
            allow_unsafe_eval=args.allow_unsafe_eval,
            report_uri=args.report_uri,
        )
    except ValueError as error:
        parser: argparse.ArgumentParser = args.parser
        parser.error(str(error))
    print(f"{HEADER}: {policy}" if args.header else policy)
    return EXIT_OK


# check


def _check(args: argparse.Namespace) -> int:
    origin: str | None = args.origin
    try:
        if args.url is not None:
            headers, final_url = _fetch(args.url, args.cacert)
            if origin is None:
                origin = _origin(final_url)
            if not headers:
                print_error(f"{args.url}: served without any Content-Security-Policy")
        else:
            headers = _given_policies(args)
    except _InputError as error:
        print_error(str(error))
        return EXIT_USAGE
    report = check_policies(
        [header.value for header in headers if not header.report_only],
        check_features(args.features),
        origin or SAMPLE_ORIGIN,
        report_only=[header.value for header in headers if header.report_only],
    )
    if args.format == "json":
        document = report.to_json()
        if args.url is not None:
            document["url"] = args.url
        print(json.dumps(document, indent=2))
    else:
        _print_report(report)
    return EXIT_OK if report.allowed else EXIT_BLOCKED


def _print_report(report: CheckReport) -> None:
    print(f"origin: {report.origin}")
    if report.policies:
        print("policies:")
        for index, policy in enumerate(report.policies, 1):
            what = "report-only, blocks nothing" if policy.disposition == "report" else "enforced"
            print(f"  {index} ({what}): {policy}")
    else:
        print("policies: none (nothing is restricted)")
    print("features:")
    for result in report.features:
        print(f"  {result.feature}: {'allowed' if result.allowed else 'blocked'}")
        for failure, detail in zip(result.failures, result.details, strict=True):
            what = f"{failure.kind} {failure.url}" if failure.url else failure.kind
            print(f"    blocked by {failure.directive}: {what}")
            print(f"      {detail}")
        for failure in result.reported:
            what = f"{failure.kind} {failure.url}" if failure.url else failure.kind
            print(f"    reported (report-only) by {failure.directive}: {what}")
        if not result.allowed:
            needs = "; ".join(
                f"{directive} {' '.join(sources)}"
                for directive, sources in needed_sources([result.feature]).items()
            )
            print(f"    {result.feature} needs: {needs}")
    if report.findings:
        print("findings:")
        for finding in report.findings:
            where = f"{finding.directive}: " if finding.directive else ""
            print(f"  {finding.severity}: {where}{finding.message}")
    else:
        print("findings: none")
    if not report.allowed:
        print("`chime-egress csp merge` adds what is missing without loosening anything else.")


# merge


def _merge(args: argparse.Namespace) -> int:
    try:
        headers = _given_policies(args)
    except _InputError as error:
        print_error(str(error))
        return EXIT_USAGE
    for header in headers:
        value = header.value
        if not header.report_only:
            value = merge_policies(
                value, check_features(args.features), allow_unsafe_eval=args.allow_unsafe_eval
            )
        print(f"{header.name}: {value}" if header.name else value)
    return EXIT_OK
