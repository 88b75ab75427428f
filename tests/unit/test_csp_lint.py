"""Lint: every mistake of the published Chime SDK examples is flagged, with the policies quoted."""

from __future__ import annotations

import pytest

from chime_egress.csp import FEATURES, check_policies, lint_policy, parse_policy

PAGE = "https://app.example"

# The seed document (the Chime SDK's developer guide page).
SEED_MEETINGS = "connect-src '*.chime.aws'"
SEED_COGNITO = "connect-src 'self' '*.amazonaws.com';"
# The SDK guide (guides/14_Content_Security_Policy.md, v3.33): the header example...
GUIDE_HEADER = (
    "content=\"connect-src 'self' https://*.chime.aws wss://*.chime.aws https://*.amazonaws.com "
    "https://*.sdkassets.chime.aws; script-src 'self' https://*.sdkassets.chime.aws; "
    "script-src-elem 'self' https://*.sdkassets.chime.aws 'wasm-unsafe-eval'; "
    "worker-src 'blob:'; child-src 'blob:'"
)
# ... its <meta> example ...
GUIDE_META = (
    "connect-src 'self' https://*.chime.aws wss://*.chime.aws https://*.amazonaws.com "
    "https://*.sdkassets.chime.aws; script-src 'self' https://*.sdkassets.chime.aws 'wasm-eval' "
    "'wasm-unsafe-eval' 'unsafe-eval'; script-src-elem 'self' https://*.sdkassets.chime.aws; "
    "worker-src blob:; child-src blob:"
)
# ... its webpack example's script-src-elem, and its feature sections.
GUIDE_WEBPACK_ELEM = "script-src-elem 'self' https://*.sdkassets.chime.aws 'unsafe-inline'"
GUIDE_MEETING = "connect-src: *.chime.aws wss://*.chime.aws"
GUIDE_MESSAGING = "connect-src: *.amazonaws.com"
# The guide's older all-quoted example.
GUIDE_OLD = (
    "connect-src 'self' '*.chime.aws' 'wss://*.chime.aws' '*.amazonaws.com' "
    "'https://*.sdkassets.chime.aws'; script-src 'https://*.sdkassets.chime.aws'; "
    "script-src-elem 'https://*.sdkassets.chime.aws'; worker-src 'blob:'; child-src 'blob:'"
)


def lint(text: str) -> list[tuple[str, str, str]]:
    return [(f.severity, f.directive, f.message) for f in lint_policy(parse_policy(text))]


def has(findings, severity: str, directive: str, *words: str) -> bool:
    return any(
        s == severity and d == directive and all(w in m for w in words) for s, d, m in findings
    )


def test_seed_quoted_host_acts_as_none_and_blocks_signaling():
    findings = lint(SEED_MEETINGS)
    assert has(
        findings, "error", "connect-src", "'*.chime.aws'", "quoted host", "https://*.chime.aws"
    )
    assert has(findings, "error", "connect-src", "acts as 'none'")
    report = check_policies([SEED_MEETINGS], ["meetings"], PAGE)
    (meetings,) = report.features
    assert not meetings.allowed
    assert meetings.failures[0] == (
        "connect",
        "wss://signal.m3.ue1.app.chime.aws/control/0b6f2a4e-7c1d-4b8e-9f3a-2d5c6e7f8a9b",
        "connect-src",
    )


def test_seed_quoted_amazonaws_beside_self():
    findings = lint(SEED_COGNITO)
    assert has(findings, "error", "connect-src", "'*.amazonaws.com'", "quoted host")
    assert not has(findings, "error", "connect-src", "acts as 'none'")  # 'self' is valid
    assert not check_policies([SEED_COGNITO], ["messaging"], PAGE).allowed


def test_guide_content_prefix_makes_an_unknown_directive_and_leaves_connections_open():
    findings = lint(GUIDE_HEADER)
    assert has(findings, "error", 'content="connect-src', "not a directive", "<meta", "connect")
    report = check_policies([GUIDE_HEADER], ["meetings", "messaging"], PAGE)
    messaging = report.features[1]
    assert messaging.allowed  # unrestricted, not allowed on purpose


def test_guide_quoted_blob_blocks_workers():
    findings = lint(GUIDE_HEADER)
    for directive in ("worker-src", "child-src"):
        assert has(findings, "error", directive, "'blob:'", "quoted scheme", "blob:")
        assert has(findings, "error", directive, "acts as 'none'")
    report = check_policies([GUIDE_HEADER], ["meetings"], PAGE)
    assert report.features[0].failures[0].kind == "worker"
    assert report.features[0].failures[0].directive == "worker-src"


