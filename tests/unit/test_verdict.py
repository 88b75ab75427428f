"""Chime's documented verdict: one test per rule of the AWS guide, then every combination."""

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chime_egress.policy.headers import build_headers
from chime_egress.policy.identifiers import app_key_problem, tenant_id_problem
from chime_egress.policy.verdict import (
    APP_KEYS_ABSENT,
    APP_KEYS_LISTED,
    APP_KEYS_NOT_LISTED,
    RULES,
    TENANTS_ABSENT,
    TENANTS_APP_NOT_LISTED,
    TENANTS_LISTED,
    TENANTS_OTHER_TENANTS,
    TENANTS_SESSION_WITHOUT_TENANTS,
    Decision,
    InvalidSession,
    MalformedHeader,
    Session,
    judge,
    parse_app_keys,
    parse_tenants,
)
from tests.support.data import GUIDE

# One test per documented rule


def test_app_keys_present_and_listing_the_session_key_accepts():
    verdict = judge(Session("AppKey1"), "AppKey0,AppKey1,AppKey2", None)
    assert verdict.app_keys.rule is APP_KEYS_LISTED
    assert verdict.app_keys.detail == "X-Amzn-Chime-App-Keys lists AppKey1"
    assert verdict.decision is Decision.ACCEPT


def test_app_keys_present_and_not_listing_the_session_key_is_403():
    verdict = judge(Session("AppKey3"), "AppKey1,AppKey2", None)
    assert verdict.app_keys.rule is APP_KEYS_NOT_LISTED
    assert verdict.decision is Decision.REJECT
    assert verdict.deciding == (verdict.app_keys,)


def test_app_keys_absent_accepts():
    verdict = judge(Session("AnyKey", ("t1",)), None, None)
    assert verdict.app_keys.rule is APP_KEYS_ABSENT
    assert verdict.accepted


def test_tenants_listing_key_and_one_of_the_session_tenants_accepts():
    verdict = judge(Session("AppKey", ("salesId", "orgId")), "AppKey", "AppKey:orgId")
    assert verdict.tenants.rule is TENANTS_LISTED
    assert verdict.tenants.detail == "X-Amzn-Chime-Tenants lists AppKey:orgId"
    assert verdict.accepted


def test_tenants_listing_key_but_none_of_the_session_tenants_is_403():
    verdict = judge(Session("AppKey", ("salesId",)), "AppKey", "AppKey:orgId")
    assert verdict.tenants.rule is TENANTS_OTHER_TENANTS
    assert verdict.decision is Decision.REJECT
    assert verdict.deciding == (verdict.tenants,)


def test_tenants_not_listing_the_session_key_accepts():
    verdict = judge(Session("AppKey2", ("anyId",)), "AppKey1,AppKey2", "AppKey1:orgId")
    assert verdict.tenants.rule is TENANTS_APP_NOT_LISTED
    assert verdict.accepted


def test_tenants_listing_key_and_session_without_tenant_ids_is_403_developer_bug():
    verdict = judge(Session("AppKey", ()), "AppKey", "AppKey:orgId")
    assert verdict.tenants.rule is TENANTS_SESSION_WITHOUT_TENANTS
    assert "This may be a developer bug." in verdict.tenants.rule.wording
    assert verdict.decision is Decision.REJECT


def test_tenants_absent_accepts():
    verdict = judge(Session("AppKey", ()), "AppKey", None)
    assert verdict.tenants.rule is TENANTS_ABSENT
    assert verdict.accepted


# Every combination of the two headers' rules: both must accept


APP_KEYS_CASES = {
    APP_KEYS_LISTED: "K",
    APP_KEYS_NOT_LISTED: "Other",
    APP_KEYS_ABSENT: None,
}
# (Tenants value, session TenantIds) that make each Tenants rule apply to a session of app "K".
TENANTS_CASES = {
    TENANTS_LISTED: ("K:t1,t2", ("t2",)),
    TENANTS_OTHER_TENANTS: ("K:t1,t2", ("t3",)),
    TENANTS_APP_NOT_LISTED: ("Other:t1", ("t1",)),
    TENANTS_SESSION_WITHOUT_TENANTS: ("K:t1", ()),
    TENANTS_ABSENT: (None, ("t1",)),
}


@pytest.mark.parametrize(
    ("app_keys_rule", "tenants_rule"),
    list(itertools.product(APP_KEYS_CASES, TENANTS_CASES)),
    ids=lambda rule: rule.code,
)
def test_every_combination_needs_both_headers_to_accept(app_keys_rule, tenants_rule):
    tenants_value, tenant_ids = TENANTS_CASES[tenants_rule]
    verdict = judge(Session("K", tenant_ids), APP_KEYS_CASES[app_keys_rule], tenants_value)
    assert [applied.rule for applied in verdict.rules] == [app_keys_rule, tenants_rule]
    both_accept = Decision.ACCEPT == app_keys_rule.decision == tenants_rule.decision
    assert verdict.accepted is both_accept
    assert verdict.decision is (Decision.ACCEPT if both_accept else Decision.REJECT)
    rejecting = [r for r in (app_keys_rule, tenants_rule) if r.decision is Decision.REJECT]
    assert [a.rule for a in verdict.deciding] == (rejecting or [app_keys_rule, tenants_rule])


