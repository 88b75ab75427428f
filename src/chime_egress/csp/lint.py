"""Mistakes in a policy that a browser silently accepts: each becomes a Finding.

Browsers never reject a policy; they skip what they cannot use (#parse-serialized-policy keeps
unknown directives, #match-url-to-source-expression never matches a malformed source), so a
typo loosens or tightens a policy without a word. The published Chime SDK examples carry several
such mistakes (docs/csp.md lists them); every one is caught here.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .keywords import EVAL_DIRECTIVES, INLINE_DIRECTIVES, effective_in, where_effective
from .policy import Directive, Policy
from .sources import KEYWORDS, SourceKind, parse_source, quoted_url_source

# Directives whose value is a source list (#framework-directive-source-list).
FETCH_DIRECTIVES = frozenset(
    {
        "default-src",
        "child-src",
        "connect-src",
        "font-src",
        "frame-src",
        "img-src",
        "manifest-src",
        "media-src",
        "object-src",
        "script-src",
        "script-src-elem",
        "script-src-attr",
        "style-src",
        "style-src-elem",
        "style-src-attr",
        "worker-src",
        "fenced-frame-src",
    }
)
SOURCE_LIST_DIRECTIVES = FETCH_DIRECTIVES | {"base-uri", "form-action", "frame-ancestors"}
OBSOLETE_DIRECTIVES = frozenset(
    {
        "block-all-mixed-content",
        "plugin-types",
        "prefetch-src",
        "referrer",
        "navigate-to",
        "require-sri-for",
        "reflected-xss",
        "disown-opener",
    }
)
KNOWN_DIRECTIVES = (
    SOURCE_LIST_DIRECTIVES
    | OBSOLETE_DIRECTIVES
    | {
        "report-uri",
        "report-to",
        "sandbox",
        "upgrade-insecure-requests",
        "require-trusted-types-for",
        "trusted-types",
        "webrtc",
    }
)
# What a directive that a browser ignores would have restricted.
_WEBSOCKET_DIRECTIVES = frozenset({"connect-src", "default-src"})
_META_PREFIX = re.compile(r"^(?:content|http-equiv)=[\"']?", re.IGNORECASE)
_UNQUOTED_KEYWORDS = frozenset(keyword.strip("'") for keyword in (*KEYWORDS, "'none'"))


class Finding(NamedTuple):
    severity: str
    """"error": the policy does not do what it says; "warning": risky or ineffective;
    "info": worth knowing."""
    directive: str
    message: str


def lint_policy(policy: Policy) -> list[Finding]:
    findings: list[Finding] = []
    if policy.vertical_tab_reading is not None:
        findings.append(
            Finding(
                "error",
                "",
                "the policy holds a vertical tab: Chromium takes it as a space, the spec and "
                "other browsers do not, so browsers enforce different policies; use a space",
            )
        )
    for directive in policy.directives:
        findings.extend(_lint_name(directive))
        if directive.name in SOURCE_LIST_DIRECTIVES:
            findings.extend(_lint_sources(directive))
    for duplicate in policy.ignored:
        findings.append(
            Finding(
                "warning",
                duplicate.name,
                f"{duplicate.name} appears more than once: browsers use the first and ignore "
                f"`{duplicate}`; merge the sources into one {duplicate.name}",
            )
        )
    if "report-uri" in policy and "report-to" in policy:
        findings.append(
            Finding(
                "info",
                "report-uri",
                "report-uri is ignored by browsers that support report-to (both are present)",
            )
        )
    return findings


def _lint_name(directive: Directive) -> list[Finding]:
    name = directive.name
    if name in KNOWN_DIRECTIVES:
        if name in OBSOLETE_DIRECTIVES:
            return [Finding("info", name, f"{name} is obsolete; current browsers ignore it")]
        return []
    if name.endswith(":") and name[:-1] in KNOWN_DIRECTIVES:
        real = name[:-1]
        return [
            Finding(
                "error",
                name,
                f"`{name}` is not a directive (a colon after the name): browsers ignore it, so "
                f"its sources are not allowed by it and {real} is not set by it; "
                f"write `{real} {' '.join(directive.value)}`",
            )
        ]
    meta = _META_PREFIX.match(name)
    if meta and name[meta.end() :] in KNOWN_DIRECTIVES:
        real = name[meta.end() :]
        effect = (
            "connections are not restricted by it" if real == "connect-src" else "it has no effect"
        )
        return [
            Finding(
                "error",
                name,
                f"`{name}` is not a directive: the header value starts with `{name[: meta.end()]}` "
                f'copied from a <meta content="..."> attribute, so browsers ignore this '
                f"{real} and {effect}; remove `{name[: meta.end()]}` (and the closing quote)",
            )
        ]
    return [Finding("error", name, f"`{name}` is not a CSP directive; browsers ignore it")]


def _lint_sources(directive: Directive) -> list[Finding]:
    name, value = directive.name, directive.value
    findings: list[Finding] = []

    def add(severity: str, message: str) -> None:
        findings.append(Finding(severity, name, message))

    if not value:
        add("warning", f"{name} has no sources: like 'none', it blocks everything it governs")
        return findings
    sources = [parse_source(token) for token in value]
    for source in sources:
        token = source.text
        if source.kind is SourceKind.INVALID:
            add("error", _invalid_message(name, token))
        elif source.kind is SourceKind.NONE and len(value) > 1:
            add("info", f"'none' is ignored beside other sources in {name}")
        elif (
            source.kind is SourceKind.HOST
            and source.scheme is None
            and source.port is None
            and not source.path
            and source.host in _UNQUOTED_KEYWORDS
        ):
            add("warning", f"`{token}` is a host name; the keyword is written `'{token}'`")
        elif not effective_in(token, name):
            add(
                "warning",
                f"`{token}` has no effect in {name}; it belongs in {where_effective(token)}",
            )
        elif source.keyword == "'unsafe-inline'" and name in INLINE_DIRECTIVES:
            add(
                "warning",
                f"'unsafe-inline' in {name} allows injected inline code; the Chime SDK does not "
                "need it (use nonces or hashes for the app's own inline code)",
            )
        elif source.keyword == "'unsafe-eval'" and name in EVAL_DIRECTIVES:
            add(
                "warning",
                f"'unsafe-eval' in {name} allows eval(); for WebAssembly (Voice Focus, VideoFx) "
                "'wasm-unsafe-eval' is enough",
            )
        elif (
            source.kind is SourceKind.HOST
            and source.scheme is None
            and name in _WEBSOCKET_DIRECTIVES
        ):
            add(
                "info",
                f"`{token}` has no scheme: on an https page it matches https: URLs only, never "
                f"wss: (WebSocket signaling needs wss://{source.host})",
            )
        elif source.kind is SourceKind.STAR and name in _WEBSOCKET_DIRECTIVES:
            add(
                "info",
                f"`*` in {name} does not match ws:/wss: by the CSP3 spec (Chromium and Firefox "
                "allow it); list wss:// sources explicitly",
            )
    if all(source.kind is SourceKind.INVALID for source in sources):
        add(
            "error",
            f"{name} holds no valid source, so it acts as 'none' and blocks everything it governs",
        )
    return findings


def _invalid_message(name: str, token: str) -> str:
    inner = quoted_url_source(token)
    if inner is not None:
        what = "scheme" if inner.kind is SourceKind.SCHEME else "host"
        fix = f"write {inner.text} without quotes"
        if inner.kind is SourceKind.HOST and inner.scheme is None and name in _WEBSOCKET_DIRECTIVES:
            # Unquoted but scheme-less, it would still miss WebSockets on an https page.
            fix = f"write https://{inner.text} (and wss://{inner.text} for WebSockets)"
        return (
            f"`{token}` in {name} is not a valid source: a quoted {what} is neither a keyword nor "
            f"a {what}, so it matches nothing; {fix}"
        )
    if token.startswith("'") and token.endswith("'"):
        hint = " ('wasm-unsafe-eval' is the keyword for WebAssembly)" if "wasm" in token else ""
        return f"`{token}` in {name} is not a CSP keyword, so it matches nothing{hint}"
    return f"`{token}` in {name} is not a valid source expression, so it matches nothing"
