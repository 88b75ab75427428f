"""Does a real browser agree with the checker? Headless Chromium behind the CSP addon.

Each case serves a page through the real mitmdump reverse proxy (``-s addon/chime_csp.py``) with
some policy: one the addon generated, one it merged into the app's, or a broken one it left alone
(on ``raw.test``, a host the addon is not configured for). In the page, ``probe.js`` makes the
requests a Chime SDK app makes, one at a time, and records every ``securitypolicyviolation``
event. For every probe, what the browser did (blocked, and with which directive reported) must be
what :func:`chime_egress.csp.request_allowed` says of the policies the page was served with.

Where Chromium departs from CSP3:

* CSP3's #match-schemes lets a ``wss:`` source match ``https:`` URLs; Chromium (and Firefox) match
  only ``http:``->``https:`` and ``ws:``->``wss:``, and so does the checker (it must never call
  allowed what a browser blocks). The cases below include policies where this decides.
* A bare ``*`` also matches ``ws:``/``wss:`` in Chromium (not by the spec): avoided, no case
  relies on ``*``.
* A cross-origin ``new Worker(url)`` is refused by the same-origin rule before CSP is consulted,
  so the ``worker-src https://*.sdkassets.chime.aws`` need (video-fx) cannot be probed from a
  page and is not.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver

from chime_egress.csp import FEATURES, request_allowed
from tests.browser.conftest import PAGE_HOSTS, console_log, run_probes
from tests.support.proxy import ProxyLauncher
from tests.support.tls import client_context
from tests.support.webapp import ReverseProxy, WebApp, start_reverse_proxy

APP_HOST, RAW_HOST = PAGE_HOSTS
REPORT_PATH = "/chime-csp-reports"
BLOB_ID = "5c0ffee0-0000-4000-8000-000000000000"  # any: blob: sources never look at the id

SEED = "connect-src '*.chime.aws'"
SDK_GUIDE = (
    "content=\"connect-src 'self' https://*.chime.aws wss://*.chime.aws https://*.amazonaws.com "
    "https://*.sdkassets.chime.aws; script-src 'self' https://*.sdkassets.chime.aws; "
    "script-src-elem 'self' https://*.sdkassets.chime.aws 'wasm-unsafe-eval'; "
    "worker-src 'blob:'; child-src 'blob:'"
)


@dataclass(frozen=True)
class Probe:
    name: str
    method: str
    """The attempt in probe.js."""
    kind: str
    """The checker's request kind."""
    url: str
    """As the page requests it; ``{origin}`` is the page's origin."""
    directive: str
    """The effective directive of a violation, as the browser reports it."""
    reported: str | None = None
    """The blockedURI when the browser reports another URL than the one requested (the URL
    Standard's parsing resolves dot segments first)."""

    def target(self, origin: str) -> str:
        return self.url.replace("{origin}", origin)

    def blocked_uri(self, origin: str) -> str:
        """The blockedURI a violation of this probe carries."""
        if self.kind == "wasm":
            return "wasm-eval"
        if self.url.startswith("blob:"):
            return "blob"
        return self.reported or self.target(origin)


PROBES = (
    Probe(
        "signal-websocket",
        "websocket",
        "connect",
        "wss://signal.m3.ue1.app.chime.aws/control/0b6f2a4e",
        "connect-src",
    ),
    Probe(
        "ingest-fetch",
        "fetch",
        "connect",
        "https://data.svc.ue1.ingest.chime.aws/v1/client-events",
        "connect-src",
    ),
    Probe(
        "messaging-websocket",
        "websocket",
        "connect",
        "wss://0a1b2c3d.us-east-1.ws-messaging.chime.aws/connect",
        "connect-src",
    ),
    Probe(
        "cognito-fetch",
        "fetch",
        "connect",
        "https://cognito-idp.us-east-1.amazonaws.com/",
        "connect-src",
    ),
    Probe(
        "sdkassets-fetch",
        "fetch",
        "connect",
        "https://static.sdkassets.chime.aws/wasm/decoder.wasm",
        "connect-src",
    ),
    Probe(
        "sdkassets-script",
        "script",
        "script",
        "https://static.sdkassets.chime.aws/workers/worker-v1.js",
        "script-src-elem",
    ),
    Probe("blob-worker", "blobWorker", "worker", f"blob:{{origin}}/{BLOB_ID}", "worker-src"),
    Probe("blob-script", "blobScript", "script", f"blob:{{origin}}/{BLOB_ID}", "script-src-elem"),
    Probe("blob-image", "blobImage", "image", f"blob:{{origin}}/{BLOB_ID}", "img-src"),
    Probe("wasm", "wasm", "wasm", "", "script-src"),
    Probe("self-fetch", "fetch", "connect", "{origin}/images/background.jpg", "connect-src"),
    Probe("apex-fetch", "fetch", "connect", "https://chime.aws/apex", "connect-src"),
    Probe("elsewhere-fetch", "fetch", "connect", "https://api.elsewhere.example/x", "connect-src"),
    # Dot segments, plain and percent-encoded, are resolved before the path is matched.
    Probe(
        "dot-segment-fetch",
        "fetch",
        "connect",
        "https://data.svc.ue1.ingest.chime.aws/v1/../secret",
        "connect-src",
        reported="https://data.svc.ue1.ingest.chime.aws/secret",
    ),
    Probe(
        "encoded-dot-fetch",
        "fetch",
        "connect",
        "https://data.svc.ue1.ingest.chime.aws/v1/%2e%2e/secret",
        "connect-src",
        reported="https://data.svc.ue1.ingest.chime.aws/secret",
    ),
)


