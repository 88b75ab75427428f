"""CSP3 matching: source expressions (#match-url-to-source-expression), fallbacks
(#directive-fallback-list), several policies, report-only, wasm and eval."""

from __future__ import annotations

import pytest

from chime_egress.csp import REQUEST_KINDS, evaluate, parse_policy, request_allowed
from chime_egress.csp.matching import parse_origin, parse_url, url_matches_source_list
from chime_egress.csp.sources import SourceKind, parse_source

PAGE = "https://app.example"

# (source list, URL, page origin, matches?)
SOURCE_CASES = [
    # Scheme-less host sources take the page's scheme: https only on an https page.
    ("*.chime.aws", "https://signal.chime.aws/", PAGE, True),
    ("*.chime.aws", "wss://signal.m3.ue1.app.chime.aws/control/x", PAGE, False),
    ("*.chime.aws", "http://signal.chime.aws/", PAGE, False),
    ("*.chime.aws", "http://signal.chime.aws/", "http://app.example", True),
    ("*.chime.aws", "https://signal.chime.aws/", "http://app.example", True),
    ("*.chime.aws", "ws://signal.chime.aws/", "http://app.example", False),
    # Wildcards never match the apex; they match any depth.
    ("*.chime.aws", "https://chime.aws/", PAGE, False),
    ("https://*.chime.aws", "https://chime.aws/", PAGE, False),
    ("https://*.chime.aws", "https://a.b.c.chime.aws/x", PAGE, True),
    ("https://*.chime.aws", "https://evilchime.aws/", PAGE, False),
    ("https://*.CHIME.aws", "https://A.Chime.AWS/", PAGE, True),
    # Schemes: https:// never matches wss:, wss:// is needed.
    ("https://*.chime.aws", "wss://signal.chime.aws/", PAGE, False),
    ("wss://*.chime.aws", "wss://signal.chime.aws/", PAGE, True),
    ("wss://*.chime.aws", "ws://signal.chime.aws/", PAGE, False),
    ("http://a.example", "https://a.example/", PAGE, True),
    ("https://a.example", "http://a.example/", PAGE, False),
    ("ws://a.example", "wss://a.example/", PAGE, True),
    # CSP3's #match-schemes would also let ws and wss match https; browsers do not, and the
    # checker follows them (tests/browser confirms it in Chromium).
    ("wss://a.example", "https://a.example/", PAGE, False),
    ("ws://a.example", "https://a.example/", PAGE, False),
    ("ws://a.example", "http://a.example/", PAGE, False),
    ("wss:", "https://a.example/", PAGE, False),
    # Scheme sources.
    ("https:", "https://any.example/", PAGE, True),
    ("https:", "wss://any.example/", PAGE, False),
    ("http:", "https://any.example/", PAGE, True),
    ("wss:", "wss://any.example/", PAGE, True),
    ("ws:", "wss://any.example/", PAGE, True),
    ("blob:", "blob:https://app.example/3f2a", PAGE, True),
    ("BLOB:", "blob:https://app.example/3f2a", PAGE, True),
    ("data:", "data:image/png;base64,AAAA", PAGE, True),
    ("blob:", "data:image/png;base64,AAAA", PAGE, False),
    # A bare * covers http(s) and the page's own scheme only (Chromium and Firefox differ on ws).
    ("*", "https://any.example/", PAGE, True),
    ("*", "http://any.example/", PAGE, True),
    ("*", "wss://any.example/", PAGE, False),
    ("*", "blob:https://app.example/3f2a", PAGE, False),
    ("*", "data:text/plain,x", PAGE, False),
    ("*", "wss://any.example/", "wss://socket.example", True),
    # 'self': same origin, plus the secure upgrade on the same host and port.
    ("'self'", "https://app.example/x", PAGE, True),
    ("'SELF'", "https://app.example/x", PAGE, True),
    ("'self'", "wss://app.example/socket", PAGE, True),
    ("'self'", "ws://app.example/socket", PAGE, False),
    ("'self'", "http://app.example/", PAGE, False),
    ("'self'", "https://app.example:8443/", PAGE, False),
    ("'self'", "wss://app.example:8443/", "https://app.example:8443", True),
    ("'self'", "https://other.example/", PAGE, False),
    ("'self'", "https://sub.app.example/", PAGE, False),
    ("'self'", "ws://app.example/", "http://app.example", True),
    ("'self'", "https://app.example/", "http://app.example", True),
    ("'self'", "blob:https://app.example/3f2a", PAGE, False),
    ("'self'", "https://app.example/", "null", False),
    # Ports: none means the scheme's default; :* any.
    ("https://a.example", "https://a.example:443/", PAGE, True),
    ("https://a.example", "https://a.example:8443/", PAGE, False),
    ("https://a.example:8443", "https://a.example:8443/", PAGE, True),
    ("https://a.example:443", "https://a.example/", PAGE, True),
    ("https://a.example:*", "https://a.example:9/", PAGE, True),
    ("a.example:*", "https://a.example:9/", PAGE, True),
    ("http://a.example:80", "https://a.example/", PAGE, False),
    # Paths: exact unless ending in "/", where whole segments are a prefix; percent-decoded.
    ("https://a.example/workers/", "https://a.example/workers/w.js", PAGE, True),
    ("https://a.example/workers/", "https://a.example/workers", PAGE, False),
    ("https://a.example/workers/", "https://a.example/workersx/w.js", PAGE, False),
    ("https://a.example/workers/w.js", "https://a.example/workers/w.js", PAGE, True),
    ("https://a.example/workers/w.js", "https://a.example/workers/w.js?v=2", PAGE, True),
    ("https://a.example/workers/w.js", "https://a.example/workers/w.js/x", PAGE, False),
    ("https://a.example/workers", "https://a.example/workers/w.js", PAGE, False),
    ("https://a.example/a%20b", "https://a.example/a b", PAGE, True),
    ("https://a.example/", "https://a.example", PAGE, True),
    # IP literals are not domains: host sources never match them by the spec.
    ("127.0.0.1", "https://127.0.0.1/", PAGE, False),
    ("*", "https://127.0.0.1/", PAGE, True),
    # 'none', empty lists, invalid sources, keywords.
    ("'none'", "https://app.example/", PAGE, False),
    ("", "https://app.example/", PAGE, False),
    ("'none' https://a.example", "https://a.example/", PAGE, True),
    ("'*.chime.aws'", "https://signal.chime.aws/", PAGE, False),
    ("'wss://*.chime.aws'", "wss://signal.chime.aws/", PAGE, False),
    ("'blob:'", "blob:https://app.example/3f2a", PAGE, False),
    (
        "'unsafe-inline' 'unsafe-eval' 'nonce-abc' 'sha256-abc='",
        "https://app.example/",
        PAGE,
        False,
    ),
    ("'strict-dynamic'", "https://app.example/", PAGE, False),
    ("'*.chime.aws' wss://*.chime.aws", "wss://signal.chime.aws/", PAGE, True),
]


