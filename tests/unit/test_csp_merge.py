"""merge_policies: the merging rules, literally and as properties over random policies."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chime_egress.csp import (
    FEATURE_PROBES,
    FEATURES,
    REQUEST_KINDS,
    Policy,
    check_policies,
    evaluate,
    merge_policies,
    needed_sources,
    parse_policy,
    parse_policy_list,
    serialize_policy,
)
from chime_egress.csp.matching import (
    COMPILE_KINDS,
    KIND_DIRECTIVES,
    parse_origin,
    parse_url,
    url_matches_expression,
)
from chime_egress.csp.sources import parse_source

PAGE = "https://app.example"


def merge(text: str, *features: str, allow_unsafe_eval: bool = False) -> str:
    return merge_policies(text, features, allow_unsafe_eval=allow_unsafe_eval)


def value(policy: Policy, name: str) -> tuple[str, ...]:
    directive = policy.get(name)
    assert directive is not None, name
    return directive.value


def test_no_directive_in_the_chain_adds_nothing():
    assert merge("img-src 'self'", "meetings", "messaging") == "img-src 'self'"
    assert merge("script-src-elem 'self'", "meetings") == "script-src-elem 'self'"


def test_a_present_directive_is_extended():
    assert merge("connect-src 'self'; worker-src blob:", "meetings") == (
        "connect-src 'self' https://*.chime.aws wss://*.chime.aws; worker-src blob:"
    )


def test_a_missing_directive_is_created_from_its_fallback_which_stays_as_it_was():
    assert merge("default-src 'self' https://cdn.example", "meetings") == (
        "default-src 'self' https://cdn.example; "
        "worker-src 'self' https://cdn.example blob:; "
        "connect-src 'self' https://cdn.example https://*.chime.aws wss://*.chime.aws"
    )


def test_the_nearest_fallback_seeds_it():
    assert merge("default-src 'none'; child-src 'self'", "meetings") == (
        "default-src 'none'; child-src 'self'; worker-src 'self' blob:; "
        "connect-src https://*.chime.aws wss://*.chime.aws"
    )


def test_none_is_replaced_not_extended():
    assert merge("connect-src 'none'", "messaging") == (
        "connect-src https://*.amazonaws.com wss://*.chime.aws"
    )
    assert merge("connect-src", "messaging") == (
        "connect-src https://*.amazonaws.com wss://*.chime.aws"
    )


def test_the_seed_example_gets_what_it_meant():
    merged = merge("connect-src '*.chime.aws'", "meetings")
    assert merged == "connect-src '*.chime.aws' https://*.chime.aws wss://*.chime.aws"
    assert check_policies([merged], ["meetings"], PAGE).allowed


def test_every_policy_is_merged_and_none_are_joined():
    merged = merge("connect-src 'self', default-src 'self', img-src 'none'", "messaging")
    assert merged == (
        "connect-src 'self' https://*.amazonaws.com wss://*.chime.aws, "
        "default-src 'self'; connect-src 'self' https://*.amazonaws.com wss://*.chime.aws, "
        "img-src 'none'"
    )


def test_keywords_the_new_directive_never_reads_are_not_copied():
    merged = merge("default-src 'self' 'unsafe-inline' 'unsafe-eval' 'nonce-abc'", "meetings")
    policy = parse_policy(merged)
    assert value(policy, "connect-src") == ("'self'", "https://*.chime.aws", "wss://*.chime.aws")
    assert value(policy, "worker-src") == ("'self'", "blob:")


def test_script_src_created_for_wasm_keeps_the_fallbacks_script_keywords():
    merged = merge("default-src 'self' 'unsafe-inline' 'nonce-abc'", "voice-focus")
    policy = parse_policy(merged)
    assert value(policy, "script-src") == (
        "'self'",
        "'unsafe-inline'",
        "'nonce-abc'",
        "https://*.sdkassets.chime.aws",
        "'wasm-unsafe-eval'",
    )


def test_dependents_are_pinned_before_an_intermediate_fallback_changes():
    # child-src blob: would also let frames load blob: (frame-src -> child-src -> default-src).
    policy = parse_policy(merge("default-src 'self'", "voice-focus"))
    assert value(policy, "frame-src") == ("'self'",)
    assert evaluate([policy], "frame", "blob:https://app.example/1", PAGE).allowed is False


def test_unsafe_eval_only_on_request():
    assert "'unsafe-eval'" not in merge("script-src 'self'", "video-fx")
    assert merge("script-src 'self'", "video-fx", allow_unsafe_eval=True).startswith(
        "script-src 'self' blob: https://*.sdkassets.chime.aws 'unsafe-eval'"
    )


def test_a_value_without_policies_is_returned_as_is():
    assert merge(" , ", "meetings") == " , "


def test_unknown_feature():
    with pytest.raises(ValueError, match="teleport"):
        merge("default-src 'self'", "teleport")


# Properties over random policies.

TOKENS = [
    "'self'",
    "'none'",
    "*",
    "https:",
    "wss:",
    "blob:",
    "data:",
    "https://*.chime.aws",
    "*.chime.aws",
    "wss://*.chime.aws",
    "'*.chime.aws'",
    "chime.aws",
    "https://*.amazonaws.com",
    "https://static.sdkassets.chime.aws/workers/",
    "https://app.example",
    "https://evil.example",
    "'strict-dynamic'",
    "'unsafe-eval'",
    "'wasm-unsafe-eval'",
    "'unsafe-inline'",
    "'nonce-abc'",
]
DIRECTIVES = [
    "default-src",
    "connect-src",
    "script-src",
    "script-src-elem",
    "worker-src",
    "child-src",
    "frame-src",
    "img-src",
    "style-src",
    "connect-src:",
]
UNRELATED_URLS = [
    "https://evil.example/x.js",
    "wss://evil.example/socket",
    "https://chime.aws/",
    "http://app.example/x",
    "https://app.example/own.js",
    "wss://app.example/socket",
    "data:text/plain,x",
    "blob:https://app.example/other",
    "https://static.sdkassets.chime.aws/x.js",
    "https://cognito-idp.us-east-1.amazonaws.com/",
    "wss://signal.chime.aws/",
]
REQUESTS = sorted(
    {
        (kind, "" if kind in COMPILE_KINDS else url)
        for kind in REQUEST_KINDS
        for url in UNRELATED_URLS
        + [u for probes in FEATURE_PROBES.values() for _, u in probes if u]
    }
)


@st.composite
def header_values(draw: st.DrawFn) -> str:
    policies = []
    for _ in range(draw(st.integers(1, 3))):
        names = draw(st.lists(st.sampled_from(DIRECTIVES), min_size=1, max_size=5))
        policies.append(
            "; ".join(
                " ".join([name, *draw(st.lists(st.sampled_from(TOKENS), max_size=4))])
                for name in names
            )
        )
    return ", ".join(policies)


FEATURE_SETS = st.lists(st.sampled_from(FEATURES), min_size=1, unique=True)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def related(kind: str, url: str, features, allow_unsafe_eval: bool) -> bool:
    """Whether a source the features add to the request's own effective directive matches it.

    Only that directive may change its verdict: merge creates every needed directive whose chain
    exists, and pins the others that an intermediate fallback's change would reach."""
    added = needed_sources(features, allow_unsafe_eval=allow_unsafe_eval).get(
        KIND_DIRECTIVES[kind], ()
    )
    if kind == "eval":
        return "'unsafe-eval'" in added
    if kind == "wasm":
        return bool(set(added) & {"'wasm-unsafe-eval'", "'unsafe-eval'"})
    target, origin = parse_url(url), parse_origin(PAGE)
    return any(url_matches_expression(target, parse_source(source), origin) for source in added)


