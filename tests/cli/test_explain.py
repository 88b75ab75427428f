"""`chime-egress explain`, run as installed."""

import pytest

from .support import run, write_allowlist

# The guide's third worked example: two apps, one limited to a tenant.
GUIDE_EXAMPLE = """\
    apps:
      - app_key: AppKey1
        name: App 1
        tenants: [orgId]
      - app_key: AppKey2
    destinations: {cidrs: [192.0.2.0/24]}
    """


@pytest.fixture
def example(tmp_path):
    return write_allowlist(tmp_path, GUIDE_EXAMPLE)


def test_accepted_session_names_both_rules_in_the_guides_words(example):
    result = run("explain", "--app-key", "AppKey1", "--tenant", "orgId", example)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "session: AppKey AppKey1, TenantIds orgId" in out
    assert f"headers (the proxy's, from {example}):" in out
    assert (
        "  X-Amzn-Chime-App-Keys: AppKey1,AppKey2\n  X-Amzn-Chime-Tenants: AppKey1:orgId\n" in out
    )
    assert "verdict: accept\n" in out
    assert "  accept  X-Amzn-Chime-App-Keys lists AppKey1" in out
    assert (
        "AWS: \"If the X-Amzn-Chime-App-Keys header is present and includes the session's "
        'AppKey, accept the connection."' in out
    )
    assert "  accept  X-Amzn-Chime-Tenants lists AppKey1:orgId" in out
    assert (
        'AWS: "If the header includes the session\'s AppKey:tenantId, accept the connection."'
        in out
    )
    assert "Both headers must accept" in out


def test_session_of_another_tenant_is_403_exit_3(example):
    result = run("explain", "--app-key", "AppKey1", "--tenant", "salesId", example)
    assert result.returncode == 3
    assert "verdict: 403\n" in result.stdout
    assert "  403     X-Amzn-Chime-Tenants lists AppKey1:orgId, none of the session's" in (
        result.stdout
    )
    assert "but no matching tenantId, reject the connection with a 403 error." in result.stdout


def test_session_without_tenant_ids_is_the_developer_bug_rule(example):
    result = run("explain", "--app-key", "AppKey1", example)
    assert result.returncode == 3
    assert "session: AppKey AppKey1, TenantIds none" in result.stdout
    assert "and the session has no TenantIds" in result.stdout
    assert "This may be a developer bug." in result.stdout


def test_app_without_tenants_accepts_any_session(example):
    result = run("explain", "--app-key", "AppKey2", example)
    assert result.returncode == 0
    assert "  accept  X-Amzn-Chime-Tenants does not list AppKey2" in result.stdout


def test_unlisted_app_is_403_by_the_app_keys_header(example):
    result = run("explain", "--app-key", "SlackHuddles", "--tenant", "orgId", example)
    assert result.returncode == 3
    assert "  403     X-Amzn-Chime-App-Keys does not list SlackHuddles" in result.stdout
    assert "present but does not include the session's AppKey" in result.stdout


def test_default_config_is_the_shipped_allowlist():
    result = run("explain", "--app-key", "ExampleAppKey1", "--tenant", "exampleOrgId")
    assert result.returncode == 0
    assert "headers (the proxy's, from config/allowlist.yaml):" in result.stdout