@pytest.mark.parametrize(("sources", "url", "origin", "expected"), SOURCE_CASES)
def test_source_list_matching(sources, url, origin, expected):
    assert (
        url_matches_source_list(parse_url(url), sources.split(), parse_origin(origin)) is expected
    )


@pytest.mark.parametrize(
    ("token", "kind"),
    [
        ("'none'", SourceKind.NONE),
        ("*", SourceKind.STAR),
        ("'self'", SourceKind.KEYWORD),
        ("'Wasm-Unsafe-Eval'", SourceKind.KEYWORD),
        ("'nonce-ab+/_-c=='", SourceKind.NONCE),
        ("'sha384-abc'", SourceKind.HASH),
        ("'sha1-abc'", SourceKind.INVALID),
        ("blob:", SourceKind.SCHEME),
        ("https://*.chime.aws", SourceKind.HOST),
        ("*.chime.aws:443/path/", SourceKind.HOST),
        ("chime.aws.", SourceKind.HOST),
        ("'*.chime.aws'", SourceKind.INVALID),
        ("'blob:'", SourceKind.INVALID),
        ("'wasm-eval'", SourceKind.INVALID),
        ("https://a.*.example", SourceKind.INVALID),
        ("https://a.example//x", SourceKind.INVALID),
        ("https://", SourceKind.INVALID),
    ],
)
def test_source_grammar(token, kind):
    assert parse_source(token).kind is kind


