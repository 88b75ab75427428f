"""The CSP addon in the real mitmdump, in reverse mode in front of a local app, driven by curl.

    curl --resolve app.test:PORT:127.0.0.1 https://app.test:PORT/...
      -> mitmdump --mode reverse:http://127.0.0.4:APP -s addon/chime_csp.py (127.0.0.1:PORT)
      -> the test app (tests/support/webapp.py) on 127.0.0.4

mitmproxy rewrites the Host header to the upstream's before any addon runs, so the name the
"browser" used reaches the addon as its TLS server name: ``app.test`` is configured, ``other.test``
is not. Verdicts on the policies that come back are the checker's (chime_egress.csp); whether a
browser agrees is tests/browser's job.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from chime_egress.csp import generate_policy, merge_policies, request_allowed
from tests.support.clients import curl
from tests.support.files import mode, usual_umask
from tests.support.proxy import ProxyLauncher, run_expect_failure
from tests.support.webapp import (
    CSP_SCRIPT,
    ReverseProxy,
    WebApp,
    html_page,
    reverse_proxy_args,
    start_reverse_proxy,
)

APP_IP = "127.0.0.4"
APP_HOST = "app.test"
OTHER_HOST = "other.test"
FEATURES = ("meetings", "video-fx")
REPORT_PATH = "/chime-csp-reports"
REPORTING = f"; report-uri {REPORT_PATH}; report-to chime-csp"
SIGNAL = "wss://signal.m3.ue1.app.chime.aws/control/abc"
INGEST = "https://data.svc.ue1.ingest.chime.aws/v1/client-events"
SDK_SCRIPT = "https://static.sdkassets.chime.aws/ml_media_fx/otherassets/worker.js"
ELSEWHERE = "https://evil.example/x"

STRICT = "default-src 'self'"
CONNECT_ONLY = "connect-src 'self'; img-src 'self'"


@dataclass(frozen=True)
class Fetched:
    status: int
    headers: list[tuple[str, str]]
    body: str
    detail: str

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


def fetch(
    proxy: ReverseProxy,
    path: str,
    *,
    host: str = APP_HOST,
    method: str = "GET",
    data: str | None = None,
    headers: Sequence[str] = (),
    workdir: Path,
) -> Fetched:
    """One request through the reverse proxy, as a browser at https://HOST:PORT would send it."""
    dump = workdir / "headers.txt"
    args = ["--dump-header", str(dump), "-X", method]
    if data is not None:
        args += ["--data-binary", data]
    result = curl(
        f"https://{host}:{proxy.port}{path}",
        proxy_port=None,
        cacert=proxy.process.ca_cert,
        resolve=[f"{host}:{proxy.port}:127.0.0.1"],
        headers=headers,
        extra_args=args,
    )
    assert result.returncode == 0, str(result)
    lines = dump.read_bytes().decode("latin-1").splitlines()
    fields = [tuple(line.split(":", 1)) for line in lines[1:] if ":" in line]
    return Fetched(
        status=result.status,
        headers=[(n.strip(), v.strip()) for n, v in fields],
        body=result.text,
        detail=f"{result}\nresponse headers: {lines}",
    )


def post_report(
    proxy: ReverseProxy,
    data: str | None,
    content_type: str | None,
    *,
    workdir: Path,
    host: str = APP_HOST,
    method: str = "POST",
    headers: Sequence[str] = (),
) -> Fetched:
    """A request to the report path, as a browser sends a violation report."""
    content = [f"Content-Type: {content_type}"] if content_type else []
    return fetch(
        proxy,
        REPORT_PATH,
        host=host,
        method=method,
        data=data,
        headers=[*content, *headers],
        workdir=workdir,
    )


def allowed(policies: Sequence[str], kind: str, url: str) -> bool:
    return request_allowed(policies, kind, url, f"https://{APP_HOST}")[0]


