"""The CSP addon's settings: its options parsed and checked, and the plan for a response's headers.

Pure, so the unit tests call it directly; each error names its option. csp_addon.py is the
mitmproxy glue that reads the options and applies the plan.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..private_files import open_private_append
from . import (
    SAMPLE_ORIGIN,
    evaluate,
    generate_policy,
    merge_policy,
    merge_policy_list,
    needed_sources,
    parse_features,
    parse_policy,
    parse_policy_list,
    probes_for,
    serialize_policy,
)
from .mimetype import extract_mime_type

CSP = "Content-Security-Policy"
CSP_REPORT_ONLY = "Content-Security-Policy-Report-Only"
REPORTING_ENDPOINTS = "Reporting-Endpoints"
REPORT_GROUP = "chime-csp"
"""The ``report-to`` group name the addon adds, and its ``Reporting-Endpoints`` member."""
# Types a browser renders as a document that can run script (HTML, XHTML, SVG, XML).
DOCUMENT_TYPES = (
    "text/html",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/xml",
    "application/xml",
)
# MIME Sniffing 7.1: types for which browsers sniff the body, as for no type at all.
SNIFFED_TYPES = ("unknown/unknown", "application/unknown")
DEFAULT_FEATURES = "meetings"
DEFAULT_REPORT_PATH = ""
_HOST_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
# "/" then not "/": "//host/path" is scheme-relative, and would send the reports to another site.
_REPORT_PATH = re.compile(r"/(?!/)[A-Za-z0-9\-._~!$&'()*+=:@/%]*")
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})

# --- option parsing (pure; each error names its option) ---------------------------------------


@dataclass(frozen=True)
class HostPatterns:
    """Which host names the addon acts on: ``*`` (all), exact names, ``*.suffix`` wildcards."""

    any_host: bool
    names: frozenset[str]
    suffixes: tuple[str, ...]  # ".example.com" for "*.example.com" (never the apex itself)

    def describe(self) -> str:
        if self.any_host:
            return "every host"
        return ", ".join([*sorted(self.names), *("*" + suffix for suffix in self.suffixes)])

    def matches(self, candidates: Iterable[str | None]) -> bool:
        if self.any_host:
            return True
        for candidate in candidates:
            name = normalize_host(candidate)
            if name and (name in self.names or name.endswith(self.suffixes)):
                return True
        return False


def normalize_host(name: str | None) -> str:
    """Lowercase, no brackets around IPv6 literals, no trailing dot."""
    if not name:
        return ""
    return name.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")


def parse_hosts(text: str) -> HostPatterns:
    """``chime_csp_hosts``: comma-separated host names, ``*.domain`` wildcards, or ``*``."""
    entries = [entry.strip() for entry in text.split(",") if entry.strip()]
    if not entries:
        raise ValueError(
            "chime_csp_hosts is required: the host names of the app (as the browser sees them, "
            "or the upstream's), '*.example.com' wildcards, or '*' for every host"
        )
    names: set[str] = set()
    suffixes: list[str] = []
    for entry in entries:
        if entry == "*":
            return HostPatterns(True, frozenset(), ())
        wildcard = entry.startswith("*.")
        name = normalize_host(entry[2:] if wildcard else entry)
        if not _is_host_name(name):
            raise ValueError(
                f"chime_csp_hosts: {entry!r} is not a host name "
                "(give names without scheme, port or path, e.g. app.example.com)"
            )
        if wildcard:
            suffixes.append("." + name)
        else:
            names.add(name)
    return HostPatterns(False, frozenset(names), tuple(suffixes))


def _is_host_name(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return True
    labels = name.split(".")
    return len(name) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)


def parse_bool(option: str, text: str) -> bool:
    """A yes/no option given as text (``true``/``false``, ``yes``/``no``, ``on``/``off``, 1/0)."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{option} must be true or false, not {text!r}")


def parse_report_path(text: str) -> str | None:
    """``chime_csp_report_path``: an absolute path on the app's origin, or empty for none.

    The path goes into header values (``report-uri``, ``Reporting-Endpoints``), so it must not hold
    anything that would end a directive, a policy or a quoted string there.
    """
    path = text.strip()
    if not path:
        return None
    if not _REPORT_PATH.fullmatch(path) or len(path) > 200 or ";" in path or "," in path:
        raise ValueError(
            f"chime_csp_report_path must be an absolute path such as /chime-csp-reports "
            f"(no scheme, host, query, ';' or ','), not {text!r}"
        )
    return path