# (policy, kind, URL, allowed?, blocking effective directive)
REQUEST_CASES = [
    # Fallbacks: connect-src -> default-src.
    ("default-src 'self'", "connect", "wss://signal.chime.aws/", False, "connect-src"),
    ("default-src 'self'; connect-src wss:", "connect", "wss://signal.chime.aws/", True, None),
    ("img-src 'none'", "connect", "wss://signal.chime.aws/", True, None),
    # script-src-elem -> script-src -> default-src (AudioWorklet modules are script-like).
    (
        "script-src https://*.sdkassets.chime.aws",
        "script",
        "https://static.sdkassets.chime.aws/w.js",
        True,
        None,
    ),
    (
        "script-src-elem 'self'; script-src https:",
        "script",
        "https://static.sdkassets.chime.aws/w.js",
        False,
        "script-src-elem",
    ),
    (
        "default-src 'self'",
        "script",
        "https://static.sdkassets.chime.aws/w.js",
        False,
        "script-src-elem",
    ),
    # worker-src -> child-src -> script-src -> default-src.
    ("child-src blob:; script-src 'self'", "worker", "blob:https://app.example/1", True, None),
    ("script-src blob:; default-src 'none'", "worker", "blob:https://app.example/1", True, None),
    (
        "worker-src 'self'; child-src blob:",
        "worker",
        "blob:https://app.example/1",
        False,
        "worker-src",
    ),
    ("worker-src 'blob:'", "worker", "blob:https://app.example/1", False, "worker-src"),
    ("default-src 'self'", "worker", "blob:https://app.example/1", False, "worker-src"),
    # frame-src -> child-src -> default-src.
    ("child-src blob:; default-src 'none'", "frame", "blob:https://app.example/1", True, None),
    ("default-src 'none'", "frame", "https://app.example/", False, "frame-src"),
    # img-src -> default-src.
    ("default-src 'self'; img-src blob:", "image", "blob:https://app.example/1", True, None),
    ("default-src 'self'", "image", "blob:https://app.example/1", False, "img-src"),
    ("default-src 'self'", "style", "https://cdn.example/a.css", False, "style-src-elem"),
    ("style-src https://cdn.example", "style", "https://cdn.example/a.css", True, None),
    ("font-src 'none'", "font", "https://app.example/f.woff2", False, "font-src"),
    ("media-src blob:", "media", "blob:https://app.example/1", True, None),
    # 'strict-dynamic' allows the SDK's (never parser-inserted) scripts and workers anywhere.
    ("script-src 'strict-dynamic' 'nonce-abc'", "script", "https://evil.example/x.js", True, None),
    ("script-src 'strict-dynamic'", "worker", "https://evil.example/x.js", True, None),
    ("connect-src 'strict-dynamic'", "connect", "https://evil.example/", False, "connect-src"),
    # WebAssembly and eval read only script-src, else default-src.
    ("script-src 'self' 'wasm-unsafe-eval'", "wasm", "", True, None),
    ("script-src 'self' 'unsafe-eval'", "wasm", "", True, None),
    ("script-src 'self'", "wasm", "", False, "script-src"),
    ("script-src-elem 'wasm-unsafe-eval'; script-src 'self'", "wasm", "", False, "script-src"),
    ("script-src-elem 'self'", "wasm", "", True, None),
    ("default-src 'self'", "wasm", "", False, "script-src"),
    ("default-src 'wasm-unsafe-eval'", "wasm", "", True, None),
    ("default-src 'self' 'unsafe-eval'; script-src 'self'", "wasm", "", False, "script-src"),
    ("script-src 'wasm-unsafe-eval'", "eval", "", False, "script-src"),
    ("script-src 'unsafe-eval'", "eval", "", True, None),
    ("connect-src 'self'", "eval", "", True, None),
    # Unknown directives restrict nothing; a colon after the name makes one.
    ("connect-src: 'self'", "connect", "https://any.example/", True, None),
    ("content=\"connect-src 'self'", "connect", "https://any.example/", True, None),
    # Several policies in one header value: each must allow.
    (
        "connect-src https:, connect-src wss:",
        "connect",
        "wss://signal.chime.aws/",
        False,
        "connect-src",
    ),
    ("connect-src https: wss:, connect-src wss:", "connect", "wss://signal.chime.aws/", True, None),
]