@dataclass(frozen=True)
class Case:
    name: str
    features: tuple[str, ...]
    app_policies: tuple[str, ...] = ()
    host: str = APP_HOST
    report_only: bool = False
    reports: str | None = None
    """The report format the collector must receive for this page's violations, if checked."""


MEETINGS = ("meetings",)
CASES = (
    # Generated: the app sends no policy; the addon sets the one generated for its features.
    Case("generated-meetings", MEETINGS, reports="reports+json"),
    Case("generated-messaging", ("messaging",)),
    Case("generated-voice-focus", ("voice-focus",)),
    Case("generated-video-fx", ("video-fx",)),
    Case("generated-background-image", ("background-image",)),
    Case("generated-all", FEATURES),
    # Merged: the addon adds the features' needs to the app's policies.
    Case("merged-default-self", MEETINGS, ("default-src 'self'",)),
    Case(
        "merged-two-policies",
        MEETINGS,
        ("default-src 'self'", "connect-src 'self' https://*.chime.aws; img-src 'none'"),
    ),
    Case("merged-seed", MEETINGS, (SEED,)),
    Case("merged-sdk-guide", FEATURES, (SDK_GUIDE,)),
    Case(
        "merged-app-report-uri",
        MEETINGS,
        (f"default-src 'self'; report-uri {REPORT_PATH}",),
        reports="csp-report",
    ),
    # Broken, as published: on a host the addon leaves alone.
    Case("broken-seed", MEETINGS, (SEED,), host=RAW_HOST),
    Case("broken-sdk-guide", MEETINGS, (SDK_GUIDE,), host=RAW_HOST),
    Case("broken-quoted-blob", MEETINGS, ("worker-src 'blob:'",), host=RAW_HOST),
    Case("broken-colon", MEETINGS, ("connect-src: *.chime.aws",), host=RAW_HOST),
    Case(
        "broken-colon-with-default",
        MEETINGS,
        ("default-src 'self'; connect-src: *.chime.aws",),
        host=RAW_HOST,
    ),
    Case("broken-schemeless-host", MEETINGS, ("connect-src 'self' *.chime.aws",), host=RAW_HOST),
    # A path in a source: the dot-segment probes leave it, the ingest probe stays under it.
    Case(
        "path-restricted",
        MEETINGS,
        ("connect-src 'self' https://*.chime.aws/v1/ wss://*.chime.aws",),
        host=RAW_HOST,
    ),
    # Report-only: nothing the addon writes blocks; its policy reports.
    Case("report-only-default", MEETINGS, report_only=True, reports="reports+json"),
    Case("report-only-beside-app-policy", MEETINGS, ("default-src 'self'",), report_only=True),
)


# --- fixtures -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proxy:
    reverse: ReverseProxy
    report_file: Path


@pytest.fixture(scope="module")
def proxy_for(
    module_proxy_launcher: ProxyLauncher,
    page_app: WebApp,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[tuple[str, ...], bool], Proxy]]:
    """One reverse proxy per (features, report-only) setting, started on first use."""
    proxies: dict[tuple[tuple[str, ...], bool], Proxy] = {}

    def get(features: tuple[str, ...], report_only: bool) -> Proxy:
        key = (features, report_only)
        if key not in proxies:
            report_file = tmp_path_factory.mktemp("reports") / "reports.jsonl"
            reverse = start_reverse_proxy(
                module_proxy_launcher,
                page_app.origin,
                [
                    f"chime_csp_hosts={APP_HOST}",
                    f"chime_csp_features={','.join(features)}",
                    f"chime_csp_report_only={str(report_only).lower()}",
                    f"chime_csp_report_path={REPORT_PATH}",
                    f"chime_csp_report_file={report_file}",
                ],
                label=f"csp {','.join(features)}{' report-only' if report_only else ''}",
            )
            proxies[key] = Proxy(reverse, report_file)
        return proxies[key]

    yield get