def parse_report_file(text: str) -> Path | None:
    """``chime_csp_report_file``: a file the reports are appended to; it is opened once here so
    that a bad path stops start-up instead of losing every report later."""
    if not text.strip():
        return None
    path = Path(text.strip()).expanduser()
    try:
        with open_private_append(path):
            pass
    except OSError as error:
        raise ValueError(
            f"chime_csp_report_file: cannot append to {str(path)!r}: {error.strerror or error}"
        ) from None
    return path


def add_reporting(header_value: str, report_path: str) -> tuple[str, bool]:
    """Point every policy of a header value that has no reporting of its own at the collector.

    Both directives are added: browsers with the Reporting API use ``report-to`` (and then
    ignore ``report-uri``), the others ``report-uri``. A policy that already reports somewhere is
    left alone: the app's own collector keeps getting its reports. Returns the new value and
    whether ``report-to`` was added (then the response needs the Reporting-Endpoints member).
    """
    added = False
    policies: list[str] = []
    for policy in header_value.split(","):
        names = {_directive_name(part) for part in policy.split(";")}
        names.discard("")
        if names and not names & {"report-uri", "report-to"}:
            policy = f"{policy.rstrip().rstrip(';').rstrip()}; report-uri {report_path}; "
            policy += f"report-to {REPORT_GROUP}"
            added = True
        policies.append(policy)
    return ",".join(policies), added


def _directive_name(text: str) -> str:
    parts = text.split(None, 1)
    return parts[0].lower() if parts else ""


@dataclass(frozen=True)
class CspSettings:
    """Everything the hooks need, built and checked as a whole, then swapped in at once."""

    hosts: HostPatterns
    features: tuple[str, ...]
    report_only: bool
    allow_unsafe_eval: bool
    report_path: str | None
    report_file: Path | None
    default_policy: str
    """The policy set when the app sends none: merged with the features, reporting added."""
    default_reports_to: bool = False
    """Whether default_policy got the addon's report-to (the response then needs the endpoint)."""


def build_settings(options: Mapping[str, str]) -> CspSettings:
    """Parse and check the ``chime_csp_*`` options; a ValueError names the option at fault."""
    hosts = parse_hosts(options["chime_csp_hosts"])
    try:
        features = tuple(parse_features(options["chime_csp_features"]))
    except ValueError as error:
        raise ValueError(f"chime_csp_features: {error}") from None
    if not features:
        raise ValueError("chime_csp_features must name at least one feature")
    report_only = parse_bool("chime_csp_report_only", options["chime_csp_report_only"])
    unsafe_eval = parse_bool("chime_csp_allow_unsafe_eval", options["chime_csp_allow_unsafe_eval"])
    report_path = parse_report_path(options["chime_csp_report_path"])
    report_file = parse_report_file(options["chime_csp_report_file"])
    if report_file is not None and report_path is None:
        raise ValueError(
            "chime_csp_report_file needs chime_csp_report_path: without a collector path "
            "no report would ever reach the file"
        )
    default_policy = build_default_policy(
        options["chime_csp_default_policy"], features, allow_unsafe_eval=unsafe_eval
    )
    default_reports_to = False
    if report_path is not None:
        default_policy, default_reports_to = add_reporting(default_policy, report_path)
    return CspSettings(
        hosts=hosts,
        features=features,
        report_only=report_only,
        allow_unsafe_eval=unsafe_eval,
        report_path=report_path,
        report_file=report_file,
        default_policy=default_policy,
        default_reports_to=default_reports_to,
    )


