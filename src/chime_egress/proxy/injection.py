"""Injecting into a request: every Chime-bound request leaves with exactly the configured headers.

Client copies of both headers are removed (every copy, any letter case) and the policy's values
added, with lowercase names on HTTP/2. A request whose destination or policy cannot be decided is
answered 502 here and never leaves. A request that a server behind the proxy could read as other
headers than the proxy did (`chime_egress.policy.fields`: a bare CR, an obs-fold line, a
Connection option naming a Chime header, a trailer named like one...) is answered 400 and never
leaves either. Chime's 403 answers to injected requests are reported with what was sent and the
documented rules that could have refused it.
"""

from __future__ import annotations

import logging
from weakref import WeakKeyDictionary

from mitmproxy import ctx, http

from ..policy.client_policy import ClientPolicy
from ..policy.diagnostics import refusal_hint
from ..policy.fields import request_problem, trailer_problem
from ..policy.headers import APP_KEYS_HEADER, CHIME_HEADER_NAMES, TENANTS_HEADER
from ..untrusted import printable
from .jsonlog import fields
from .metrics import Metrics
from .peers import client_address, client_peer
from .routing import Router, Verdict

logger = logging.getLogger("chime_egress")

# flow.metadata key: the network whose headers a request left with (shown in saved flows).
INJECTED_NETWORK = "chime_egress.network"
_BODY_EXCERPT = 200