def test_the_combinations_cover_every_rule():
    assert set(APP_KEYS_CASES) | set(TENANTS_CASES) == set(RULES)


# The guide's three worked examples, as the proxy builds them


@pytest.mark.parametrize(
    ("apps", "session", "accepted"),
    [
        # One app with one tenant: "only the organization's sessions in the specified app".
        ([("AppKey", ["orgId"])], Session("AppKey", ("orgId",)), True),
        ([("AppKey", ["orgId"])], Session("AppKey", ("otherId",)), False),
        ([("AppKey", ["orgId"])], Session("AppKey", ()), False),
        ([("AppKey", ["orgId"])], Session("OtherApp", ("orgId",)), False),
        # One app with two tenants: "only the media sessions for engineering and sales".
        ([("AppKey", ["engineeringId", "salesId"])], Session("AppKey", ("engineeringId",)), True),
        ([("AppKey", ["engineeringId", "salesId"])], Session("AppKey", ("salesId",)), True),
        ([("AppKey", ["engineeringId", "salesId"])], Session("AppKey", ("marketingId",)), False),
        # Two apps, one limited to a tenant: "the organization's sessions in App 1, and any
        # session in App 2. All other apps are blocked."
        ([("AppKey1", ["orgId"]), ("AppKey2", [])], Session("AppKey1", ("orgId",)), True),
        ([("AppKey1", ["orgId"]), ("AppKey2", [])], Session("AppKey1", ("otherId",)), False),
        ([("AppKey1", ["orgId"]), ("AppKey2", [])], Session("AppKey2", ("anyId",)), True),
        ([("AppKey1", ["orgId"]), ("AppKey2", [])], Session("AppKey2", ()), True),
        ([("AppKey1", ["orgId"]), ("AppKey2", [])], Session("AppKey3", ("orgId",)), False),
    ],
)
def test_aws_guide_worked_examples(apps, session, accepted):
    headers = build_headers(apps)
    assert judge(session, headers.app_keys, headers.tenants).accepted is accepted


# Matching is exact


@pytest.mark.parametrize(
    ("session", "accepted"),
    [
        (Session("AppKey1", ("orgId",)), True),
        (Session("AppKey1", ("OrgId",)), False),  # TenantIDs are case sensitive (the guide)
        (Session("appkey1", ("orgId",)), False),  # AppKeys: compared as sent
        (Session("AppKey", ("orgId",)), False),  # a prefix of a listed key is not that key
        (Session("AppKey10", ("orgId",)), False),
        (Session("AppKey1", ("org",)), False),
        (Session("AppKey1", ("a1", "b2", "c3", "d4", "orgId")), True),  # any of up to five
    ],
)
def test_identifiers_are_compared_exactly(session, accepted):
    assert judge(session, "AppKey1", "AppKey1:orgId").accepted is accepted


def test_a_tenants_entry_without_the_key_in_app_keys_still_applies():
    # The proxy never sends this, but a value copied from elsewhere may: the rules are per header.
    assert judge(Session("K", ("t1",)), None, "K:t1").accepted
    verdict = judge(Session("K", ("t2",)), None, "K:t1")
    assert (verdict.app_keys.rule, verdict.tenants.rule) == (APP_KEYS_ABSENT, TENANTS_OTHER_TENANTS)


def test_outer_whitespace_is_not_part_of_a_header_value():
    verdict = judge(Session("K", ("t1",)), " K1,K \t", "\tK:t1 ")
    assert verdict.accepted


def test_a_key_listed_twice_in_app_keys_is_still_listed():
    assert parse_app_keys("A,A") == ("A", "A")
    assert judge(Session("A"), "A,A", None).accepted


def test_parsers_return_the_values():
    assert parse_app_keys("AppKey1,AppKey2") == ("AppKey1", "AppKey2")
    assert parse_tenants("AppKey1:orgId;AppKey2:engineeringId,salesId") == (
        ("AppKey1", ("orgId",)),
        ("AppKey2", ("engineeringId", "salesId")),
    )


APP_KEY = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=",;:"), min_size=1
).filter(lambda key: app_key_problem(key) is None)
TENANT_ID = st.text(st.sampled_from("-_!@#$abcXYZ019"), min_size=2, max_size=12).filter(
    lambda tenant: tenant_id_problem(tenant) is None
)
APPS = st.lists(
    st.tuples(APP_KEY, st.lists(TENANT_ID, max_size=4, unique=True)),
    min_size=1,
    max_size=5,
    unique_by=lambda app: app[0],
)


@given(APPS)
def test_what_the_proxy_builds_parses_back_and_is_judged_as_configured(apps):
    headers = build_headers(apps)
    assert parse_app_keys(headers.app_keys) == tuple(key for key, _ in apps)
    if headers.tenants is not None:
        assert parse_tenants(headers.tenants) == tuple((k, tuple(t)) for k, t in apps if t)
    for key, tenants in apps:
        without_tenant_ids = judge(Session(key, ()), headers.app_keys, headers.tenants)
        assert without_tenant_ids.accepted is (not tenants)
        for tenant in tenants:
            assert judge(Session(key, (tenant,)), headers.app_keys, headers.tenants).accepted


