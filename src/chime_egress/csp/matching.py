"""Does a list of policies allow a request? CSP3's fetch-directive algorithms for a few kinds.

Anchors are sections of https://w3c.github.io/webappsec-csp/. The requests are those a Chime SDK
page makes: never parser-inserted, with no nonce and no integrity metadata (the SDK creates its
script elements, workers and worklets from code), and never redirected (redirect count 0).
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from .policy import Directive, Policy, parse_headers
from .sources import SourceExpression, SourceKind, parse_source

# The directive each kind of request is checked against (#effective-directive-for-a-request):
# connect = fetch(), XMLHttpRequest, WebSocket, EventSource (initiator "fetch" or destination "");
# script = a script element or an AudioWorklet module (destination "audioworklet" is script-like);
# worker = Worker and SharedWorker, blob: URLs included. wasm and eval are not fetches: they are
# #can-compile-wasm-bytes and #can-compile-strings, which consult script-src only.
KIND_DIRECTIVES: Mapping[str, str] = {
    "connect": "connect-src",
    "script": "script-src-elem",
    "worker": "worker-src",
    "image": "img-src",
    "frame": "frame-src",
    "style": "style-src-elem",
    "font": "font-src",
    "media": "media-src",
    "wasm": "script-src",
    "eval": "script-src",
}
REQUEST_KINDS: tuple[str, ...] = tuple(KIND_DIRECTIVES)
COMPILE_KINDS = frozenset({"wasm", "eval"})
_SCRIPT_LIKE_KINDS = frozenset({"script", "worker"})

# #directive-fallback-list. script-src, child-src and style-src are nobody's effective
# directive, but they are where wasm/eval, frames and workers end up, and merge.py walks them.
FALLBACKS: Mapping[str, tuple[str, ...]] = {
    "script-src-elem": ("script-src-elem", "script-src", "default-src"),
    "script-src-attr": ("script-src-attr", "script-src", "default-src"),
    "style-src-elem": ("style-src-elem", "style-src", "default-src"),
    "style-src-attr": ("style-src-attr", "style-src", "default-src"),
    "worker-src": ("worker-src", "child-src", "script-src", "default-src"),
    "connect-src": ("connect-src", "default-src"),
    "manifest-src": ("manifest-src", "default-src"),
    "object-src": ("object-src", "default-src"),
    "frame-src": ("frame-src", "child-src", "default-src"),
    "media-src": ("media-src", "default-src"),
    "font-src": ("font-src", "default-src"),
    "img-src": ("img-src", "default-src"),
    "script-src": ("script-src", "default-src"),
    "child-src": ("child-src", "default-src"),
    "style-src": ("style-src", "default-src"),
    "default-src": ("default-src",),
}

# The URL Standard's special schemes and their default ports (a URL's port is null at the default).
DEFAULT_PORTS: Mapping[str, int | None] = {
    "http": 80,
    "https": 443,
    "ws": 80,
    "wss": 443,
    "ftp": 21,
    "file": None,
}


@dataclass(frozen=True)
class Url:
    scheme: str
    host: str | None
    """Lowercased; None for blob:, data: and other URLs without an authority."""
    port: int | None
    """None when absent or the scheme's default, as the URL Standard stores it."""
    path: str
    is_domain: bool


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int | None
    opaque: bool = False

    @property
    def serialized(self) -> str:
        if self.opaque:
            return "null"
        port = f":{self.port}" if self.port is not None else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}{port}"


OPAQUE_ORIGIN = Origin("", "", None, opaque=True)


@lru_cache(maxsize=4096)
def parse_url(text: str) -> Url:
    """The parts of an absolute URL that source matching looks at; ValueError if unusable.

    Where urllib departs from the URL Standard in ways that change the host or path a browser
    sees, this follows the browser: tabs and newlines anywhere are dropped, a backslash in a
    special URL is a slash (`https://app.test\\@x.chime.aws/` is host app.test), and dot
    segments, also percent-encoded ones, are resolved (`/api/%2e%2e/secret` is `/secret`).
    """
    text = text.strip(" \t\n\f\r\x00").translate(_TAB_AND_NEWLINE)
    scheme_end = text.find(":")
    if scheme_end > 0 and text[:scheme_end].lower() in DEFAULT_PORTS:
        text = text[: scheme_end + 1] + text[scheme_end + 1 :].replace("\\", "/")
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError as error:
        raise ValueError(f"{text!r} is not a valid URL: {error}") from None
    scheme = parts.scheme.lower()
    if not scheme:
        raise ValueError(f"{text!r} is not an absolute URL (no scheme)")
    host = parts.hostname if parts.netloc else None
    if scheme in DEFAULT_PORTS and scheme != "file" and not host:
        raise ValueError(f"{text!r} has no host")
    if port is not None and port == DEFAULT_PORTS.get(scheme):
        port = None
    path = parts.path
    if scheme in DEFAULT_PORTS:
        path = _remove_dot_segments(path)  # a special URL's path is never empty
    return Url(scheme, host, port, path, host is not None and _is_domain(host, scheme))


