"""mitmproxy glue for a reverse proxy in front of a Chime SDK web app: CSP headers and reports.

For the configured hosts the addon adds what the configured Chime SDK features need to every
enforced ``Content-Security-Policy`` header of an HTML response, each header on its own (joining two
policies into one would loosen both), or sets a default policy when the app sends none. With
``chime_csp_report_only`` it writes the policies to ``Content-Security-Policy-Report-Only``
instead and leaves the app's own enforced policies exactly as they are: report-only must never
weaken what the app already enforces. Violation reports sent to a same-origin path are answered
by the proxy itself, logged and appended to a JSON lines file; they never reach the app.

The addon edits headers only. A policy in a ``<meta http-equiv="Content-Security-Policy">``
element of the page still applies on top (every policy must allow a request), so such a page is
logged with a warning (:mod:`chime_egress.csp.meta` reads the page as a browser does).

Violation reports come from anyone who can load a page. A report request must announce its size
(Content-Length), at most the limit, before the proxy reads any of its body; any other report
request is closed unread, whatever mitmproxy's streaming and size options say, so that neither
memory nor the app ever sees a large one. The reports file is created 0600.

Policy logic (parsing, merging, matching) lives in :mod:`chime_egress.csp`, the options and the
header plan in :mod:`chime_egress.csp.settings`, report parsing in :mod:`chime_egress.csp.reports`
(all pure, called by the unit tests directly); this module is the small addon class, in the style
of mitmproxy's bundled ``modifyheaders``/``blocklist``.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections import OrderedDict
from collections.abc import Mapping

from mitmproxy import ctx, exceptions, http
from mitmproxy.addonmanager import Loader
from mitmproxy.utils import human

from ..private_files import open_private_append, others_may_read
from ..untrusted import printable
from .meta import MAX_HEAD_CHARS, declares_meta_policy
from .mimetype import extract_mime_type
from .reports import (
    MAX_REPORT_BYTES,
    REPORT_CONTENT_TYPES,
    ReportError,
    announced_length,
    media_type,
    parse_reports,
)
from .settings import (
    CSP,
    CSP_REPORT_ONLY,
    DEFAULT_FEATURES,
    DEFAULT_REPORT_PATH,
    REPORT_GROUP,
    REPORTING_ENDPOINTS,
    CspSettings,
    build_settings,
    is_document,
    plan_headers,
)

logger = logging.getLogger(__name__)

# Pages scanned for a <meta> policy, remembered by host and path, the least recently seen
# forgotten first: a crawl of many paths cannot stop the app's own pages being checked.
_META_CHECKED_LIMIT = 1000

# Flow metadata keys: a report request the addon answers itself, and a response already handled.
_REPORT_FLOW = "chime_csp_report"
_APPLIED = "chime_csp_applied"


# --- the addon --------------------------------------------------------------------------------

OPTION_NAMES = (
    "chime_csp_hosts",
    "chime_csp_features",
    "chime_csp_default_policy",
    "chime_csp_report_only",
    "chime_csp_allow_unsafe_eval",
    "chime_csp_report_path",
    "chime_csp_report_file",
)


class ChimeCsp:
    # The name mitmproxy knows the addon by; the entry script keeps it registered (resident).
    name = "chime_csp"

    def __init__(self) -> None:
        self.settings: CspSettings | None = None
        # Pages already scanned for a <meta> policy: each is decoded and scanned once, not on
        # every response (the scan needs the whole body decoded).
        self._meta_checked: OrderedDict[str, None] = OrderedDict()

    def load(self, loader: Loader) -> None:
        # Every option is a str: a value mitmproxy cannot parse would silently unload the whole
        # script (mitmproxy issue 8013), leaving a proxy that changes no policy.
        loader.add_option(
            "chime_csp_hosts",
            str,
            "",
            "Required. Comma-separated host names whose HTML responses get the Chime CSP and whose "
            "report path is collected: the name the browser uses (TLS SNI), the Host header as "
            "mitmproxy passes it on, or the upstream's host; '*.example.com' or '*' for all.",
        )
        loader.add_option(
            "chime_csp_features",
            str,
            DEFAULT_FEATURES,
            "Comma-separated Chime SDK features whose needs are added to the policies: "
            "meetings, messaging, voice-focus, video-fx, background-image.",
        )
        loader.add_option(
            "chime_csp_default_policy",
            str,
            "",
            "Policy set when the app sends no Content-Security-Policy (the features' needs are "
            "added to it). Empty: a policy generated from the features alone.",
        )
        loader.add_option(
            "chime_csp_report_only",
            str,
            "false",
            "true: write the addon's policies as Content-Security-Policy-Report-Only (the app's "
            "own enforced policies are left untouched); false: enforce them.",
        )
        loader.add_option(
            "chime_csp_allow_unsafe_eval",
            str,
            "false",
            "true: 'unsafe-eval' instead of 'wasm-unsafe-eval' where a feature needs "
            "WebAssembly (some Voice Focus modes, old browsers); it also allows eval().",
        )
        loader.add_option(
            "chime_csp_report_path",
            str,
            DEFAULT_REPORT_PATH,
            "Same-origin path (e.g. /chime-csp-reports) where the proxy collects violation "
            "reports; the policies it writes get report-uri and report-to for it. Empty: none.",
        )
        loader.add_option(
            "chime_csp_report_file",
            str,
            "",
            "File to append each collected violation to, as one JSON object per line.",
        )

    def configure(self, updated: set[str]) -> None:
        if self.settings is not None and not updated & set(OPTION_NAMES):
            return
        try:
            settings = build_settings({name: getattr(ctx.options, name) for name in OPTION_NAMES})
        except ValueError as error:
            raise exceptions.OptionsError(str(error)) from None
        self.settings = settings
        logger.info(
            f"chime-csp: {'report-only' if settings.report_only else 'enforcing'} for "
            f"{settings.hosts.describe()}; "
            f"features {','.join(settings.features)}; "
            f"reports {settings.report_path or 'not collected'}"
            f"{f' -> {settings.report_file}' if settings.report_file else ''}"
        )
        if settings.report_only and settings.report_path is None:
            logger.warning(
                "chime-csp: report-only without chime_csp_report_path: violations show only "
                "in the browsers' consoles"
            )
        if settings.report_file is not None and (exposed := others_may_read(settings.report_file)):
            logger.warning(f"chime-csp: chime_csp_report_file: {exposed}")
        streamed = _size_option("stream_large_bodies")
        if (
            settings.report_path is not None
            and streamed is not None
            and streamed < MAX_REPORT_BYTES
        ):
            logger.warning(
                f"chime-csp: stream_large_bodies={streamed}: reports larger than {streamed} bytes "
                "are refused (mitmproxy would stream them to the app)"
            )

    # Report collection

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        settings = self.settings
        if settings is None or settings.report_path is None:
            return
        if flow.request.path.split("?", 1)[0] != settings.report_path:
            return
        if not settings.hosts.matches(_host_names(flow)):
            return
        # From here on the request is the collector's: it is answered here, never forwarded.
        flow.metadata[_REPORT_FLOW] = True
        flow.request.stream = False  # the body is needed whole; a streamed one would go upstream
        if not self._body_is_bounded(flow):
            return
        if flow.request.method != "POST":
            _answer(flow, 405, "reports are POSTed", {"Allow": "POST"})
            return
        kind = media_type(flow.request.headers.get("content-type"))
        if kind not in REPORT_CONTENT_TYPES:
            _answer(flow, 415, f"unsupported content type {kind or '(none)'}")
            return
        encoding = flow.request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            # Browsers never compress reports; decoding one could expand a small body into
            # gigabytes before any size check.
            _answer(flow, 415, f"compressed reports ({encoding}) are not accepted")

    def _body_is_bounded(self, flow: http.HTTPFlow) -> bool:
        """Whether the body mitmproxy is about to read is announced and within the limit; if not,
        the request is closed now, before a byte of its body is read.

        Only here can a body still be refused unread: once this hook returns, mitmproxy reads the
        whole body into memory before the next one, and when it passes stream_large_bodies it
        starts sending it upstream. So the limit is the smaller of the two, and a body of unknown
        size (chunked, or HTTP/2 without content-length) is not taken at all.
        """
        request = flow.request
        length = announced_length(
            request.headers.get_all("content-length"),
            request.headers.get("transfer-encoding"),
            http1=request.http_version.startswith("HTTP/1"),
        )
        streamed = _size_option("stream_large_bodies")
        limit = MAX_REPORT_BYTES if streamed is None else min(MAX_REPORT_BYTES, streamed)
        if length is not None and length <= limit:
            return True
        why = (
            "its size is not announced (no Content-Length)"
            if length is None
            else f"its {length} bytes are over the limit of {limit}"
        )
        logger.warning(
            f"chime-csp: refused a violation report from {_peer(flow)}: {why}; "
            "closed without reading it"
        )
        _drop(flow)
        return False

    def request(self, flow: http.HTTPFlow) -> None:
        if not flow.metadata.get(_REPORT_FLOW) or flow.response is not None:
            return
        settings = self.settings
        try:
            assert settings is not None
            self._collect(flow, settings)
        except Exception:
            # Whatever went wrong, the report request must not reach the app.
            logger.exception("chime-csp: cannot handle a violation report")
            _answer(flow, 500, "the report could not be handled")

    def _collect(self, flow: http.HTTPFlow, settings: CspSettings) -> None:
        client = _peer(flow)
        try:
            violations = parse_reports(
                flow.request.headers.get("content-type"),
                flow.request.get_content(strict=False) or b"",
                flow.request.headers.get("user-agent", ""),
            )
        except ReportError as error:
            logger.warning(
                f"chime-csp: refused a violation report from {client}: {printable(error.reason)}"
            )
            _answer(flow, error.status, error.reason)
            return
        for violation in violations:
            logger.warning(f"{violation.log_line()} client={client}")
        if settings.report_file is not None and violations:
            received = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
            host = next((name for name in _host_names(flow) if name), "")
            lines = "".join(
                json.dumps(v.record(received=received, client=client, host=host)) + "\n"
                for v in violations
            )
            try:
                # Opened per request: cheap at report rates, and log rotation needs no signal.
                with open_private_append(settings.report_file) as file:
                    file.write(lines)
                    file.flush()
            except OSError as error:
                logger.error(f"chime-csp: cannot write to {settings.report_file}: {error}")
                _answer(flow, 503, "the report could not be stored")
                return
        _answer(flow, 204, "")

    # Policies

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        # Headers are edited before they leave, which also covers streamed responses.
        self._apply(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        # Responses another addon made never pass responseheaders.
        self._apply(flow)
        self._warn_meta_policy(flow)

    def _apply(self, flow: http.HTTPFlow) -> None:
        settings = self.settings
        response = flow.response
        if (
            settings is None
            or response is None
            or flow.metadata.get(_APPLIED)
            or flow.metadata.get(_REPORT_FLOW)
            or not is_document(response.headers.get_all("content-type"))
            or not settings.hosts.matches(_host_names(flow))
        ):
            return
        flow.metadata[_APPLIED] = True
        try:
            headers = response.headers
            # HTTP/2 and 3 allow only lowercase names; mitmproxy would fix and warn each time.
            lower = response.is_http2 or response.is_http3
            enforced, report_only, endpoints = (
                name.lower() if lower else name
                for name in (CSP, CSP_REPORT_ONLY, REPORTING_ENDPOINTS)
            )
            plan = plan_headers(headers.get_all(CSP), headers.get_all(CSP_REPORT_ONLY), settings)
            headers.set_all(enforced, list(plan.enforced))
            headers.set_all(report_only, list(plan.report_only))
            if plan.add_reporting_endpoint and settings.report_path is not None:
                endpoint = f'{REPORT_GROUP}="{settings.report_path}"'
                headers.set_all(endpoints, [*headers.get_all(endpoints), endpoint])
        except Exception:
            # Fail closed: a page must not leave without the policy the operator configured.
            logger.exception(
                f"chime-csp: cannot set the policy of {printable(flow.request.pretty_url)}"
            )
            flow.kill()
            return
        for value, error in plan.kept_unmerged:
            logger.error(
                f"chime-csp: left the app's policy of {printable(flow.request.pretty_url)} "
                f"unmerged (cannot merge {value!r}: {error})"
            )

    def _warn_meta_policy(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None or not flow.metadata.get(_APPLIED) or response.raw_content is None:
            return
        key = f"{flow.request.pretty_host}{flow.request.path.split('?', 1)[0]}"
        if key in self._meta_checked:
            self._meta_checked.move_to_end(key)
            return
        self._meta_checked[key] = None
        if len(self._meta_checked) > _META_CHECKED_LIMIT:
            self._meta_checked.popitem(last=False)
        mime = extract_mime_type(response.headers.get_all("content-type"))
        body = response.get_content(strict=False) or b""
        declared = declares_meta_policy(body, mime.charset if mime else None)
        if declared:
            logger.warning(
                f"chime-csp: {printable(flow.request.pretty_url)} declares a policy in a <meta> "
                "element; the addon edits headers only, and that policy still applies on top"
            )
        elif declared is None:
            logger.warning(
                f"chime-csp: {printable(flow.request.pretty_url)}: its head is longer than "
                f"{MAX_HEAD_CHARS} characters; not checked for a <meta> policy beyond them"
            )


def _answer(
    flow: http.HTTPFlow, status: int, reason: str, headers: Mapping[str, str] | None = None
) -> None:
    body = b"" if status == 204 else f"chime-csp: {reason}\n".encode()
    fields = {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"}
    fields.update(headers or {})
    if status == 204:
        fields.pop("Content-Type")
    flow.response = http.Response.make(status, body, fields)


def _host_names(flow: http.HTTPFlow) -> tuple[str | None, ...]:
    """Every name the request may be known by here. In reverse mode mitmproxy has rewritten the
    Host header to the upstream's before any addon runs (unless keep_host_header is set), so the
    browser's name survives only as the TLS server name it sent."""
    request = flow.request
    host_header = request.host_header or ""
    if host_header.startswith("["):
        host_header = host_header.split("]", 1)[0] + "]"
    elif host_header.count(":") == 1:
        host_header = host_header.split(":", 1)[0]
    return (flow.client_conn.sni, host_header, request.host)


def _size_option(name: str) -> int | None:
    """mitmproxy's size option `name` in bytes (its own parser; it validated the value)."""
    try:
        return human.parse_size(getattr(ctx.options, name, None))
    except ValueError:
        return None


def _peer(flow: http.HTTPFlow) -> str:
    peer = flow.client_conn.peername
    return str(peer[0]) if peer else "?"


def _drop(flow: http.HTTPFlow) -> None:
    """Kill the request and close its client connection, unread.

    mitmproxy 12 leaves a killed request's connection open while the client is still sending
    (mitmproxy issue 8045, as for its own body_size_limit): every refused report would hold a
    socket until the client gives up. Closing it through the proxy server's own handler ends
    it at once, as mitmproxy 11 does.
    """
    flow.kill()
    server = ctx.master.addons.get("proxyserver")
    handler = getattr(server, "connections", {}).get(flow.client_conn.id)
    if handler is not None:
        handler.close_connection(handler.client)
