"""The CSP addon's pure helpers (options, header plan, report parsing) and its hooks, driven by
mitmproxy's own test context (no network). The policy logic itself is chime_egress.csp's, tested
there; here its results are only checked where the addon decides what to do with them."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import exceptions, http
from mitmproxy.test import taddons, tflow

from chime_egress.csp import generate_policy, merge_policies, request_allowed
from chime_egress.csp.addon import ChimeCsp
from chime_egress.csp.reports import MAX_REPORT_BYTES, ReportError, parse_reports
from chime_egress.csp.settings import (
    CSP,
    CSP_REPORT_ONLY,
    REPORTING_ENDPOINTS,
    CspSettings,
    add_reporting,
    build_default_policy,
    build_settings,
    is_document,
    parse_bool,
    parse_hosts,
    parse_report_file,
    parse_report_path,
    plan_headers,
)

OPTIONS = {
    "chime_csp_hosts": "app.example",
    "chime_csp_features": "meetings",
    "chime_csp_default_policy": "",
    "chime_csp_report_only": "false",
    "chime_csp_allow_unsafe_eval": "false",
    "chime_csp_report_path": "",
    "chime_csp_report_file": "",
}
SIGNAL = "wss://signal.m3.ue1.app.chime.aws/control/abc"
INGEST = "https://data.svc.ue1.ingest.chime.aws/v1/client-events"
ORIGIN = "https://app.example"


def settings(**changes: str) -> CspSettings:
    return build_settings({**OPTIONS, **changes})


# --- options ----------------------------------------------------------------------------------


def test_hosts_are_required_and_the_error_says_how_to_give_them() -> None:
    with pytest.raises(ValueError, match=r"chime_csp_hosts is required.*'\*'"):
        parse_hosts(" , ")


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("https://app.example", "scheme"),
        ("app.example:443", "port"),
        ("app.example/path", "path"),
        ("-bad.example", "label"),
        ("app..example", "empty label"),
    ],
)
def test_host_entries_that_are_not_host_names_are_refused(entry: str, why: str) -> None:
    with pytest.raises(ValueError, match=r"chime_csp_hosts: .* is not a host name"):
        parse_hosts(f"ok.example,{entry}")


def test_host_matching_exact_wildcard_and_all() -> None:
    hosts = parse_hosts("App.Example, *.apps.example, [::1], 127.0.0.9")
    assert hosts.matches(["app.example."])
    assert hosts.matches([None, "", "a.b.apps.example"])
    assert hosts.matches(["::1"]) and hosts.matches(["127.0.0.9"])
    assert not hosts.matches(["apps.example"]), "a wildcard never matches its apex"
    assert not hosts.matches(["other.example", None])
    assert not hosts.matches(["evilapp.example"])
    assert parse_hosts("x.example, *").matches(["anything.invalid"])


@pytest.mark.parametrize("text", ["true", "TRUE", " yes", "on", "1"])
def test_true_values(text: str) -> None:
    assert parse_bool("opt", text) is True


@pytest.mark.parametrize("text", ["false", "No", "off", "0"])
def test_false_values(text: str) -> None:
    assert parse_bool("opt", text) is False


def test_a_bad_bool_names_its_option() -> None:
    with pytest.raises(ValueError, match="chime_csp_report_only must be true or false, not 'ja'"):
        parse_bool("chime_csp_report_only", "ja")


@pytest.mark.parametrize("path", ["/chime-csp-reports", "/a/b_c.d~e", "/r%20x"])
def test_good_report_paths(path: str) -> None:
    assert parse_report_path(f" {path} ") == path


@pytest.mark.parametrize(
    "path",
    [
        "reports",
        "https://app.example/r",
        "//evil.example/r",  # scheme-relative: the reports would go to another site
        "/r?x=1",
        "/r#f",
        "/a b",
        "/a;b",
        "/a,b",
        '/a"b',
        "/é",
    ],
)
def test_bad_report_paths_are_refused(path: str) -> None:
    with pytest.raises(ValueError, match="chime_csp_report_path must be an absolute path"):
        parse_report_path(path)


def test_no_report_path_means_none() -> None:
    assert parse_report_path("") is None


def test_report_file_is_created_for_appending_at_start_up(tmp_path: Path) -> None:
    path = tmp_path / "reports.jsonl"
    path.write_text("kept\n")
    assert parse_report_file(str(path)) == path
    assert path.read_text() == "kept\n"
    assert parse_report_file(str(tmp_path / "new.jsonl")) == tmp_path / "new.jsonl"
    assert (tmp_path / "new.jsonl").exists()


def test_a_report_file_that_cannot_be_opened_names_the_option(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"chime_csp_report_file: cannot append to .*missing"):
        parse_report_file(str(tmp_path / "missing" / "reports.jsonl"))
    with pytest.raises(ValueError, match="chime_csp_report_file: cannot append to"):
        parse_report_file(str(tmp_path))  # a directory


def test_unknown_feature_names_the_option() -> None:
    with pytest.raises(ValueError, match=r"chime_csp_features: .*'screen-share'"):
        settings(chime_csp_features="meetings,screen-share")


def test_report_file_without_report_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="chime_csp_report_file needs chime_csp_report_path"):
        settings(chime_csp_report_file=str(tmp_path / "r.jsonl"))


def test_default_policy_is_generated_from_the_features_when_not_given() -> None:
    got = settings(chime_csp_features="meetings,voice-focus")
    assert got.default_policy == generate_policy(["meetings", "voice-focus"])
    assert not got.default_reports_to


def test_a_given_default_policy_gets_the_features_added() -> None:
    got = settings(chime_csp_default_policy="default-src 'self'; img-src 'self' data:")
    assert got.default_policy == merge_policies(
        "default-src 'self'; img-src 'self' data:", ["meetings"]
    )
    for url in (SIGNAL, INGEST):
        assert request_allowed([got.default_policy], "connect", url, ORIGIN) == (True, None)


def test_default_policy_with_a_report_path_points_at_the_collector() -> None:
    got = settings(chime_csp_report_path="/csp")
    assert got.default_policy.endswith("; report-uri /csp; report-to chime-csp")
    assert got.default_reports_to


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("default-src 'self', connect-src 'self'", "single policy"),
        ("default-src 'self'\nconnect-src x", "printable ASCII"),
        ("default-src 'sélf'", "printable ASCII"),
        ("report-uri /x", "holds no directive"),
        (" ; ; ", "holds no directive"),
        ("  ", None),  # blank: the generated policy
    ],
)
def test_default_policy_checks(text: str, message: str | None) -> None:
    if message is None:
        assert build_default_policy(text, ["meetings"]) == generate_policy(["meetings"])
        return
    with pytest.raises(ValueError, match=f"chime_csp_default_policy .*{message}"):
        build_default_policy(text, ["meetings"])


# --- reporting directives and the header plan ---------------------------------------------


def test_reporting_is_added_to_each_policy_without_its_own() -> None:
    value, added = add_reporting(
        "default-src 'self';, img-src *, script-src x; report-uri /app", "/r"
    )
    policies = value.split(",")
    assert policies[0] == "default-src 'self'; report-uri /r; report-to chime-csp"
    assert policies[1] == " img-src *; report-uri /r; report-to chime-csp"
    assert policies[2] == " script-src x; report-uri /app", "the app's own reporting is kept"
    assert added


def test_a_policy_that_already_reports_gets_nothing() -> None:
    assert add_reporting("connect-src 'self'; report-to app", "/r") == (
        "connect-src 'self'; report-to app",
        False,
    )


def test_each_enforced_header_is_merged_on_its_own() -> None:
    first = "default-src 'self'"
    second = "connect-src 'self', script-src 'self'"  # one header holding two policies
    plan = plan_headers([first, second], ["img-src 'none'"], settings())
    assert plan.enforced == (
        merge_policies(first, ["meetings"]),
        merge_policies(second, ["meetings"]),
    )
    assert plan.enforced[1].count(",") == 1, "two policies stay two"
    assert plan.report_only == ("img-src 'none'",), "the app's report-only policy is untouched"
    assert not plan.add_reporting_endpoint
    for url in (SIGNAL, INGEST):
        assert request_allowed(plan.enforced, "connect", url, ORIGIN) == (True, None)


def test_no_policy_gets_the_default_and_blank_headers_count_as_none() -> None:
    plan = plan_headers(["", "  ", ";", " , ;"], [], settings(chime_csp_report_path="/r"))
    assert plan.enforced == (settings(chime_csp_report_path="/r").default_policy,)
    assert plan.add_reporting_endpoint


def test_report_only_keeps_the_apps_enforced_policy_and_reports_the_merged_one() -> None:
    app = "default-src 'self'"
    plan = plan_headers([app], ["img-src 'self'"], settings(chime_csp_report_only="true"))
    assert plan.enforced == (app,), "report-only never weakens what the app enforces"
    assert plan.report_only == ("img-src 'self'", merge_policies(app, ["meetings"]))


def test_report_only_without_an_app_policy_reports_the_default() -> None:
    got = settings(chime_csp_report_only="on", chime_csp_report_path="/r")
    plan = plan_headers([], [], got)
    assert plan.enforced == ()
    assert plan.report_only == (got.default_policy,)
    assert plan.add_reporting_endpoint


def test_reporting_goes_to_the_merged_policies_that_lack_it() -> None:
    got = settings(chime_csp_report_path="/r")
    plan = plan_headers(["default-src 'self'", "connect-src 'self'; report-uri /app"], [], got)
    assert plan.enforced[0].endswith("; report-uri /r; report-to chime-csp")
    assert plan.enforced[1].endswith("; report-uri /app")
    assert plan.add_reporting_endpoint


@pytest.mark.parametrize(
    ("values", "document"),
    [
        (["text/html"], True),
        (["Text/HTML; charset=utf-8"], True),
        (["application/xhtml+xml"], True),
        (["image/svg+xml"], True),  # SVG documents run script
        (["application/atom+xml"], True),
        (["text/plain"], False),
        (["application/json"], False),
        (["text/htmlx"], False),
        # Browsers sniff when there is no valid type: it may render as HTML, so it gets a policy.
        ([], True),
        ([""], True),
        (["nonsense"], True),
        # The last valid type wins (mimesniff), across fields and commas.
        (["text/plain", "text/html"], True),
        (["text/plain, text/html"], True),
        (["text/html, application/json"], False),
        (["text/html", "garbage"], True),
        # Read as browsers read it (issue 16): a quoted comma does not split the value, */* is
        # skipped, and "unknown" types are sniffed.
        (['text/html;charset="x,application/json;"'], True),
        (["text/html, */*"], True),
        (['text/html;a="', "application/json"], True),
        (["unknown/unknown"], True),
        (["application/unknown"], True),
        (['application/json;a="b,text/html"'], False),
    ],
)
def test_is_document(values: list[str], document: bool) -> None:
    assert is_document(values) is document


# --- report parsing ---------------------------------------------------------------------------

CSP_REPORT = {
    "csp-report": {
        "document-uri": "https://app.example/meeting",
        "referrer": "",
        "violated-directive": "connect-src",
        "effective-directive": "connect-src",
        "original-policy": "connect-src 'self'; report-uri /r",
        "disposition": "enforce",
        "blocked-uri": SIGNAL,
        "line-number": 12,
        "column-number": 7,
        "source-file": "https://app.example/app.js",
        "status-code": 200,
        "script-sample": "",
    }
}
REPORTS_JSON = [
    {
        "age": 10,
        "type": "csp-violation",
        "url": "https://app.example/meeting",
        "user_agent": "Browser/1.0",
        "body": {
            "documentURL": "https://app.example/meeting",
            "blockedURL": "blob",
            "effectiveDirective": "worker-src",
            "originalPolicy": "default-src 'self'",
            "disposition": "report",
            "statusCode": 200,
            "lineNumber": 3,
            "sample": "",
        },
    },
    {"type": "deprecation", "url": "https://app.example/", "body": {"id": "x"}},
]


def test_csp_report_format() -> None:
    (violation,) = parse_reports("application/csp-report", json.dumps(CSP_REPORT).encode(), "UA/2")
    assert violation.format == "csp-report"
    assert violation.blocked_uri == SIGNAL
    assert violation.violated_directive == "connect-src"
    assert violation.document_uri == "https://app.example/meeting"
    assert violation.line_number == 12 and violation.status_code == 200
    assert violation.user_agent == "UA/2"
    record = violation.record(received="t", client="127.0.0.1", host="app.example")
    assert record["blocked-uri"] == SIGNAL and record["violated-directive"] == "connect-src"
    assert record["report"] == CSP_REPORT["csp-report"]
    json.dumps(record)  # a JSON line


def test_reports_json_format_keeps_only_csp_violations() -> None:
    (violation,) = parse_reports(
        "application/reports+json; charset=utf-8", json.dumps(REPORTS_JSON).encode(), "UA/2"
    )
    assert violation.format == "reports+json"
    assert violation.blocked_uri == "blob"
    assert violation.violated_directive == violation.effective_directive == "worker-src"
    assert violation.disposition == "report"
    assert violation.user_agent == "Browser/1.0", "the report's own user agent wins"


def test_old_browsers_json_content_type_is_accepted_for_both_shapes() -> None:
    assert len(parse_reports("application/json", json.dumps(CSP_REPORT).encode())) == 1
    assert len(parse_reports("application/json", json.dumps(REPORTS_JSON).encode())) == 1


def test_odd_field_types_do_not_break_parsing() -> None:
    report = {"csp-report": {"blocked-uri": 5, "line-number": "7", "status-code": True}}
    (violation,) = parse_reports("application/csp-report", json.dumps(report).encode())
    assert violation.blocked_uri == "5"
    assert violation.line_number is None and violation.status_code is None
    assert violation.violated_directive == ""


def test_violated_directive_falls_back_to_the_effective_one() -> None:
    report = {"csp-report": {"effective-directive": "img-src", "blocked-uri": "blob"}}
    (violation,) = parse_reports("application/csp-report", json.dumps(report).encode())
    assert violation.violated_directive == "img-src"


@pytest.mark.parametrize(
    ("content_type", "body", "status", "reason"),
    [
        ("text/plain", b"{}", 415, "unsupported content type"),
        (None, b"{}", 415, "unsupported content type"),
        ("application/csp-report", b"{not json", 400, "not JSON"),
        ("application/csp-report", b"\xff\xfe\x00", 400, "not JSON"),
        ("application/csp-report", b"[" * 100_000, 400, "nested deeper than"),
        ("application/csp-report", b'{"other": {}}', 400, "no 'csp-report' object"),
        ("application/csp-report", b'{"csp-report": "x"}', 400, "no 'csp-report' object"),
        ("application/csp-report", b"[]", 400, "unexpected JSON list"),
        ("application/reports+json", b"{}", 400, "unexpected JSON dict"),
        ("application/reports+json", b"[1]", 400, "not an object"),
        ("application/reports+json", b'[{"type": "csp-violation"}]', 400, "no 'body' object"),
        ("application/json", b'"text"', 400, "unexpected JSON str"),
    ],
)
def test_bad_reports_are_refused_with_a_status(
    content_type: str | None, body: bytes, status: int, reason: str
) -> None:
    with pytest.raises(ReportError, match=reason) as caught:
        parse_reports(content_type, body)
    assert caught.value.status == status


def test_oversized_reports_are_refused() -> None:
    body = json.dumps({"csp-report": {"blocked-uri": "x" * MAX_REPORT_BYTES}}).encode()
    with pytest.raises(ReportError) as caught:
        parse_reports("application/csp-report", body)
    assert caught.value.status == 413


def test_log_line_cannot_be_forged_by_a_report() -> None:
    report = {
        "csp-report": {
            "blocked-uri": "https://x.example/\nSecurity Policy Violation: blocked-uri=fake",
            "violated-directive": "connect-src 'self'",
            "document-uri": "",
        }
    }
    (violation,) = parse_reports("application/csp-report", json.dumps(report).encode())
    line = violation.log_line()
    assert "\n" not in line
    assert line.startswith("Security Policy Violation: blocked-uri=https://x.example/\\n")
    assert "violated-directive=connect-src%20'self'" in line
    assert "document=-" in line


# --- the addon's hooks --------------------------------------------------------------------------


@pytest.fixture
def addon(tmp_path: Path) -> Iterator[tuple[ChimeCsp, taddons.context, Path]]:
    csp = ChimeCsp()
    report_file = tmp_path / "reports.jsonl"
    with taddons.context(csp) as tctx:
        tctx.configure(
            csp,
            chime_csp_hosts="app.example",
            chime_csp_report_path="/chime-csp-reports",
            chime_csp_report_file=str(report_file),
        )
        yield csp, tctx, report_file


def flow_to(host: str, *, sni: str | None = None, resp: bool = False) -> http.HTTPFlow:
    """A test flow whose request went to `host` (host and Host header), with TLS name `sni`."""
    flow = tflow.tflow(resp=resp)
    flow.request.host = host
    flow.request.headers["Host"] = host
    flow.client_conn.sni = sni
    return flow


def html_flow(host: str = "app.example", *csp: str, sni: str | None = None) -> http.HTTPFlow:
    flow = flow_to(host, sni=sni, resp=True)
    assert flow.response is not None
    flow.response.headers["Content-Type"] = "text/html; charset=utf-8"
    for value in csp:
        flow.response.headers.add(CSP, value)
    return flow


def report_flow(
    body: bytes, content_type: str = "application/csp-report", *, method: str = "POST"
) -> http.HTTPFlow:
    flow = flow_to("app.example")
    flow.request.method = method
    flow.request.path = "/chime-csp-reports?x=1"
    flow.request.headers["Content-Type"] = content_type
    flow.request.content = body
    return flow


def test_bad_options_refuse_configuration(addon: tuple[ChimeCsp, Any, Path]) -> None:
    csp, tctx, _ = addon
    before = csp.settings
    with pytest.raises(exceptions.OptionsError, match="chime_csp_features"):
        tctx.configure(csp, chime_csp_features="meetings,nope")
    with pytest.raises(exceptions.OptionsError, match="chime_csp_allow_unsafe_eval"):
        tctx.configure(csp, chime_csp_allow_unsafe_eval="maybe")
    assert csp.settings == before, "a refused change leaves the running settings alone"
    tctx.configure(csp, chime_csp_features="messaging")
    assert csp.settings is not None and csp.settings.features == ("messaging",)


def test_first_configuration_without_hosts_is_refused() -> None:
    csp = ChimeCsp()
    with taddons.context(csp) as tctx, pytest.raises(exceptions.OptionsError, match="hosts"):
        tctx.configure(csp, chime_csp_features="meetings")


async def test_html_of_a_configured_host_gets_merged_headers(
    addon: tuple[ChimeCsp, Any, Path],
) -> None:
    csp, tctx, _ = addon
    flow = html_flow("app.example", "default-src 'self'", "connect-src 'self'")
    await tctx.cycle(csp, flow)
    assert flow.response is not None
    values = flow.response.headers.get_all(CSP)
    assert len(values) == 2
    assert values[0].startswith(merge_policies("default-src 'self'", ["meetings"]))
    assert values[1].startswith(merge_policies("connect-src 'self'", ["meetings"]))
    assert all(v.endswith("report-uri /chime-csp-reports; report-to chime-csp") for v in values)
    assert flow.response.headers.get_all(REPORTING_ENDPOINTS) == ['chime-csp="/chime-csp-reports"']


async def test_the_browsers_tls_name_selects_the_host_in_reverse_mode(
    addon: tuple[ChimeCsp, Any, Path],
) -> None:
    csp, tctx, _ = addon
    flow = html_flow("upstream.internal", sni="app.example")
    await tctx.cycle(csp, flow)
    assert flow.response is not None and flow.response.headers.get(CSP)


async def test_other_hosts_and_other_content_are_untouched(
    addon: tuple[ChimeCsp, Any, Path],
) -> None:
    csp, tctx, _ = addon
    other = html_flow("other.example", "default-src 'self'")
    await tctx.cycle(csp, other)
    assert other.response is not None
    assert other.response.headers.get_all(CSP) == ["default-src 'self'"]
    script = html_flow("app.example", "default-src 'self'")
    assert script.response is not None
    script.response.headers["Content-Type"] = "text/javascript"
    await tctx.cycle(csp, script)
    assert script.response.headers.get_all(CSP) == ["default-src 'self'"]


async def test_a_response_made_by_another_addon_gets_the_policy_too(
    addon: tuple[ChimeCsp, Any, Path],
) -> None:
    csp, _, _ = addon
    flow = html_flow("app.example")
    csp.response(flow)  # no responseheaders event for a response an addon made
    csp.response(flow)  # and applying twice changes nothing
    assert flow.response is not None
    assert flow.response.headers.get_all(CSP) == [
        csp.settings.default_policy if csp.settings else ""
    ]


async def test_a_meta_policy_is_warned_about(
    addon: tuple[ChimeCsp, Any, Path], caplog: pytest.LogCaptureFixture
) -> None:
    csp, tctx, _ = addon
    flow = html_flow("app.example")
    assert flow.response is not None
    flow.response.content = (
        b"<html><head><META http-equiv='Content-Security-Policy' content=\"connect-src 'self'\">"
    )
    with caplog.at_level(logging.WARNING):
        await tctx.cycle(csp, flow)
    assert "declares a policy in a <meta> element" in caplog.text


async def test_reports_are_answered_logged_and_appended(
    addon: tuple[ChimeCsp, Any, Path], caplog: pytest.LogCaptureFixture
) -> None:
    csp, tctx, report_file = addon
    first = report_flow(json.dumps(CSP_REPORT).encode())
    second = report_flow(json.dumps(REPORTS_JSON).encode(), "application/reports+json")
    with caplog.at_level(logging.WARNING):
        await tctx.cycle(csp, first)
        await tctx.cycle(csp, second)
    for flow in (first, second):
        assert flow.response is not None and flow.response.status_code == 204
    assert f"Security Policy Violation: blocked-uri={SIGNAL} violated-directive=connect-src" in (
        caplog.text
    )
    lines = [json.loads(line) for line in report_file.read_text().splitlines()]
    assert [(r["format"], r["blocked-uri"], r["violated-directive"]) for r in lines] == [
        ("csp-report", SIGNAL, "connect-src"),
        ("reports+json", "blob", "worker-src"),
    ]
    assert lines[0]["host"] == "app.example"


@pytest.mark.parametrize(
    ("method", "content_type", "body", "status"),
    [
        ("GET", "application/csp-report", b"", 405),
        ("POST", "text/plain", b"{}", 415),
        ("POST", "application/csp-report", b"{oops", 400),
    ],
)
async def test_refused_reports_are_answered_here_and_not_stored(
    addon: tuple[ChimeCsp, Any, Path], method: str, content_type: str, body: bytes, status: int
) -> None:
    csp, tctx, report_file = addon
    flow = report_flow(body, content_type, method=method)
    await tctx.cycle(csp, flow)
    assert flow.response is not None and flow.response.status_code == status
    assert report_file.read_text() == ""


def report_headers_flow(*headers: tuple[str, str], http_version: str = "HTTP/1.1") -> http.HTTPFlow:
    """A report request as requestheaders sees it: the headers, no body read yet."""
    flow = report_flow(b"")
    flow.request.http_version = http_version
    del flow.request.headers["Content-Length"]
    for name, value in headers:
        flow.request.headers.add(name, value)
    return flow


@pytest.mark.parametrize(
    ("headers", "http_version"),
    [
        ((("Content-Length", str(MAX_REPORT_BYTES + 1)),), "HTTP/1.1"),
        ((("Transfer-Encoding", "chunked"),), "HTTP/1.1"),  # the 400 MiB chunked POST
        ((("Transfer-Encoding", "chunked"), ("Content-Length", "10")), "HTTP/1.1"),
        ((("Content-Length", "10"), ("Content-Length", "20")), "HTTP/1.1"),
        ((), "HTTP/2.0"),  # HTTP/2 without content-length: the body ends when the client says
        ((), "HTTP/3"),
    ],
    ids=["over-the-limit", "chunked", "chunked-and-length", "two-lengths", "h2", "h3"],
)
async def test_a_report_body_that_is_not_announced_and_bounded_is_never_read(
    addon: tuple[ChimeCsp, Any, Path],
    caplog: pytest.LogCaptureFixture,
    headers: tuple[tuple[str, str], ...],
    http_version: str,
) -> None:
    csp, _, _ = addon
    flow = report_headers_flow(*headers, http_version=http_version)
    with caplog.at_level(logging.WARNING):
        csp.requestheaders(flow)
    # Killed here, in requestheaders: mitmproxy then closes the request without reading its
    # body. An answer set here instead would only be sent after the whole body was buffered.
    assert flow.error is not None and flow.error.msg == flow.error.KILLED_MESSAGE
    assert flow.response is None
    assert "refused a violation report" in caplog.text and "closed without reading" in caplog.text


@pytest.mark.parametrize(
    ("headers", "http_version"),
    [
        ((("Content-Length", str(MAX_REPORT_BYTES)),), "HTTP/1.1"),
        ((("Content-Length", "2"),), "HTTP/2.0"),
        ((), "HTTP/1.1"),  # HTTP/1 without length or chunking has no body
    ],
)
async def test_an_announced_bounded_report_body_is_read(
    addon: tuple[ChimeCsp, Any, Path],
    headers: tuple[tuple[str, str], ...],
    http_version: str,
) -> None:
    csp, _, _ = addon
    flow = report_headers_flow(*headers, http_version=http_version)
    flow.request.stream = True  # as mitmproxy's stream_large_bodies would have it
    csp.requestheaders(flow)
    assert flow.error is None and flow.response is None
    assert flow.request.stream is False, "never streamed: the body must not go to the app"


async def test_a_get_without_a_body_is_still_answered_405(
    addon: tuple[ChimeCsp, Any, Path],
) -> None:
    csp, _, _ = addon
    flow = report_headers_flow()
    flow.request.method = "GET"
    csp.requestheaders(flow)
    assert flow.response is not None and flow.response.status_code == 405


@pytest.mark.parametrize(
    "body",
    [
        b'{"csp-report": {"blocked-uri": "x", "line-number": NaN}}',
        b'{"csp-report": {"blocked-uri": "x", "line-number": Infinity}}',
        b'{"csp-report": {"blocked-uri": "x", "line-number": -Infinity}}',
        b'{"csp-report": {"blocked-uri": "x", "line-number": 1e999}}',
        b'{"csp-report": {"blocked-uri": "x", "deep": ' + b"[" * 300 + b"]" * 300 + b"}}",
        b'{"csp-report": {"blocked-uri": "x", "n": ' + b"9" * 5000 + b"}}",
    ],
    ids=["nan", "infinity", "minus-infinity", "1e999", "300-deep", "5000-digits"],
)
async def test_reports_that_json_tools_cannot_read_are_refused(
    addon: tuple[ChimeCsp, Any, Path], body: bytes
) -> None:
    csp, tctx, report_file = addon
    flow = report_flow(body)
    await tctx.cycle(csp, flow)
    assert flow.response is not None and flow.response.status_code == 400
    assert report_file.read_text() == ""


async def test_the_report_path_of_another_host_is_the_apps_business(
    addon: tuple[ChimeCsp, Any, Path],
) -> None:
    csp, tctx, _ = addon
    flow = report_flow(json.dumps(CSP_REPORT).encode())
    flow.request.host = "other.example"
    flow.request.headers["Host"] = "other.example"
    await tctx.cycle(csp, flow)
    assert flow.response is None, "left to go upstream"


def test_report_only_settings_are_swapped_whole(addon: tuple[ChimeCsp, Any, Path]) -> None:
    csp, tctx, _ = addon
    tctx.configure(csp, chime_csp_report_only="true")
    assert csp.settings is not None and csp.settings.report_only
    flow = html_flow("app.example", "default-src 'self'")
    csp.response(flow)
    assert flow.response is not None
    assert flow.response.headers.get_all(CSP) == ["default-src 'self'"]
    assert flow.response.headers.get_all(CSP_REPORT_ONLY)[0].startswith(
        merge_policies("default-src 'self'", ["meetings"])
    )


async def test_each_page_is_scanned_for_a_meta_policy_once(
    addon: tuple[ChimeCsp, Any, Path], caplog: pytest.LogCaptureFixture
) -> None:
    csp, tctx, _ = addon
    for body in (b"<html><head></head>", b"<meta http-equiv=content-security-policy content=x>"):
        flow = html_flow("app.example")
        assert flow.response is not None
        flow.response.content = body
        with caplog.at_level(logging.WARNING):
            await tctx.cycle(csp, flow)
    # The second response of the same page is not decoded and scanned again.
    assert "declares a policy in a <meta> element" not in caplog.text


META_PAGE = b"<meta http-equiv=content-security-policy content=x>"


async def served_page(
    addon: tuple[ChimeCsp, Any, Path],
    caplog: pytest.LogCaptureFixture,
    body: bytes = META_PAGE,
    *,
    path: str = "/",
    content_type: str | None = None,
) -> str:
    """One HTML response of app.example at `path` through the addon; what it logged."""
    csp, tctx, _ = addon
    flow = html_flow("app.example")
    assert flow.response is not None
    flow.request.path = path
    if content_type is not None:
        flow.response.headers["Content-Type"] = content_type
    flow.response.content = body
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        await tctx.cycle(csp, flow)
    return caplog.text


async def test_pages_are_still_checked_after_a_thousand_other_paths(
    addon: tuple[ChimeCsp, Any, Path], caplog: pytest.LogCaptureFixture
) -> None:
    # A crawl of many paths once filled a fill-once table, and no page was checked after it.
    for index in range(1500):
        await served_page(addon, caplog, b"<p>", path=f"/crawl/{index}")
    logged = await served_page(addon, caplog, path="/meeting")
    assert "/meeting declares a policy in a <meta> element" in logged


async def test_a_utf16_page_is_checked_by_its_charset(
    addon: tuple[ChimeCsp, Any, Path], caplog: pytest.LogCaptureFixture
) -> None:
    body = META_PAGE.decode().encode("utf-16-le")
    logged = await served_page(addon, caplog, body, content_type="text/html; charset=utf-16le")
    assert "declares a policy in a <meta> element" in logged


async def test_a_page_with_a_quoted_comma_in_its_type_gets_the_policy(
    addon: tuple[ChimeCsp, Any, Path],
) -> None:
    csp, tctx, _ = addon
    flow = html_flow("app.example")
    assert flow.response is not None
    flow.response.headers["Content-Type"] = 'text/html;charset="x,application/json;"'
    await tctx.cycle(csp, flow)
    assert flow.response.headers.get_all(CSP), "a browser renders it as HTML"


async def test_a_clients_path_is_logged_escaped(
    addon: tuple[ChimeCsp, Any, Path], caplog: pytest.LogCaptureFixture
) -> None:
    logged = await served_page(addon, caplog, path="/e\x1b]0;pwned\x07")
    assert "/e\\x1b]0;pwned\\x07 declares a policy" in logged
    assert "\x1b" not in logged