class Injector:
    def __init__(self, router: Router, metrics: Metrics) -> None:
        self.router = router
        self.metrics = metrics
        # The policy whose headers each injected request carries, for the 403 diagnostics.
        self._injected: WeakKeyDictionary[http.HTTPFlow, ClientPolicy] = WeakKeyDictionary()
        # Each injected request's header fields as checked and sent (mitmproxy replaces the
        # tuple on any change): the request hook re-checks only what another addon touched.
        self._checked: WeakKeyDictionary[http.HTTPFlow, object] = WeakKeyDictionary()

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        try:
            verdict = self.router.verdict_for(flow.server_conn)
            judged_now = verdict is None
            if verdict is None:
                # Not decided at the connection level: absolute-form HTTP through the proxy
                # (judged per request), or a connection whose routing could not judge it.
                if flow.server_conn.address is None:
                    verdict = await self.router.judge_request(flow)
                else:
                    verdict = await self.router.judge(flow.server_conn)
            if verdict.is_chime:
                # Only asked for Chime: an unknowable identity (it raises) must not stop the rest.
                client_policy = self.router.client_policy(flow.client_conn, flow)
                if judged_now:
                    self._log_request_decision(flow, verdict, client_policy)
                if client_policy.observing:
                    # Reaches here only for plain HTTP (or a reload after the connection was
                    # decided): what observe mode promises is to add nothing.
                    self.metrics.child(self.metrics.requests_observed, client_policy.name).inc()
                else:
                    self._inject(flow, client_policy)
        except Exception:
            self._refuse(flow, "cannot decide or add the Chime headers")

    def _reject(self, flow: http.HTTPFlow, why: str, outcome: str = "") -> None:
        """Answer 400 a request a server could read otherwise than the proxy did (or say so)."""
        self.metrics.requests_rejected.inc()
        client, host = client_peer(flow.client_conn), printable(flow.request.pretty_host)
        logger.warning(
            f"chime: rejecting request from {client} to {host}: {why}; "
            + (outcome or "answered 400, never forwarded"),
            extra=fields("request_rejected", client=client, host=host, reason=why),
        )
        if outcome:
            return
        request = flow.request
        if request.stream or ctx.options.stream_large_bodies:
            # mitmproxy streams large bodies upstream as they come (stream_large_bodies), and a
            # request it may stream cannot be answered here: end it instead, before it leaves.
            flow.kill()
            return
        headers = {"Content-Type": "text/plain"}
        if not _is_h2(flow):
            headers["Connection"] = "close"  # nothing pipelined after it is read either
        flow.response = http.Response.make(
            400, f"chime-egress: request refused: {why}\n".encode(), headers
        )

    def _refuse(self, flow: http.HTTPFlow, why: str) -> None:
        """Answer the request with 502 here, so it never leaves; called while handling an error."""
        self.metrics.requests_refused.inc()
        logger.exception(
            f"chime: refusing request to {printable(flow.request.pretty_host)}: {why}",
            extra=fields(
                "request_refused",
                client=client_peer(flow.client_conn),
                host=flow.request.pretty_host,
                path=flow.request.path,
            ),
        )
        flow.response = http.Response.make(
            502,
            b"chime-egress: the proxy could not apply its Chime policy to this request\n",
            {"Content-Type": "text/plain"},
        )

    def _log_request_decision(
        self, flow: http.HTTPFlow, verdict: Verdict, client_policy: ClientPolicy
    ) -> None:
        client = client_peer(flow.client_conn)
        doing = "observing" if client_policy.observing else "intercepting"
        logger.info(
            f"chime: {doing} {client} -> {printable(flow.request.pretty_host)} "
            f"[{verdict.address}] matched {verdict.prefix} ({client_policy.label()})",
            extra=fields(
                "request_observed" if client_policy.observing else "connection_intercepted",
                client=client,
                network=client_policy.name,
                mode=client_policy.mode,
                host=flow.request.pretty_host,
                destination=verdict.address,
                prefix=str(verdict.prefix),
                **self.router.identities.log_fields(flow.client_conn, flow),
            ),
        )

    def _inject(self, flow: http.HTTPFlow, client_policy: ClientPolicy) -> None:
        data = flow.request.data
        problem = request_problem(data.method, data.path, data.authority, data.headers.fields)
        if problem is not None:
            self._reject(flow, problem)
            return
        stripped = _replace_chime_headers(flow.request.headers, _header_lines(flow, client_policy))
        if stripped:
            stripped_counter = self.metrics.client_headers_stripped
            self.metrics.child(stripped_counter, client_policy.name).inc(stripped)
        # Saved flows (-w) must stay serializable: only text in metadata, the policy beside it.
        flow.metadata[INJECTED_NETWORK] = client_policy.name
        self._injected[flow] = client_policy
        self._checked[flow] = flow.request.data.headers.fields
        self.metrics.child(self.metrics.requests_injected, client_policy.name).inc()

    def request(self, flow: http.HTTPFlow) -> None:
        """The last word before the request leaves: exactly our headers, nothing to misread.

        The addon is the last in mitmproxy's chain (`resident.py`, `launcher.py`), so this runs
        after every other addon's request hook, modify_headers and other scripts included:
        fields another addon changed are checked again, and our headers put back. Trailers
        arrive after the headers were judged: any a server could misread are held back.
        """
        client_policy = self._injected.get(flow)
        if client_policy is None:
            return
        try:
            request = flow.request
            if request.trailers and (problem := trailer_problem(request.trailers.fields)):
                if request.stream:
                    # The headers and the body have left already; only the trailers can stay.
                    request.trailers = None
                    self._reject(flow, problem, "its trailers were dropped")
                else:
                    self._reject(flow, problem)
                return
            if request.data.headers.fields is self._checked.get(flow):
                return  # untouched since it was checked and given our headers (the usual case)
            self._check_again(flow, client_policy)
        except Exception:
            self._refuse(flow, "cannot check the Chime headers before sending")

    def _check_again(self, flow: http.HTTPFlow, client_policy: ClientPolicy) -> None:
        data = flow.request.data
        problem = request_problem(data.method, data.path, data.authority, data.headers.fields)
        if problem is not None:
            self._reject(flow, f"after another addon changed it: {problem}")
            return
        headers = flow.request.headers
        lines = _header_lines(flow, client_policy)
        wanted = {name.lower(): [value] for name, value in lines}
        if any(
            headers.get_all(name) != wanted.get(name.lower(), []) for name in CHIME_HEADER_NAMES
        ):
            logger.warning(
                f"chime: another addon changed the Chime headers of a request to "
                f"{printable(flow.request.pretty_host)}; restoring the configured ones",
                extra=fields("headers_restored", host=flow.request.pretty_host),
            )
            _replace_chime_headers(headers, lines)
        self._checked[flow] = flow.request.data.headers.fields

    def response(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None and flow.response.status_code == 403:
            injected = self._injected.get(flow)
            if injected is not None:
                self._report_refusal(flow, injected)

    def _report_refusal(self, flow: http.HTTPFlow, client_policy: ClientPolicy) -> None:
        """Chime refused a request that carried our headers: say who, where, with what, and why."""
        assert flow.response is not None
        host = flow.request.pretty_host
        sent = client_policy.headers
        app_keys, tenants = (sent.app_keys, sent.tenants) if sent else (None, None)
        config = str(self.router.current.policy.allowlist.path)
        hint = refusal_hint(client_policy, client_address(flow.client_conn), config)
        body = (flow.response.get_content(strict=False) or b"")[:_BODY_EXCERPT]
        excerpt = body.decode("utf-8", "replace").strip()
        self.metrics.count_403(client_policy.name, host)
        logger.warning(
            f"chime: Chime answered 403 to {client_peer(flow.client_conn)} for "
            f"{printable(host + flow.request.path)} ({client_policy.label()}); sent "
            f"{APP_KEYS_HEADER}: {app_keys}, {TENANTS_HEADER}: {tenants or '(not sent)'}; "
            f"likely: {hint}" + (f"; response: {excerpt!r}" if excerpt else ""),
            extra=fields(
                "chime_403",
                client=client_peer(flow.client_conn),
                host=host,
                path=flow.request.path,
                network=client_policy.name,
                mode=client_policy.mode,
                app_keys=app_keys,
                tenants=tenants,
                hint=hint,
                response=excerpt or None,
                **self.router.identities.log_fields(flow.client_conn, flow),
            ),
        )


def _is_h2(flow: http.HTTPFlow) -> bool:
    return flow.request.is_http2 or flow.request.is_http3


def _replace_chime_headers(headers: http.Headers, lines: tuple[tuple[str, str], ...]) -> int:
    """Every copy of the Chime headers out (any letter case), `lines` in; how many names had
    copies to remove."""
    stripped = 0
    for name in CHIME_HEADER_NAMES:
        if headers.pop(name, None) is not None:
            stripped += 1
    for name, value in lines:
        headers[name] = value
    return stripped


def _header_lines(flow: http.HTTPFlow, client_policy: ClientPolicy) -> tuple[tuple[str, str], ...]:
    return client_policy.http2_headers if _is_h2(flow) else client_policy.http1_headers