@pytest.fixture(scope="module")
def app() -> Iterator[WebApp]:
    with WebApp(APP_IP, name="app") as server:
        server.route("/none", html_page())
        server.route("/one", html_page(), headers=[("Content-Security-Policy", STRICT)])
        server.route(
            "/two",
            html_page(),
            headers=[
                ("Content-Security-Policy", STRICT),
                ("Content-Security-Policy", CONNECT_ONLY),
            ],
        )
        server.route(
            "/own-reporting",
            html_page(),
            headers=[("Content-Security-Policy", f"{STRICT}; report-uri /app-reports")],
        )
        # Browsers sniff a page without a valid type (and take the last of two): HTML, maybe.
        server.route("/untyped", html_page(), content_type=None)
        server.route(
            "/two-types",
            html_page(),
            content_type="text/plain",
            headers=[("Content-Type", "text/html")],
        )
        # Issue 16: one HTML type to a browser (the comma is quoted), JSON to a naive split.
        server.route(
            "/quoted-type", html_page(), content_type='text/html;charset="x,application/json;"'
        )
        # A meta policy far into the head, its http-equiv written with a character reference.
        late_meta = (
            "<html><head><script>" + "/* padding */" * 6000 + "</script>"
            '<meta http-equiv="&#67;ontent-Security-Policy" content="connect-src \'self\'">'
            "</head><body></body></html>"
        )
        server.route("/late-meta", late_meta)
        server.route(
            "/data.json",
            '{"ok": true}',
            content_type="application/json",
            headers=[("Content-Security-Policy", STRICT)],
        )
        yield server


@pytest.fixture(scope="module")
def report_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("csp-reports") / "reports.jsonl"


# What both proxies share: the app's host, the features and the collector's path.
BASE_OPTIONS = (
    f"chime_csp_hosts={APP_HOST}",
    f"chime_csp_features={','.join(FEATURES)}",
    f"chime_csp_report_path={REPORT_PATH}",
)


@pytest.fixture(scope="module")
def proxy(module_proxy_launcher: ProxyLauncher, app: WebApp, report_file: Path) -> ReverseProxy:
    return start_reverse_proxy(
        module_proxy_launcher,
        app.origin,
        [*BASE_OPTIONS, f"chime_csp_report_file={report_file}"],
        label="csp enforce",
    )


@pytest.fixture(scope="module")
def report_only_proxy(module_proxy_launcher: ProxyLauncher, app: WebApp) -> ReverseProxy:
    return start_reverse_proxy(
        module_proxy_launcher,
        app.origin,
        [*BASE_OPTIONS, "chime_csp_report_only=true"],
        label="csp report-only",
    )


# --- policies -------------------------------------------------------------------------------


def test_one_app_policy_is_merged(proxy: ReverseProxy, tmp_path: Path) -> None:
    got = fetch(proxy, "/one", workdir=tmp_path)
    assert got.status == 200, got.detail
    (policy,) = got.values("Content-Security-Policy")
    assert policy == merge_policies(STRICT, FEATURES) + REPORTING, got.detail
    for kind, url in [("connect", SIGNAL), ("connect", INGEST), ("script", SDK_SCRIPT)]:
        assert allowed([policy], kind, url), f"{kind} {url} blocked by {policy}"
    assert not allowed([policy], "connect", ELSEWHERE), "merging must not open anything else"
    assert got.values("Reporting-Endpoints") == [f'chime-csp="{REPORT_PATH}"'], got.detail
    assert "chime-csp test page" in got.body


def test_two_app_policies_are_merged_each_on_its_own(proxy: ReverseProxy, tmp_path: Path) -> None:
    got = fetch(proxy, "/two", workdir=tmp_path)
    policies = got.values("Content-Security-Policy")
    assert policies == [
        merge_policies(STRICT, FEATURES) + REPORTING,
        merge_policies(CONNECT_ONLY, FEATURES) + REPORTING,
    ], got.detail
    assert allowed(policies, "connect", SIGNAL) and allowed(policies, "connect", INGEST)
    assert not allowed(policies, "connect", ELSEWHERE)
    assert not allowed(policies, "image", "https://images.example/x.png"), "img-src kept"


def test_no_app_policy_gets_the_default(proxy: ReverseProxy, tmp_path: Path) -> None:
    got = fetch(proxy, "/none", workdir=tmp_path)
    assert got.values("Content-Security-Policy") == [generate_policy(FEATURES) + REPORTING]
    assert got.values("Content-Security-Policy-Report-Only") == []
    assert got.values("Reporting-Endpoints") == [f'chime-csp="{REPORT_PATH}"'], got.detail


def test_the_apps_own_reporting_is_kept(proxy: ReverseProxy, tmp_path: Path) -> None:
    got = fetch(proxy, "/own-reporting", workdir=tmp_path)
    (policy,) = got.values("Content-Security-Policy")
    assert policy == merge_policies(f"{STRICT}; report-uri /app-reports", FEATURES), got.detail
    assert got.values("Reporting-Endpoints") == [], got.detail


