"""Header building: the AWS guide's worked examples must come out byte for byte."""

import pytest

from chime_egress.policy.headers import (
    MAX_HEADER_LINE_BYTES,
    ChimeHeaders,
    build_headers,
    oversized_lines,
)


@pytest.mark.parametrize(
    ("apps", "app_keys", "tenants"),
    [
        ([("AppKey", ["orgId"])], "AppKey", "AppKey:orgId"),
        ([("AppKey", ["engineeringId", "salesId"])], "AppKey", "AppKey:engineeringId,salesId"),
        ([("AppKey1", ["orgId"]), ("AppKey2", [])], "AppKey1,AppKey2", "AppKey1:orgId"),
    ],
    ids=["one-app-one-tenant", "one-app-two-tenants", "two-apps-one-limited"],
)
def test_aws_guide_worked_examples(apps, app_keys, tenants):
    headers = build_headers(apps)
    assert headers.lines() == (
        f"X-Amzn-Chime-App-Keys: {app_keys}",
        f"X-Amzn-Chime-Tenants: {tenants}",
    )


def test_no_tenants_header_when_no_app_has_tenants():
    headers = build_headers([("A1", []), ("A2", ())])
    assert headers == ChimeHeaders(app_keys="A1,A2", tenants=None)
    assert headers.items() == (("X-Amzn-Chime-App-Keys", "A1,A2"),)


def test_order_follows_the_allowlist_and_several_tenant_entries_join_with_semicolons():
    headers = build_headers([("Zed", ["t2", "t1"]), ("Alpha", []), ("Mid", ["x1"])])
    assert headers.app_keys == "Zed,Alpha,Mid"
    assert headers.tenants == "Zed:t2,t1;Mid:x1"


def test_http2_names_are_lowercase_with_identical_values():
    headers = build_headers([("K", ["ab"])])
    assert headers.items_lowercase() == (
        ("x-amzn-chime-app-keys", "K"),
        ("x-amzn-chime-tenants", "K:ab"),
    )


def test_oversized_lines_reports_the_exact_line_size():
    name_and_separator = len("X-Amzn-Chime-App-Keys: ")
    just_fits = build_headers([("k" * (MAX_HEADER_LINE_BYTES - name_and_separator), [])])
    assert oversized_lines(just_fits) == []
    too_big = build_headers([("k" * (MAX_HEADER_LINE_BYTES - name_and_separator + 1), [])])
    assert oversized_lines(too_big) == [("X-Amzn-Chime-App-Keys", MAX_HEADER_LINE_BYTES + 1)]
