"""Injecting into a request: every Chime-bound request leaves with exactly the configured headers.

Client copies of both headers are removed (every copy, any letter case) and the policy's values
added, with lowercase names on HTTP/2. A request whose destination or policy cannot be decided is
answered 502 here and never leaves. Chime's 403 answers to injected requests are reported with
what was sent and the documented rules that could have refused it.
"""

from __future__ import annotations

import logging
from weakref import WeakKeyDictionary

from mitmproxy import http

from ..policy.client_policy import ClientPolicy
from ..policy.diagnostics import refusal_hint
from ..policy.headers import APP_KEYS_HEADER, CHIME_HEADER_NAMES, TENANTS_HEADER
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

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        try:
            verdict = self.router.verdict_for(flow.server_conn)
            judged_now = verdict is None
            if verdict is None:
                # Not seen at the connection level: absolute-form plain HTTP, or a mode where
                # mitmproxy connects after the request arrives.
                verdict = await self.router.judge(flow.server_conn, flow.request.host)
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

    def _refuse(self, flow: http.HTTPFlow, why: str) -> None:
        """Answer the request with 502 here, so it never leaves; called while handling an error."""
        self.metrics.requests_refused.inc()
        logger.exception(
            f"chime: refusing request to {flow.request.pretty_host}: {why}",
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
            f"chime: {doing} {client} -> {flow.request.pretty_host} [{verdict.address}] "
            f"matched {verdict.prefix} ({client_policy.describe()})",
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
        headers = flow.request.headers
        stripped = 0
        for name in CHIME_HEADER_NAMES:
            if headers.pop(name, None) is not None:  # removes every copy, in any letter case
                stripped += 1
        if stripped:
            stripped_counter = self.metrics.client_headers_stripped
            self.metrics.child(stripped_counter, client_policy.name).inc(stripped)
        is_h2 = flow.request.is_http2 or flow.request.is_http3
        for name, value in client_policy.http2_headers if is_h2 else client_policy.http1_headers:
            headers[name] = value
        # Saved flows (-w) must stay serializable: only text in metadata, the policy beside it.
        flow.metadata[INJECTED_NETWORK] = client_policy.name
        self._injected[flow] = client_policy
        self.metrics.child(self.metrics.requests_injected, client_policy.name).inc()

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
        hint = refusal_hint(client_policy, client_address(flow.client_conn))
        body = (flow.response.get_content(strict=False) or b"")[:_BODY_EXCERPT]
        excerpt = body.decode("utf-8", "replace").strip()
        self.metrics.count_403(client_policy.name, host)
        logger.warning(
            f"chime: Chime answered 403 to {client_peer(flow.client_conn)} for "
            f"{host}{flow.request.path} ({client_policy.describe()}); sent "
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