def served_policies(proxy: ReverseProxy, host: str, path: str) -> tuple[list[str], list[str]]:
    """The enforced and report-only policy headers the proxy serves ``path`` with, to ``host``."""
    context = client_context(proxy.process.ca_cert)
    with (
        socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        request = f"GET {path} HTTP/1.1\r\nHost: {host}:{proxy.port}\r\nConnection: close\r\n\r\n"
        tls.sendall(request.encode())
        response = http.client.HTTPResponse(tls)
        response.begin()
        enforced = response.headers.get_all("Content-Security-Policy") or []
        report_only = response.headers.get_all("Content-Security-Policy-Report-Only") or []
        response.read()
    return enforced, report_only


def _matches(probe: Probe, origin: str, event: dict[str, Any]) -> bool:
    return bool(
        event.get("effectiveDirective") == probe.directive
        and event.get("blockedURI") == probe.blocked_uri(origin)
    )


def wait_for_reports(
    report_file: Path, wanted: set[tuple[str, str]], document: str, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """The collector's records for ``document`` once all ``wanted`` (blocked-uri, directive)
    pairs are in (or the timeout passes: the caller's assertion then shows what is missing)."""
    deadline = time.monotonic() + timeout
    while True:
        records = [
            record
            for line in report_file.read_text().splitlines()
            if (record := json.loads(line))["document-uri"] == document
        ]
        got = {(r["blocked-uri"], r["effective-directive"]) for r in records}
        if wanted <= got or time.monotonic() >= deadline:
            return records
        time.sleep(0.1)


# --- the comparison ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_browser_agrees_with_the_checker(
    case: Case,
    browser: webdriver.Chrome,
    proxy_for: Callable[[tuple[str, ...], bool], Proxy],
    page_app: WebApp,
) -> None:
    proxy = proxy_for(case.features, case.report_only)
    path = page_app.route(
        f"/case/{case.name}",
        '<!doctype html><html><head><meta charset="utf-8"><script src="/probe.js"></script>'
        f"</head><body>{case.name}</body></html>",
        headers=[("Content-Security-Policy", value) for value in case.app_policies]
        + [("Cache-Control", "no-store")],
    )
    origin = f"https://{case.host}:{proxy.reverse.port}"
    enforced, report_only = served_policies(proxy.reverse, case.host, path)
    if case.host == RAW_HOST:
        assert enforced == list(case.app_policies), "the addon changed a host it does not serve"

    probes = [{"name": p.name, "method": p.method, "url": p.target(origin)} for p in PROBES]
    outcome = run_probes(browser, origin + path, probes)
    assert "error" not in outcome, (
        f"the page could not run its probes: {outcome}\nconsole: {console_log(browser)}"
    )
    results: dict[str, dict[str, Any]] = outcome["results"]
    events: list[dict[str, Any]] = outcome["violations"]

    rows = []
    differences = []
    for probe in PROBES:
        url = probe.target(origin)
        matching = [e for e in events if _matches(probe, origin, e)]
        browser_blocked = not results[probe.name]["ok"]
        browser_enforced = any(e["disposition"] == "enforce" for e in matching)
        browser_reported = any(e["disposition"] == "report" for e in matching)
        checker_allows, directive = request_allowed(enforced, probe.kind, url, origin)
        checker_reports = (
            bool(report_only) and not request_allowed(report_only, probe.kind, url, origin)[0]
        )
        if (browser_blocked, browser_reported) != (not checker_allows, checker_reports):
            differences.append(probe.name)
        rows.append(
            f"{probe.name:20} browser: {'BLOCKED' if browser_blocked else 'allowed':7} "
            f"{'reported' if browser_reported else '':8} | checker: "
            f"{'allowed' if checker_allows else f'BLOCKED ({directive})':32} "
            f"{'reports' if checker_reports else '':7} | {results[probe.name]['detail']}"
        )
        # A blocked probe without a violation event failed for some other reason (a server of
        # the harness, say): that would make the comparison meaningless.
        assert browser_blocked == browser_enforced, (
            f"{probe.name}: outcome {results[probe.name]} but violations {matching}\n"
            f"all events: {events}"
        )
    table = "\n".join(rows)
    context = f"enforced: {enforced}\nreport-only: {report_only}\n{table}"
    print(f"{case.name}\n{context}")  # shown with pytest -rP
    assert not differences, f"browser and checker disagree on {differences}\n{context}"

    if case.reports is not None:
        blocked = {
            (p.blocked_uri(origin), p.directive)
            for p in PROBES
            if any(_matches(p, origin, e) for e in events)
        }
        assert blocked, f"this case must produce violations to check the collector\n{context}"
        records = wait_for_reports(proxy.report_file, blocked, origin + path)
        got = {(r["blocked-uri"], r["effective-directive"]) for r in records}
        assert blocked <= got, (
            f"violations missing from the collector: {sorted(blocked - got)}\n"
            f"records: {records}\n{context}"
        )
        assert {r["format"] for r in records} == {case.reports}, records
        disposition = "report" if case.report_only else "enforce"
        assert {r["disposition"] for r in records} == {disposition}, records
        proxy.reverse.process.wait_for_log(
            r"Security Policy Violation: blocked-uri=\S+ violated-directive=\S+ "
            + f"document={origin}{path}"
        )
    assert page_app.requests(REPORT_PATH) == [], "a violation report went through to the app"