def test_invalid_allowlist_is_reported_not_explained(tmp_path):
    path = write_allowlist(tmp_path, "apps: [{app_key: 'a,b'}]\ndestinations: {cidrs: []}\n")
    result = run("explain", "--app-key", "a", path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"{path}:1: apps[0].app_key: 'a,b' contains ','" in result.stderr


# Raw header values


def test_raw_headers_are_judged_without_a_config():
    result = run(
        "explain",
        "--app-keys-header",
        "AppKey1,AppKey2",
        "--tenants-header",
        "AppKey1:orgId",
        "--app-key",
        "AppKey1",
        "--tenant",
        "engineeringId",
        "--tenant",
        "orgId",
    )
    assert result.returncode == 0, result.stderr
    assert "headers (as given):" in result.stdout
    assert "session: AppKey AppKey1, TenantIds engineeringId, orgId" in result.stdout
    assert "X-Amzn-Chime-Tenants lists AppKey1:orgId" in result.stdout


def test_raw_header_not_given_is_not_sent():
    result = run("explain", "--app-keys-header", "AppKey1", "--app-key", "AppKey1")
    assert result.returncode == 0
    assert "  X-Amzn-Chime-Tenants: (not sent)" in result.stdout
    assert "  accept  X-Amzn-Chime-Tenants is not sent" in result.stdout
    assert "If the header is not present, accept the connection." in result.stdout


def test_raw_tenants_header_alone_still_limits_tenants():
    result = run("explain", "--tenants-header", "K:t1", "--app-key", "K", "--tenant", "t2")
    assert result.returncode == 3
    assert "  X-Amzn-Chime-App-Keys: (not sent)" in result.stdout
    assert "  accept  X-Amzn-Chime-App-Keys is not sent" in result.stdout


def test_the_guides_prose_example_is_reported_as_malformed():
    value = "AppKey1;tenantId-1,tenantId-2;AppKey2:tenantId-1,tenantId-1"
    result = run(
        "explain",
        *("--app-keys-header", "AppKey1,AppKey2", "--tenants-header", value),
        *("--app-key", "AppKey2", "--tenant", "tenantId-1"),
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert "X-Amzn-Chime-Tenants: entry 1 'AppKey1' has no ':'" in result.stderr
    assert "X-Amzn-Chime-Tenants: entry 2 'tenantId-1,tenantId-2' has no ':'" in result.stderr
    assert "cannot say what Chime would do" in result.stderr


def test_malformed_app_keys_value_is_reported():
    result = run("explain", "--app-keys-header", "AppKey1, AppKey2", "--app-key", "AppKey2")
    assert result.returncode == 1
    assert "X-Amzn-Chime-App-Keys: AppKey 2 ' AppKey2' contains whitespace" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--app-keys-header", "A", "--app-key", "A", "config/allowlist.yaml"], "CONFIG cannot"),
        (["--app-keys-header", "A"], "need --app-key"),
        (["--tenant", "t1"], "--tenant needs --app-key"),
    ],
)
def test_inconsistent_options_are_usage_errors(args, message):
    result = run("explain", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "usage: chime-egress explain" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--app-key", "A", *[f"--tenant=t{n}" for n in range(1, 7)]],
            "6 TenantIds given; a meeting has at most 5",
        ),
        (["--app-key", "A", "--tenant", "x"], "TenantId 'x' is 1 character long"),
        (["--app-key", "A B"], "AppKey 'A B' contains whitespace"),
    ],
)
def test_impossible_sessions_are_refused(args, message):
    result = run("explain", *args)
    assert result.returncode == 1
    assert f"session: {message}" in result.stderr


# Every app of the file


def test_without_app_key_every_app_with_and_without_a_matching_tenant(example):
    result = run("explain", example)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "App 1 (AppKey1), tenants orgId:" in lines
    app1 = lines[lines.index("App 1 (AppKey1), tenants orgId:") + 1 :][:3]
    assert app1[0].startswith("  accept  TenantIds orgId ")
    assert app1[0].endswith("(app-keys-listed, tenants-listed)")
    assert app1[1].startswith("  403     TenantIds otherTenantId (not listed)")
    assert app1[1].endswith("(tenants-other-tenants)")
    assert app1[2].startswith("  403     no TenantIds")
    assert app1[2].endswith("(tenants-session-without-tenants)")
    app2 = lines[lines.index("AppKey2, any tenant:") + 1 :][:2]
    assert app2[0].startswith("  accept  TenantIds anyTenantId")
    assert app2[1].startswith("  accept  no TenantIds")
    other = lines[lines.index("any app not listed (for example AppKey OtherAppKey):") + 1]
    assert other.startswith("  403     any TenantIds")
    assert other.endswith("(app-keys-not-listed)")
    # The legend quotes each rule used, once.
    assert sum(line.startswith("  tenants-listed: ") for line in lines) == 1
    assert '  app-keys-not-listed: "If the X-Amzn-Chime-App-Keys header is present but' in (
        result.stdout
    )


def test_example_identifiers_never_collide_with_the_allowlist(tmp_path):
    path = write_allowlist(
        tmp_path,
        """\
        apps:
          - app_key: OtherAppKey
            tenants: [otherTenantId, orgId]
        destinations: {cidrs: []}
        """,
    )
    result = run("explain", path)
    assert result.returncode == 0
    assert "  403     TenantIds otherTenantId2 (not listed)" in result.stdout
    assert "any app not listed (for example AppKey OtherAppKey2):" in result.stdout


def test_without_app_key_on_the_shipped_allowlist():
    result = run("explain")
    assert result.returncode == 0
    assert "Example meeting app (ExampleAppKey1), tenants exampleOrgId:" in result.stdout