def test_non_html_is_untouched(proxy: ReverseProxy, tmp_path: Path) -> None:
    got = fetch(proxy, "/data.json", workdir=tmp_path)
    assert got.values("Content-Security-Policy") == [STRICT], got.detail
    assert got.values("Reporting-Endpoints") == []


def test_a_page_a_browser_may_render_as_html_gets_the_policy(
    proxy: ReverseProxy, tmp_path: Path
) -> None:
    for path in ("/untyped", "/two-types"):
        got = fetch(proxy, path, workdir=tmp_path)
        assert got.values("Content-Security-Policy") == [generate_policy(FEATURES) + REPORTING], (
            got.detail
        )


def test_a_page_whose_type_has_a_quoted_comma_gets_the_policy(
    proxy: ReverseProxy, tmp_path: Path
) -> None:
    got = fetch(proxy, "/quoted-type", workdir=tmp_path)
    assert got.values("Content-Security-Policy") == [generate_policy(FEATURES) + REPORTING], (
        got.detail
    )


def test_a_meta_policy_far_into_the_head_is_warned_about(
    proxy: ReverseProxy, tmp_path: Path
) -> None:
    since = proxy.process.mark()
    got = fetch(proxy, "/late-meta", workdir=tmp_path)
    assert got.status == 200, got.detail
    proxy.process.wait_for_log(r"/late-meta declares a policy in a <meta> element", since=since)


def test_a_host_not_configured_is_untouched(proxy: ReverseProxy, tmp_path: Path) -> None:
    for path, expected in [("/one", [STRICT]), ("/none", [])]:
        got = fetch(proxy, path, host=OTHER_HOST, workdir=tmp_path)
        assert got.status == 200, got.detail
        assert got.values("Content-Security-Policy") == expected, got.detail


def test_report_only_leaves_the_enforced_policy_and_reports_the_merged_one(
    report_only_proxy: ReverseProxy, tmp_path: Path
) -> None:
    got = fetch(report_only_proxy, "/two", workdir=tmp_path)
    assert got.values("Content-Security-Policy") == [STRICT, CONNECT_ONLY], got.detail
    assert got.values("Content-Security-Policy-Report-Only") == [
        merge_policies(STRICT, FEATURES) + REPORTING,
        merge_policies(CONNECT_ONLY, FEATURES) + REPORTING,
    ], got.detail


def test_report_only_without_an_app_policy_reports_the_default(
    report_only_proxy: ReverseProxy, tmp_path: Path
) -> None:
    got = fetch(report_only_proxy, "/none", workdir=tmp_path)
    assert got.values("Content-Security-Policy") == [], got.detail
    assert got.values("Content-Security-Policy-Report-Only") == [
        generate_policy(FEATURES) + REPORTING
    ]
    assert got.values("Reporting-Endpoints") == [f'chime-csp="{REPORT_PATH}"'], got.detail


# --- the report collector ---------------------------------------------------------------------

CSP_REPORT = {
    "csp-report": {
        "document-uri": f"https://{APP_HOST}/meeting",
        "violated-directive": "connect-src",
        "effective-directive": "connect-src",
        "original-policy": STRICT,
        "disposition": "enforce",
        "blocked-uri": SIGNAL,
        "status-code": 200,
    }
}
REPORTS_JSON = [
    {
        "type": "csp-violation",
        "age": 3,
        "url": f"https://{APP_HOST}/meeting",
        "user_agent": "curl",
        "body": {
            "documentURL": f"https://{APP_HOST}/meeting",
            "blockedURL": "blob",
            "effectiveDirective": "worker-src",
            "originalPolicy": STRICT,
            "disposition": "enforce",
        },
    }
]


def test_reports_of_both_formats_are_collected_and_never_reach_the_app(
    proxy: ReverseProxy, app: WebApp, report_file: Path, tmp_path: Path
) -> None:
    before = report_file.read_text().splitlines()
    since = proxy.process.mark()
    first = post_report(proxy, json.dumps(CSP_REPORT), "application/csp-report", workdir=tmp_path)
    second = post_report(
        proxy, json.dumps(REPORTS_JSON), "application/reports+json", workdir=tmp_path
    )
    assert (first.status, second.status) == (204, 204), f"{first.detail}\n{second.detail}"
    assert app.requests(REPORT_PATH) == [], "a report request went to the app"
    proxy.process.wait_for_log(
        rf"Security Policy Violation: blocked-uri={SIGNAL} violated-directive=connect-src "
        rf"document=https://{APP_HOST}/meeting",
        since=since,
    )
    proxy.process.wait_for_log(
        r"Security Policy Violation: blocked-uri=blob violated-directive=worker-src", since=since
    )
    lines = [json.loads(line) for line in report_file.read_text().splitlines()[len(before) :]]
    assert [(r["format"], r["blocked-uri"], r["violated-directive"], r["host"]) for r in lines] == [
        ("csp-report", SIGNAL, "connect-src", APP_HOST),
        ("reports+json", "blob", "worker-src", APP_HOST),
    ]