def build_default_policy(
    text: str, features: Sequence[str], *, allow_unsafe_eval: bool = False
) -> str:
    """``chime_csp_default_policy``: empty for the generated policy, else one policy to which the
    features' needs are added, which must then allow every request the features make."""
    text = text.strip()
    if not text:
        return generate_policy(features, allow_unsafe_eval=allow_unsafe_eval)
    if "," in text:
        raise ValueError("chime_csp_default_policy must be a single policy (no ',')")
    if not text.isascii() or not text.isprintable():
        raise ValueError("chime_csp_default_policy must be printable ASCII on one line")
    # Printable ASCII without a comma: exactly one policy, split as the browser splits it.
    parsed = parse_policy(text)
    if not {directive.name for directive in parsed} - {"report-uri", "report-to"}:
        raise ValueError(f"chime_csp_default_policy holds no directive: {text!r}")
    merged = merge_policy(parsed, needed_sources(features, allow_unsafe_eval=allow_unsafe_eval))
    policy = serialize_policy(merged)
    for feature in features:
        # The probes' own sample origin stands in for the app's, which is not known here.
        for kind, url in probes_for(feature, SAMPLE_ORIGIN):
            decision = evaluate((merged,), kind, url, SAMPLE_ORIGIN)
            if not decision.allowed:
                raise ValueError(
                    f"chime_csp_default_policy blocks {url} ({kind}), which {feature} needs, "
                    f"even with the features added: {decision.effective_directive} in {policy!r}"
                )
    return policy


# --- the header plan (pure) -------------------------------------------------------------------


@dataclass(frozen=True)
class HeaderPlan:
    """The CSP header fields a response leaves with."""

    enforced: tuple[str, ...]
    report_only: tuple[str, ...]
    add_reporting_endpoint: bool
    kept_unmerged: tuple[tuple[str, str], ...] = ()
    """App policies that could not be merged, left as they were (stricter), with the error."""


@lru_cache(maxsize=1024)
def rewritten_policy(
    value: str, features: tuple[str, ...], allow_unsafe_eval: bool, report_path: str | None
) -> tuple[str, bool] | None:
    """An app's header value with the features merged in and the addon's reporting added (and
    whether that needs the Reporting-Endpoints header); None when it holds no policy.

    Remembered: an app sends the same policy on every page, and the work costs about 150 µs
    (bench/bench_csp.py). Bounded, for apps whose policies carry a fresh nonce each time.
    Raises what merge_policy_list raises for a policy it cannot read (not remembered).
    """
    policies = parse_policy_list(value)
    if not policies:
        return None  # an empty header, or one of only ";" and ",", holds no policy
    merged = merge_policy_list(policies, features, allow_unsafe_eval=allow_unsafe_eval)
    if report_path is None:
        return merged, False
    return add_reporting(merged, report_path)


def plan_headers(
    enforced: Sequence[str], report_only: Sequence[str], settings: CspSettings
) -> HeaderPlan:
    """What to send, given the app's header values (one entry per header field)."""
    # (value, written by the addon?) for every enforced policy header, in the app's order.
    values: list[tuple[str, bool]] = []
    kept: list[tuple[str, str]] = []
    add_endpoint = False
    for value in enforced:
        try:
            rewritten = rewritten_policy(
                value, settings.features, settings.allow_unsafe_eval, settings.report_path
            )
        except Exception as error:  # never loosen a policy we cannot read: keep it as it is
            kept.append((value, repr(error)))
            values.append((value, False))
            continue
        if rewritten is None:
            continue
        merged, added = rewritten
        add_endpoint |= added
        values.append((merged, True))
    if not values:
        values = [(settings.default_policy, True)]
        add_endpoint = settings.default_reports_to
    if settings.report_only:
        # The app's enforced policies stay exactly as they were (report-only never weakens
        # them); what the addon would have enforced goes out report-only, beside the app's own.
        written = [value for value, ours in values if ours]
        return HeaderPlan(
            enforced=tuple(enforced),
            report_only=(*report_only, *written),
            add_reporting_endpoint=add_endpoint and bool(written),
            kept_unmerged=tuple(kept),
        )
    return HeaderPlan(
        enforced=tuple(value for value, _ in values),
        report_only=tuple(report_only),
        add_reporting_endpoint=add_endpoint,
        kept_unmerged=tuple(kept),
    )


def is_document(content_types: Sequence[str]) -> bool:
    """Whether a browser may render the response as a document that runs script.

    The type is the one the browser extracts from every Content-Type field (`mimetype`). With
    none valid (or no header at all), or a type browsers treat as unknown, they sniff the body
    and may well render HTML, so the answer is yes: a page must never leave without its policy.
    """
    mime = extract_mime_type(content_types)
    if mime is None or mime.essence in SNIFFED_TYPES:
        return True
    return mime.essence in DOCUMENT_TYPES or mime.essence.endswith("+xml")