_TAB_AND_NEWLINE = {ord("\t"): None, ord("\n"): None, ord("\r"): None}
_SINGLE_DOT = {".", "%2e"}
_DOUBLE_DOT = {"..", ".%2e", "%2e.", "%2e%2e"}


def _remove_dot_segments(path: str) -> str:
    """The URL Standard's path parsing for special URLs: "." and ".." segments resolved."""
    segments = path.split("/")[1:] if path.startswith("/") else path.split("/")
    output: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        lowered = segment.lower()
        if lowered in _DOUBLE_DOT:
            if output:
                output.pop()
            if last:
                output.append("")
        elif lowered in _SINGLE_DOT:
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/" + "/".join(output)


def _is_domain(host: str, scheme: str) -> bool:
    # Non-special URLs have opaque hosts, which are not domains (#match-hosts, step 1).
    if scheme not in DEFAULT_PORTS:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


@lru_cache(maxsize=256)
def parse_origin(text: str) -> Origin:
    """A serialized origin ("https://app.example", "null"), or a URL whose origin is taken."""
    if text.strip() == "null":
        return OPAQUE_ORIGIN
    url = parse_url(text)
    if url.host is None or url.scheme not in DEFAULT_PORTS or url.scheme == "file":
        raise ValueError(f"{text!r} is not a tuple origin such as https://app.example")
    return Origin(url.scheme, url.host, url.port)


def url_origin(url: Url) -> Origin:
    # blob: URLs are deliberately opaque here, though the URL Standard gives them their
    # creator's origin: WPT content-security-policy/blob/self-doesnt-match-blob.sub.html and
    # every browser require blob: to be listed explicitly ('self' never covers it).
    if url.host is None or url.scheme not in DEFAULT_PORTS or url.scheme == "file":
        return OPAQUE_ORIGIN
    return Origin(url.scheme, url.host, url.port)


def scheme_part_match(a: str, b: str) -> bool:
    """#scheme-part-match as browsers apply it: a scheme, or an insecure one's secure upgrade.

    CSP3 also lets `ws:` match http(s) and `wss:` match `https:` (a WebSocket handshake is an
    http(s) fetch). Chromium (csp_source.cc) and Firefox match only http->https and ws->wss, so
    under `connect-src wss://*.chime.aws` they block `fetch("https://x.chime.aws")`. The checker
    follows the browsers here: it must never call allowed what a browser blocks. (Where browsers
    are looser than the spec, as with a bare `*` and `wss:`, it keeps the spec's stricter answer.)
    """
    a, b = a.lower(), b.lower()
    return a == b or (a == "http" and b == "https") or (a == "ws" and b == "wss")


def host_part_match(pattern: str, url: Url) -> bool:
    """#host-part-match. IP literals never match (step 1), unlike in Chromium."""
    if url.host is None or not url.is_domain:
        return False
    if pattern == "*":
        return True
    host = url.host.lower()
    if pattern.startswith("*."):
        # The leading "." stays in `remaining`, so *.chime.aws never matches chime.aws itself.
        return host.endswith(pattern[1:].lower())
    return pattern.lower() == host


def port_part_match(port_part: str | None, url: Url) -> bool:
    """#port-part-matches: no port in the source means the URL's scheme's default port."""
    if port_part == "*":
        return True
    normalized = None if port_part is None else int(port_part)
    if normalized == url.port:
        return True
    return url.port is None and normalized == DEFAULT_PORTS.get(url.scheme)


def path_part_match(path_a: str, path_b: str) -> bool:
    """#path-part-match: exact, unless path A ends in "/" (then a prefix, by whole segments)."""
    if not path_a:
        return True
    if path_a == "/" and not path_b:
        return True
    exact = not path_a.endswith("/")
    list_a = path_a.split("/")
    list_b = path_b.split("/")
    if len(list_a) > len(list_b):
        return False
    if exact and len(list_a) != len(list_b):
        return False
    if not exact:
        list_a.pop()
    unquote = urllib.parse.unquote
    return all(unquote(a) == unquote(b) for a, b in zip(list_a, list_b, strict=False))


def url_matches_expression(url: Url, expression: SourceExpression, origin: Origin) -> bool:
    """#match-url-to-source-expression, with redirect count 0."""
    if expression.kind is SourceKind.STAR:
        # By the spec * covers http(s) and the page's own scheme only, so never ws:, wss:,
        # blob: or data: on an https page. Chromium and Firefox also let * match ws: and wss:.
        return url.scheme in ("http", "https") or (
            not origin.opaque and url.scheme == origin.scheme
        )
    if expression.kind is SourceKind.SCHEME:
        assert expression.scheme is not None
        return scheme_part_match(expression.scheme, url.scheme)
    if expression.kind is SourceKind.HOST:
        assert expression.host is not None
        if expression.scheme is not None and not scheme_part_match(expression.scheme, url.scheme):
            return False
        if url.host is None:
            return False
        # A scheme-less source takes the page's scheme: on an https page, *.chime.aws matches
        # https: only, never wss: (the page's scheme, https, does not scheme-part match wss).
        if expression.scheme is None and (
            origin.opaque or not scheme_part_match(origin.scheme, url.scheme)
        ):
            return False
        if not host_part_match(expression.host, url):
            return False
        if not port_part_match(expression.port, url):
            return False
        return path_part_match(expression.path, url.path)
    if expression.keyword == "'self'":
        return _matches_self(url, origin)
    return False