@pytest.mark.parametrize(
    ("method", "content_type", "data", "status"),
    [
        ("POST", "application/csp-report", "{not json", 400),
        ("POST", "application/reports+json", '{"csp-report": {}}', 400),
        ("POST", "text/plain", "hello", 415),
        ("GET", None, None, 405),
    ],
    ids=["bad-json", "wrong-shape", "wrong-type", "get"],
)
def test_bad_reports_are_answered_by_the_proxy(
    proxy: ReverseProxy,
    app: WebApp,
    report_file: Path,
    tmp_path: Path,
    method: str,
    content_type: str | None,
    data: str | None,
    status: int,
) -> None:
    before = report_file.read_text()
    got = post_report(proxy, data, content_type, method=method, workdir=tmp_path)
    assert got.status == status, got.detail
    assert app.requests(REPORT_PATH) == []
    assert report_file.read_text() == before
    assert proxy.process.returncode is None, "mitmdump must survive a bad report"


def test_a_compressed_report_is_refused_before_it_is_decoded(
    proxy: ReverseProxy, app: WebApp, report_file: Path, tmp_path: Path
) -> None:
    # Browsers never compress reports; decoding one could expand it enormously before any
    # size check. (The body is not even gzip: the refusal must come before any decoding.)
    before = report_file.read_text()
    got = post_report(
        proxy,
        '{"csp-report": {}}',
        "application/csp-report",
        headers=["Content-Encoding: gzip"],
        workdir=tmp_path,
    )
    assert got.status == 415, got.detail
    assert app.requests(REPORT_PATH) == []
    assert report_file.read_text() == before


def test_the_report_path_of_another_host_goes_to_the_app(
    proxy: ReverseProxy, app: WebApp, tmp_path: Path
) -> None:
    got = post_report(
        proxy,
        json.dumps(CSP_REPORT),
        "application/csp-report",
        host=OTHER_HOST,
        workdir=tmp_path,
    )
    assert got.status == 404, got.detail  # the app's answer: it has no such route
    assert len(app.requests(REPORT_PATH)) == 1


# --- hostile report requests (issue 16) -------------------------------------------------------

MIB = 1024 * 1024


@dataclass(frozen=True)
class Upload:
    sent: int  # body bytes the proxy took before it closed the connection, or all of them
    answer: bytes  # what came back (empty when the connection was closed unanswered)


def upload_report(
    proxy: ReverseProxy,
    headers: Sequence[str],
    body_chunks: Iterator[bytes],
    *,
    host: str = APP_HOST,
) -> Upload:
    """POST to the report path over TLS, the body sent chunk by chunk until the proxy stops
    taking it; what was sent and what came back."""
    context = ssl.create_default_context(cafile=str(proxy.process.ca_cert))
    raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=20)
    sent = 0
    answer = b""
    with context.wrap_socket(raw, server_hostname=host) as tls:
        head = [f"POST {REPORT_PATH} HTTP/1.1", f"Host: {host}", *headers, "", ""]
        tls.sendall("\r\n".join(head).encode())
        try:
            for chunk in body_chunks:
                tls.sendall(chunk)
                sent += len(chunk)
        except OSError:  # the proxy closed the connection: it read no further
            pass
        with contextlib.suppress(OSError):
            while data := tls.recv(65536):
                answer += data
    return Upload(sent, answer)