def test_guide_wasm_unsafe_eval_in_script_src_elem_does_nothing():
    findings = lint(GUIDE_HEADER)
    assert has(
        findings, "warning", "script-src-elem", "'wasm-unsafe-eval'", "no effect", "script-src"
    )
    voice = check_policies([GUIDE_HEADER], ["voice-focus"], PAGE).features[0]
    assert ("wasm", "", "script-src") in voice.failures


def test_guide_meta_example():
    findings = lint(GUIDE_META)
    assert has(findings, "error", "script-src", "'wasm-eval'", "not a CSP keyword")
    assert has(findings, "warning", "script-src", "'unsafe-eval'", "'wasm-unsafe-eval' is enough")
    report = check_policies([GUIDE_META], FEATURES, PAGE)
    # The guide predates VideoFx, which also loads scripts and workers from blob: and the CDN.
    assert [r.feature for r in report.features if not r.allowed] == ["video-fx"]


def test_guide_webpack_unsafe_inline():
    assert has(lint(GUIDE_WEBPACK_ELEM), "warning", "script-src-elem", "'unsafe-inline'")


@pytest.mark.parametrize("policy", [GUIDE_MEETING, GUIDE_MESSAGING])
def test_guide_colon_after_the_directive_name(policy):
    findings = lint(policy)
    assert has(findings, "error", "connect-src:", "colon", "connect-src *.")
    # Ignored, so nothing is restricted: the checker finds no blocked feature either way.
    assert check_policies([policy], ["meetings", "messaging"], PAGE).allowed


def test_guide_old_example_every_source_quoted():
    findings = lint(GUIDE_OLD)
    errors = [m for s, _, m in findings if s == "error"]
    assert sum("is not a valid source" in m for m in errors) == 8
    for directive in ("script-src", "script-src-elem", "worker-src", "child-src"):
        assert has(findings, "error", directive, "acts as 'none'")
    report = check_policies([GUIDE_OLD], FEATURES, PAGE)
    assert [r.feature for r in report.features if not r.allowed] == [
        "meetings",
        "messaging",
        "voice-focus",
        "video-fx",
    ]


def test_scheme_less_host_in_connect_src_misses_websockets():
    findings = lint("connect-src *.chime.aws")
    assert has(findings, "info", "connect-src", "*.chime.aws", "never wss:", "wss://*.chime.aws")
    assert not check_policies(["connect-src *.chime.aws"], ["meetings"], PAGE).allowed


def test_duplicate_directives():
    findings = lint("connect-src 'self'; connect-src wss://*.chime.aws")
    assert has(findings, "warning", "connect-src", "more than once", "wss://*.chime.aws")


def test_unknown_directive():
    assert has(lint("conect-src 'self'"), "error", "conect-src", "not a CSP directive")


def test_misplaced_keywords():
    findings = lint("connect-src 'self' 'wasm-unsafe-eval' 'unsafe-inline' 'nonce-abc'")
    for keyword in ("'wasm-unsafe-eval'", "'unsafe-inline'", "'nonce-abc'"):
        assert has(findings, "warning", "connect-src", keyword, "no effect")


def test_unquoted_keyword():
    assert has(lint("script-src self"), "warning", "script-src", "'self'")


def test_star_and_websockets():
    assert has(lint("connect-src *"), "info", "connect-src", "ws:/wss:", "Chromium")


def test_report_uri_beside_report_to():
    assert has(lint("default-src 'self'; report-uri /r; report-to csp"), "info", "report-uri")


def test_none_beside_sources_and_empty_lists():
    assert has(lint("img-src 'none' blob:"), "info", "img-src", "'none' is ignored")
    assert has(lint("img-src"), "warning", "img-src", "no sources")


def test_a_clean_policy_has_no_findings():
    assert (
        lint("default-src 'self'; connect-src 'self' https://*.chime.aws wss://*.chime.aws") == []
    )


def test_findings_name_the_policy_when_there_are_several():
    report = check_policies([SEED_MEETINGS, "default-src 'self'"], ["meetings"], PAGE)
    assert all(f.message.startswith("policy 1: ") for f in report.findings)
    report = check_policies(["default-src 'self'"], ["meetings"], PAGE, report_only=[SEED_MEETINGS])
    assert report.findings[0].message.startswith("report-only policy 2: ")
    assert not report.allowed  # by the enforced policy
    assert report.features[0].reported  # and the report-only one would report


def test_a_vertical_tab_is_an_error() -> None:
    [finding, *_] = lint("connect-src\x0b'self'")
    assert finding[0] == "error" and "vertical tab" in finding[2]
    assert not any("vertical tab" in message for _, _, message in lint("connect-src 'self'"))