def _matches_self(url: Url, origin: Origin) -> bool:
    if origin.opaque or url.host is None:
        return False
    if url_origin(url) == origin:
        return True
    # The secure upgrade of step 4: an https page's 'self' also covers wss: on its host:port.
    if url.host != origin.host or url.port != origin.port:
        return False
    return url.scheme in ("https", "wss") or (
        origin.scheme == "http" and url.scheme in ("http", "ws")
    )


def url_matches_source_list(url: Url, sources: Sequence[str], origin: Origin) -> bool:
    """#match-url-to-source-list. An empty list, or 'none' alone, matches nothing."""
    if not sources:
        return False
    if len(sources) == 1 and sources[0].lower() == "'none'":
        return False
    return any(url_matches_expression(url, parse_source(token), origin) for token in sources)


def governing_directive(policy: Policy, kind: str) -> Directive | None:
    """The directive of `policy` whose value decides requests of `kind`, or None (unrestricted).

    wasm and eval map to script-src, whose fallback list is script-src, default-src: the chain of
    #can-compile-strings and #can-compile-wasm-bytes."""
    for name in FALLBACKS[KIND_DIRECTIVES[kind]]:
        directive = policy.get(name)
        if directive is not None:
            return directive
    return None


def _allows(value: Sequence[str], kind: str, url: Url | None, origin: Origin) -> bool:
    lowered = {token.lower() for token in value}
    if kind == "wasm":
        return bool(lowered & {"'wasm-unsafe-eval'", "'unsafe-eval'"})
    if kind == "eval":
        return "'unsafe-eval'" in lowered
    assert url is not None
    # #script-pre-request: 'strict-dynamic' allows every script-like request that is not
    # parser-inserted, whatever its URL, and the SDK's loads never are.
    if kind in _SCRIPT_LIKE_KINDS and "'strict-dynamic'" in lowered:
        return True
    return url_matches_source_list(url, value, origin)


@dataclass(frozen=True)
class Decision:
    """The verdict of every policy on one request."""

    allowed: bool
    """No enforced policy blocks the request."""
    effective_directive: str | None
    """When blocked: the request's effective directive (as in a violation report)."""
    directive: str | None
    """When blocked: the directive present in the blocking policy that decided (a fallback)."""
    policy_index: int | None
    """When blocked: the index of the first blocking policy."""
    reported_by: tuple[int, ...] = ()
    """Indexes of report-only policies that would report the request."""


def _blocking_directive(policy: Policy, kind: str, target: Url | None, page: Origin) -> str | None:
    """The directive of `policy` that refuses the request, or None when it allows it."""
    directive = governing_directive(policy, kind)
    if directive is None or _allows(directive.value, kind, target, page):
        return None
    return directive.name


def evaluate(policies: Sequence[Policy], kind: str, url: str, origin: str | Origin) -> Decision:
    """Run every policy on a request of `kind` for `url` made by a page of `origin`."""
    if kind not in KIND_DIRECTIVES:
        raise ValueError(
            f"unknown request kind {kind!r}; expected one of {', '.join(REQUEST_KINDS)}"
        )
    page = origin if isinstance(origin, Origin) else parse_origin(origin)
    target = None if kind in COMPILE_KINDS else parse_url(url)
    blocked: tuple[str, int] | None = None
    reported: list[int] = []
    for index, policy in enumerate(policies):
        name = _blocking_directive(policy, kind, target, page)
        if name is None and policy.vertical_tab_reading is not None:
            # Browsers disagree on a vertical tab: blocked if either reading blocks.
            name = _blocking_directive(policy.vertical_tab_reading, kind, target, page)
        if name is None:
            continue
        if policy.disposition == "report":
            reported.append(index)
        elif blocked is None:
            blocked = (name, index)
    if blocked is None:
        return Decision(True, None, None, None, tuple(reported))
    return Decision(False, KIND_DIRECTIVES[kind], blocked[0], blocked[1], tuple(reported))


def request_allowed(
    policies: Sequence[str], kind: str, url: str, origin: str
) -> tuple[bool, str | None]:
    """Whether enforced header values `policies` allow the request, and if not, the effective
    directive that blocked it. Each value may hold several comma-separated policies; every
    policy must allow. `url` is ignored for "wasm" and "eval"."""
    decision = evaluate(parse_headers(policies), kind, url, origin)
    return decision.allowed, decision.effective_directive
