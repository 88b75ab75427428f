"""Features, their probes, and generate_policy: every generated policy allows what it is for."""

from __future__ import annotations

import itertools

import pytest

from chime_egress.csp import (
    FEATURE_PROBES,
    FEATURES,
    REQUEST_KINDS,
    check_policies,
    generate_policy,
    parse_features,
    parse_policy,
    probes_for,
    request_allowed,
)

COMBINATIONS = [
    combination
    for size in range(1, len(FEATURES) + 1)
    for combination in itertools.combinations(FEATURES, size)
]


def test_parse_features():
    assert parse_features("video-fx, Meetings,meetings") == ("meetings", "video-fx")


@pytest.mark.parametrize("text", ["meetings,teleport", "", " , "])
def test_parse_features_names_the_unknown_one_and_the_valid_ones(text):
    with pytest.raises(ValueError) as error:
        parse_features(text)
    assert "meetings, messaging, voice-focus, video-fx, background-image" in str(error.value)
    if "teleport" in text:
        assert "'teleport'" in str(error.value)


def test_probes_use_known_kinds_and_cover_every_feature():
    assert set(FEATURE_PROBES) == set(FEATURES)
    for probes in FEATURE_PROBES.values():
        for kind, url in probes:
            assert kind in REQUEST_KINDS
            assert (url == "") == (kind == "wasm")


def test_the_notes_sample_urls_are_probed():
    urls = {url for probes in FEATURE_PROBES.values() for _, url in probes}
    assert "https://data.svc.ue1.ingest.chime.aws/v1/client-events" in urls
    assert "https://static.sdkassets.chime.aws/workers/worker-v1.js" in urls
    assert "https://cognito-idp.us-east-1.amazonaws.com/" in urls
    assert any(u.startswith("wss://signal.m3.ue1.app.chime.aws/control/") for u in urls)
    assert any(u.endswith(".us-east-1.ws-messaging.chime.aws/connect") for u in urls)


def test_probes_move_to_the_page_origin():
    probes = dict(probes_for("background-image", "https://meet.corp.example:8443"))
    assert probes["connect"] == "https://meet.corp.example:8443/images/background.jpg"
    assert probes["image"].startswith("blob:https://meet.corp.example:8443/")


def test_generated_policies_read_as_expected():
    assert generate_policy(["meetings"]) == (
        "default-src 'self'; connect-src 'self' https://*.chime.aws wss://*.chime.aws; "
        "worker-src 'self' blob:"
    )
    assert generate_policy(["voice-focus"]) == (
        "default-src 'self'; connect-src 'self' https://*.sdkassets.chime.aws; "
        "script-src 'self' https://*.sdkassets.chime.aws 'wasm-unsafe-eval'; "
        "script-src-elem 'self' https://*.sdkassets.chime.aws; worker-src 'self' blob:; "
        "child-src 'self' blob:"
    )
    assert generate_policy(["background-image"]) == (
        "default-src 'self'; connect-src 'self'; img-src 'self' blob:"
    )


def test_unsafe_eval_only_on_request_and_only_where_wasm_is_needed():
    assert "'unsafe-eval'" not in generate_policy(FEATURES)
    policy = generate_policy(["video-fx"], allow_unsafe_eval=True)
    assert "'unsafe-eval'" in policy and "'wasm-unsafe-eval'" not in policy
    assert "eval" not in generate_policy(["meetings", "messaging"], allow_unsafe_eval=True)


def test_never_unsafe_inline():
    for combination in COMBINATIONS:
        assert "unsafe-inline" not in generate_policy(combination, allow_unsafe_eval=True)


def test_report_uri():
    assert generate_policy(["messaging"], report_uri="/csp-reports").endswith(
        "; report-uri /csp-reports"
    )
    with pytest.raises(ValueError):
        generate_policy(["messaging"], report_uri="/a; script-src *")


@pytest.mark.parametrize("allow_unsafe_eval", [False, True])
@pytest.mark.parametrize("features", COMBINATIONS, ids="+".join)
def test_every_generated_policy_allows_its_features_and_lints_clean(features, allow_unsafe_eval):
    policy = generate_policy(features, allow_unsafe_eval=allow_unsafe_eval)
    for origin in ("https://app.example", "https://meet.corp.example:8443"):
        report = check_policies([policy], features, origin)
        assert report.allowed, report.features
        assert [f for f in report.findings if f.severity != "warning"] == []
    expected_warnings = 1 if allow_unsafe_eval and "'unsafe-eval'" in policy else 0
    assert len(report.findings) == expected_warnings


@pytest.mark.parametrize("features", COMBINATIONS, ids="+".join)
def test_generated_policies_block_what_no_feature_needs(features):
    policy = generate_policy(features)
    page = "https://app.example"
    for kind in ("connect", "script", "worker", "image", "frame", "style"):
        assert request_allowed([policy], kind, "https://evil.example/x", page)[0] is False
        assert request_allowed([policy], kind, "https://chime.aws/x", page)[0] is False
    assert request_allowed([policy], "eval", "", page)[0] is False
    assert request_allowed([policy], "connect", "data:text/plain,x", page)[0] is False
    # The app's own resources stay allowed everywhere.
    for kind in ("connect", "script", "image", "style"):
        assert request_allowed([policy], kind, f"{page}/own", page)[0] is True
    assert parse_policy(policy).get("default-src") is not None