@pytest.mark.parametrize(("policy", "kind", "url", "allowed", "directive"), REQUEST_CASES)
def test_request_allowed(policy, kind, url, allowed, directive):
    assert request_allowed([policy], kind, url, PAGE) == (allowed, directive)


def test_every_header_must_allow():
    policies = ["connect-src https://*.chime.aws wss://*.chime.aws", "default-src 'self'"]
    assert request_allowed(policies, "connect", "wss://a.chime.aws/", PAGE) == (
        False,
        "connect-src",
    )
    decision = evaluate([parse_policy(p) for p in policies], "connect", "wss://a.chime.aws/", PAGE)
    assert (decision.directive, decision.policy_index) == ("default-src", 1)


def test_report_only_policies_report_but_do_not_block():
    enforced = parse_policy("connect-src wss:")
    report = parse_policy("connect-src 'self'", "report")
    decision = evaluate([enforced, report], "connect", "wss://a.chime.aws/", PAGE)
    assert decision.allowed
    assert decision.reported_by == (1,)


def test_no_policy_allows_everything():
    for kind in REQUEST_KINDS:
        assert request_allowed([], kind, "https://a.example/", PAGE) == (True, None)


def test_the_request_kinds_of_the_contract():
    assert {"connect", "script", "worker", "image", "wasm", "eval", "frame"} <= set(REQUEST_KINDS)


@pytest.mark.parametrize(
    ("kind", "url", "origin"),
    [
        ("teleport", "https://a.example/", PAGE),
        ("connect", "not a url", PAGE),
        ("connect", "https://a.example:99999/", PAGE),
        ("connect", "https://a.example/", "blob:https://app.example/1"),
    ],
)
def test_bad_arguments_raise_value_error(kind, url, origin):
    with pytest.raises(ValueError):
        request_allowed(["default-src 'self'"], kind, url, origin)


# Where urllib's URL parsing differs from the URL Standard, the checker must see what a browser
# sees (each confirmed in Chromium: it blocks these and reports the normalised URL).
@pytest.mark.parametrize(
    ("policy", "url"),
    [
        ("connect-src https://x.chime.aws/api/", "https://x.chime.aws/api/../secret"),
        ("connect-src https://x.chime.aws/api/", "https://x.chime.aws/api/%2e%2e/secret"),
        ("connect-src https://x.chime.aws/api/", "https://x.chime.aws/api/.%2E/secret"),
        ("connect-src https://*.chime.aws", "https://app.test\\@x.chime.aws/"),
        ("connect-src https://*.chime.aws", "https://app.test\\\\x.chime.aws/"),
    ],
)
def test_urls_are_read_as_browsers_read_them(policy: str, url: str) -> None:
    assert request_allowed([policy], "connect", url, "https://app.example") == (
        False,
        "connect-src",
    )


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://x.chime.aws/api/v1/../v2", True),  # still under /api/
        ("https://x.chime.aws/api/./v1", True),
        ("https://x.chime.aws/api", False),
        ("https://x.chime.aws/ap\ti/v1", True),  # tabs and newlines are dropped
    ],
)
def test_dot_segments_inside_an_allowed_path(url: str, allowed: bool) -> None:
    got, _ = request_allowed(
        ["connect-src https://x.chime.aws/api/"], "connect", url, "https://app.example"
    )
    assert got is allowed


@pytest.mark.parametrize(
    ("policy", "url"),
    [
        # Chromium reads "connect-src 'self'": blocked there.
        ("connect-src\x0b'self'", "https://x.chime.aws/a"),
        # The spec reads one invalid source (so 'none'): blocked there.
        ("connect-src https://a.example\x0bhttps://x.chime.aws", "https://x.chime.aws/a"),
    ],
)
def test_a_vertical_tab_is_judged_both_ways(policy: str, url: str) -> None:
    assert request_allowed([policy], "connect", url, "https://app.example")[0] is False