def chunked(total: int, piece: int = MIB) -> Iterator[bytes]:
    """A chunked body of `total` bytes of a JSON string, as a client trickles a huge report."""
    opening = b'{"csp-report": "'
    yield b"%x\r\n" % len(opening) + opening + b"\r\n"
    for _ in range(total // piece):
        yield b"%x\r\n" % piece + b"x" * piece + b"\r\n"
    yield b'2\r\n"}\r\n0\r\n\r\n'


def test_a_chunked_report_of_any_size_is_closed_unread(
    proxy: ReverseProxy, app: WebApp, report_file: Path
) -> None:
    # The reviewer's 400 MiB chunked POST took mitmdump from 75 MB to 893 MB before the 413;
    # 64 MiB shows the same: before the fix the proxy read (and buffered) all of it.
    before, forwarded = report_file.read_text(), len(app.requests(REPORT_PATH))
    since = proxy.process.mark()
    upload = upload_report(
        proxy,
        ["Content-Type: application/csp-report", "Transfer-Encoding: chunked"],
        chunked(64 * MIB),
    )
    assert upload.sent < 32 * MIB, f"the proxy took {upload.sent} bytes of an unbounded body"
    assert upload.answer == b"", "closed without an answer, not after reading the body"
    proxy.process.wait_for_log(r"refused a violation report .* not announced", since=since)
    assert len(app.requests(REPORT_PATH)) == forwarded
    assert report_file.read_text() == before
    assert proxy.process.returncode is None


def test_an_announced_oversized_report_is_closed_unread(
    proxy: ReverseProxy, app: WebApp, report_file: Path
) -> None:
    before, forwarded = report_file.read_text(), len(app.requests(REPORT_PATH))
    total = 64 * MIB
    upload = upload_report(
        proxy,
        ["Content-Type: application/csp-report", f"Content-Length: {total}"],
        (b"x" * MIB for _ in range(total // MIB)),
    )
    assert upload.sent < 32 * MIB and upload.answer == b"", upload
    assert len(app.requests(REPORT_PATH)) == forwarded
    assert report_file.read_text() == before


@pytest.fixture(scope="module")
def streaming_proxy(module_proxy_launcher: ProxyLauncher, app: WebApp) -> ReverseProxy:
    """A collector whose mitmproxy streams bodies over 1 KiB (stream_large_bodies)."""
    return start_reverse_proxy(
        module_proxy_launcher,
        app.origin,
        [*BASE_OPTIONS, "stream_large_bodies=1k"],
        label="csp stream_large_bodies",
    )


ANNOUNCED_REPORT = b'{"csp-report": "' + b"x" * 4096 + b'"}'


@pytest.mark.parametrize(
    "headers",
    [["Transfer-Encoding: chunked"], [f"Content-Length: {len(ANNOUNCED_REPORT)}"]],
    ids=["chunked", "announced"],
)
def test_a_report_mitmproxy_would_stream_never_reaches_the_app(
    streaming_proxy: ReverseProxy, app: WebApp, headers: list[str]
) -> None:
    # With stream_large_bodies=1k mitmproxy switches a body over 1 KiB to streaming: before the
    # fix, to the app. The report (4 KiB) is refused instead, whatever the framing.
    forwarded = len(app.requests(REPORT_PATH))
    if headers == ["Transfer-Encoding: chunked"]:
        body: Iterator[bytes] = chunked(4 * 1024, 1024)
    else:
        body = iter([ANNOUNCED_REPORT])
    since = streaming_proxy.process.mark()
    upload = upload_report(
        streaming_proxy, ["Content-Type: application/csp-report", *headers], body
    )
    streaming_proxy.process.wait_for_log(r"refused a violation report", since=since)
    assert "Streaming request" not in streaming_proxy.process.output()[since:]
    assert upload.answer == b"", upload.answer[:300]
    assert len(app.requests(REPORT_PATH)) == forwarded, "a report was streamed to the app"


def test_a_small_report_still_gets_through_a_streaming_proxy(
    streaming_proxy: ReverseProxy, app: WebApp, tmp_path: Path
) -> None:
    forwarded = len(app.requests(REPORT_PATH))
    got = post_report(
        streaming_proxy, json.dumps(CSP_REPORT), "application/csp-report", workdir=tmp_path
    )
    assert got.status == 204, got.detail
    assert len(app.requests(REPORT_PATH)) == forwarded


@pytest.mark.parametrize(
    "data",
    [
        '{"csp-report": {"blocked-uri": "x", "line-number": NaN}}',
        '{"csp-report": {"blocked-uri": "x", "line-number": 1e999}}',
        '{"csp-report": {"blocked-uri": "x", "d": ' + "[" * 300 + "]" * 300 + "}}",
    ],
    ids=["nan", "1e999", "300-deep"],
)
def test_reports_jq_cannot_read_are_refused_and_the_file_stays_readable(
    proxy: ReverseProxy, report_file: Path, tmp_path: Path, data: str
) -> None:
    before = report_file.read_text()
    got = post_report(proxy, data, "application/csp-report", workdir=tmp_path)
    assert got.status == 400, got.detail
    assert report_file.read_text() == before
    good = post_report(proxy, json.dumps(CSP_REPORT), "application/csp-report", workdir=tmp_path)
    assert good.status == 204, good.detail
    records = report_file.read_text().count("\n")
    jq = subprocess.run(["jq", "-c", ".", str(report_file)], capture_output=True, check=False)
    assert jq.returncode == 0, jq.stderr
    assert jq.stdout.count(b"\n") == records, "jq must read the file to the end"


def test_the_reports_file_is_created_0600_also_after_rotation(
    proxy_launcher: ProxyLauncher, app: WebApp, tmp_path: Path
) -> None:
    report_file = tmp_path / "reports" / "reports.jsonl"
    report_file.parent.mkdir()
    with usual_umask():  # mitmdump inherits it
        proxy = start_reverse_proxy(
            proxy_launcher,
            app.origin,
            [*BASE_OPTIONS, f"chime_csp_report_file={report_file}"],
            label="csp 0600",
        )
    assert mode(report_file) == 0o600
    report_file.rename(report_file.with_suffix(".1"))  # what logrotate does
    got = post_report(proxy, json.dumps(CSP_REPORT), "application/csp-report", workdir=tmp_path)
    assert got.status == 204, got.detail
    assert mode(report_file) == 0o600
    assert json.loads(report_file.read_text())["blocked-uri"] == SIGNAL


# --- start-up ---------------------------------------------------------------------------------

BAD_OPTIONS: dict[str, tuple[list[str], str]] = {
    "no-hosts": ([], "chime_csp_hosts is required"),
    "host-with-port": (["chime_csp_hosts=app.test:443"], "chime_csp_hosts: 'app.test:443'"),
    "feature": (["chime_csp_features=meetings,chat"], "chime_csp_features: unknown feature"),
    "report-only": (["chime_csp_report_only=maybe"], "chime_csp_report_only must be true"),
    "unsafe-eval": (["chime_csp_allow_unsafe_eval=2"], "chime_csp_allow_unsafe_eval must be"),
    "report-path": (["chime_csp_report_path=reports"], "chime_csp_report_path must be"),
    "report-file": (
        ["chime_csp_report_path=/r", "chime_csp_report_file=/nonexistent-dir/r.jsonl"],
        "chime_csp_report_file: cannot append",
    ),
    "file-without-path": (["chime_csp_report_file=r.jsonl"], "needs chime_csp_report_path"),
    "default-policy": (
        ["chime_csp_default_policy=default-src 'self', img-src *"],
        "chime_csp_default_policy must be a single policy",
    ),
}


def test_bad_option_values_stop_start_up(mitm_confdir: Path, tmp_path: Path) -> None:
    def run(case: str) -> tuple[str, int | None, str]:
        options, _ = BAD_OPTIONS[case]
        if case != "no-hosts" and not any(o.startswith("chime_csp_hosts=") for o in options):
            options = [f"chime_csp_hosts={APP_HOST}", *options]
        rc, output = run_expect_failure(
            confdir=mitm_confdir,
            script=CSP_SCRIPT,
            extra_args=reverse_proxy_args("http://127.0.0.4:9", options),
            cwd=tmp_path,
        )
        return case, rc, output

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(run, BAD_OPTIONS))
    for case, rc, output in results:
        assert rc is not None and rc != 0, f"{case}: mitmdump kept running:\n{output}"
        assert BAD_OPTIONS[case][1] in output, f"{case}:\n{output}"


def test_addon_that_cannot_be_imported_stops_start_up(mitm_confdir: Path, tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    (checkout / "addon").mkdir(parents=True)
    shutil.copy(CSP_SCRIPT, checkout / "addon" / "chime_csp.py")
    package = checkout / "src" / "chime_egress"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "csp").mkdir()
    (package / "csp" / "__init__.py").write_text("")
    (package / "csp" / "addon.py").write_text("import module_that_is_not_installed\n")
    rc, output = run_expect_failure(
        confdir=mitm_confdir,
        script=checkout / "addon" / "chime_csp.py",
        extra_args=reverse_proxy_args("http://127.0.0.4:9", [f"chime_csp_hosts={APP_HOST}"]),
        cwd=tmp_path,
    )
    assert rc is not None and rc != 0, f"mitmdump kept running:\n{output}"
    assert "chime_csp could not load" in output and "module_that_is_not_installed" in output