# Malformed values are reported, never judged


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "is empty; the grammar needs at least one AppKey"),
        ("  ", "is empty"),
        (",A", "AppKey 1 is empty"),
        ("A,", "AppKey 2 is empty"),
        ("A,,B", "AppKey 2 is empty"),
        ("A, B", "AppKey 2 ' B' contains whitespace"),
        ("A;B", "AppKey 1 'A;B' contains ';'"),
        ("A:orgId", "AppKey 1 'A:orgId' contains ':'"),
        ("A,K\x7f", "AppKey 2 'K\\x7f' contains"),
    ],
)
def test_malformed_app_keys_values(value, message):
    with pytest.raises(MalformedHeader) as caught:
        parse_app_keys(value)
    assert any(p.startswith("X-Amzn-Chime-App-Keys: ") for p in caught.value.problems)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "is empty; the grammar needs at least one AppKey:tenantId entry"),
        # The guide's prose example, which contradicts its own worked examples.
        (
            "AppKey1;tenantId-1,tenantId-2;AppKey2:tenantId-1,tenantId-1",
            "entry 1 'AppKey1' has no ':'",
        ),
        ("AppKey1", "entry 1 'AppKey1' has no ':'"),
        (";A:t1", "entry 1 is empty"),
        ("A:t1;", "entry 2 is empty"),
        ("A:t1;;B:t2", "entry 2 is empty"),
        (":t1", "entry 1: AppKey is empty (nothing before ':')"),
        ("A:", "entry 1: TenantId 1 is empty"),
        ("A:t1,", "entry 1: TenantId 2 is empty"),
        ("A:t1, t2", "entry 1: TenantId 2 ' t2' contains ' '"),
        ("A B:t1", "entry 1: AppKey 'A B' contains whitespace"),
        ("A:t1:t2", "entry 1: TenantId 1 't1:t2' contains ':'"),
        ("A:x", "entry 1: TenantId 1 'x' is 1 character long"),
        ("A:aaaa1", "entry 1: TenantId 1 'aaaa1' repeats a character four or more times"),
        ("A:t1;B:t2;A:t3", "entry 3: AppKey 'A' already has entry 1"),
    ],
)
def test_malformed_tenants_values(value, message):
    with pytest.raises(MalformedHeader) as caught:
        parse_tenants(value)
    assert all(p.startswith("X-Amzn-Chime-Tenants: ") for p in caught.value.problems)
    assert message in str(caught.value)


def test_guide_prose_example_reports_each_bad_entry():
    with pytest.raises(MalformedHeader) as caught:
        parse_tenants("AppKey1;tenantId-1,tenantId-2;AppKey2:tenantId-1,tenantId-1")
    assert len(caught.value.problems) == 2  # the third entry is fine; a repeated tenant is legal


def test_judge_reports_both_headers_problems_and_decides_nothing():
    with pytest.raises(MalformedHeader) as caught:
        judge(Session("A", ("t1",)), "A,", "A")
    problems = caught.value.problems
    assert [p.split(":")[0] for p in problems] == ["X-Amzn-Chime-App-Keys", "X-Amzn-Chime-Tenants"]


def test_a_malformed_entry_for_another_app_still_blocks_the_verdict():
    # Chime may reject the whole value or only that entry; the guide does not say, so no guess.
    with pytest.raises(MalformedHeader):
        judge(Session("A", ("t1",)), "A,B", "A:t1;B:")


# Sessions that cannot exist


@pytest.mark.parametrize(
    ("app_key", "tenant_ids", "message"),
    [
        ("", (), "AppKey '' is empty"),
        ("A,B", (), "AppKey 'A,B' contains ','"),
        ("A", ("t1", "t2", "t3", "t4", "t5", "t6"), "6 TenantIds given; a meeting has at most 5"),
        ("A", ("x",), "TenantId 'x' is 1 character long"),
        ("A", ("org id",), "TenantId 'org id' contains ' '"),
    ],
)
def test_impossible_sessions_are_refused(app_key, tenant_ids, message):
    with pytest.raises(InvalidSession) as caught:
        Session(app_key, tenant_ids)
    assert message in str(caught.value)


# The rules quote the guide


def test_rule_codes_are_unique_and_each_header_has_its_rules():
    assert len({rule.code for rule in RULES}) == len(RULES) == 8
    assert sum(rule.header == "X-Amzn-Chime-App-Keys" for rule in RULES) == 3
    assert sum(rule.header == "X-Amzn-Chime-Tenants" for rule in RULES) == 5


def test_rule_wording_is_quoted_from_the_aws_guide():
    text = re.sub(r"[\\`*]", "", GUIDE.read_text(encoding="utf-8"))  # Markdown escapes, emphasis
    for rule in RULES:
        assert rule.wording in text, rule.code
