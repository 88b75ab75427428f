"""The CSP3 parser (#parse-serialized-policy, #parse-serialized-policy-list) and serializer."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chime_egress.csp import (
    Directive,
    Policy,
    parse_policy,
    parse_policy_list,
    serialize_policy,
    serialize_policy_list,
)
from chime_egress.csp.policy import ASCII_WHITESPACE, parse_headers

NAMES = st.sampled_from(
    ["default-src", "connect-src", "script-src", "worker-src", "img-src", "report-uri", "x-custom"]
)
TOKEN = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=";,"),
    min_size=1,
    max_size=12,
)
WHITESPACE = st.text(alphabet=ASCII_WHITESPACE, min_size=1, max_size=3)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    names = draw(st.lists(NAMES, min_size=1, max_size=5, unique=True))
    return Policy(
        tuple(Directive(name, tuple(draw(st.lists(TOKEN, max_size=4)))) for name in names)
    )


def test_directives_in_order_with_values_as_tokens():
    policy = parse_policy("connect-src 'self' https://*.chime.aws; worker-src blob:")
    assert policy.directives == (
        Directive("connect-src", ("'self'", "https://*.chime.aws")),
        Directive("worker-src", ("blob:",)),
    )
    assert policy.disposition == "enforce"


def test_names_are_lowercased_values_keep_their_case():
    policy = parse_policy("CONNECT-Src HTTPS://A.Example 'SELF'")
    assert policy.directives == (Directive("connect-src", ("HTTPS://A.Example", "'SELF'")),)


def test_empty_tokens_and_whitespace_are_skipped():
    assert parse_policy(" ;; \t connect-src  a \f b ;\r\n; ") == parse_policy("connect-src a b")


def test_vertical_tab_is_not_ascii_whitespace():
    assert parse_policy("img-src a\vb").get("img-src") == Directive("img-src", ("a\vb",))


def test_duplicates_first_wins_and_later_ones_are_recorded():
    policy = parse_policy("connect-src a; img-src c; Connect-Src b")
    assert policy.get("connect-src") == Directive("connect-src", ("a",))
    assert policy.ignored == (Directive("connect-src", ("b",)),)
    assert [d.name for d in policy] == ["connect-src", "img-src"]


def test_non_ascii_tokens_are_skipped():
    assert parse_policy("img-src b\u00e9b; connect-src a") == parse_policy("connect-src a")


def test_unknown_and_malformed_names_are_kept():
    policy = parse_policy("content=\"connect-src 'self'; connect-src: *.chime.aws")
    assert [d.name for d in policy] == ['content="connect-src', "connect-src:"]


def test_a_directive_without_value():
    assert parse_policy("upgrade-insecure-requests").directives == (
        Directive("upgrade-insecure-requests", ()),
    )


def test_commas_separate_policies_and_empty_ones_are_dropped():
    policies = parse_policy_list("connect-src a, , img-src b ;, ;", "report")
    assert [serialize_policy(p) for p in policies] == ["connect-src a", "img-src b"]
    assert {p.disposition for p in policies} == {"report"}


def test_several_headers():
    assert len(parse_headers(["a b, c d", "e f"])) == 3


def test_serialize():
    policy = parse_policy("default-src   'self' ;CONNECT-SRC a b; connect-src c")
    assert serialize_policy(policy) == "default-src 'self'; connect-src a b"
    assert serialize_policy_list([policy, policy]) == (
        "default-src 'self'; connect-src a b, default-src 'self'; connect-src a b"
    )


@given(policies())
def test_parse_serialize_round_trip(policy):
    assert parse_policy(serialize_policy(policy)) == policy


@given(st.lists(policies(), min_size=1, max_size=3))
def test_list_round_trip(items):
    assert parse_policy_list(serialize_policy_list(items)) == tuple(items)


@given(policies(), st.data())
def test_directive_names_are_case_insensitive(policy, data):
    text = "; ".join(
        " ".join(
            (
                "".join(data.draw(st.sampled_from([c.lower(), c.upper()])) for c in d.name),
                *d.value,
            )
        )
        for d in policy
    )
    assert parse_policy(text) == policy


@given(policies(), st.data())
def test_extra_whitespace_and_empty_tokens_change_nothing(policy, data):
    def pad() -> str:
        padding: str = data.draw(st.one_of(st.just(""), WHITESPACE))
        return padding

    parts = [pad() + data.draw(WHITESPACE).join((d.name, *d.value)) + pad() for d in policy]
    empties = data.draw(st.sampled_from([";", "; ;", ";" + "\t;"]))
    text = empties + empties.join(parts) + empties
    assert parse_policy(text) == policy


@given(policies(), st.lists(TOKEN, max_size=3))
def test_a_repeated_directive_changes_nothing_but_is_recorded(policy, value):
    first = policy.directives[0]
    again = Directive(first.name.upper(), tuple(value))
    parsed = parse_policy(f"{serialize_policy(policy)}; {again}")
    assert parsed == policy
    assert parsed.ignored == (Directive(first.name, tuple(value)),)