def verdicts(text: str) -> dict[tuple[str, str], bool]:
    policies = parse_policy_list(text)
    return {(k, u): evaluate(policies, k, u, PAGE).allowed for k, u in REQUESTS}


@SETTINGS
@given(header_values(), FEATURE_SETS, st.booleans())
def test_merge_allows_every_feature(text, features, allow_unsafe_eval):
    merged = merge_policies(text, features, allow_unsafe_eval=allow_unsafe_eval)
    report = check_policies([merged], features, PAGE)
    assert report.allowed, (merged, report.features)


@SETTINGS
@given(header_values(), FEATURE_SETS, st.booleans())
def test_merge_never_tightens_and_loosens_only_what_features_need(
    text, features, allow_unsafe_eval
):
    merged = merge_policies(text, features, allow_unsafe_eval=allow_unsafe_eval)
    before, after = verdicts(text), verdicts(merged)
    for request, allowed in before.items():
        if allowed:
            assert after[request], (request, merged)
        elif not related(*request, features, allow_unsafe_eval):
            assert not after[request], (request, merged)


@SETTINGS
@given(header_values(), FEATURE_SETS, st.booleans())
def test_merge_is_idempotent_keeps_policies_apart_and_the_fallbacks_alone(
    text, features, allow_unsafe_eval
):
    merged = merge_policies(text, features, allow_unsafe_eval=allow_unsafe_eval)
    assert merge_policies(merged, features, allow_unsafe_eval=allow_unsafe_eval) == merged
    originals, results = parse_policy_list(text), parse_policy_list(merged)
    assert len(originals) == len(results)
    for original, result in zip(originals, results, strict=True):
        assert result.get("default-src") == original.get("default-src")
        for directive in original:
            assert directive.name in result
        # Copied into a directive created from a fallback that has it, never added anew.
        if "'unsafe-inline'" not in serialize_policy(original).lower():
            assert "'unsafe-inline'" not in serialize_policy(result).lower()
