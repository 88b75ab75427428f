"""Requests the proxy answers itself, at a reserved host name: the health probe's and people's.

`http://chime-egress.invalid/` (the `chime_check_host` option names the host) is answered by the
addon from its own state, never forwarded:
- `/` the check page (HTML; JSON with `Accept: application/json`), `/check.json` the same as
  JSON: what the proxy does for the asking client (its address as seen, network, mode, the exact
  headers its Chime requests carry, the configuration's load time and ranges syncToken);
- `/ca.pem` the proxy's CA certificate, from mitmproxy's confdir;
- `/health` for `chime-egress health`: only a proxy with the addon loaded can answer it, so the
  container's health check fails exactly when the proxy would run without the addon.
`.invalid` is reserved (RFC 6761): no DNS answers for it, so no request for it can reach a server
by mistake. The name is reached through the proxy (an explicit proxy, or a PAC file naming it).

Answers describe the proxy and the asking client only, never other clients: the check page is
built from the client's own address and the settings of the network holding it, nothing else.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mitmproxy import http

from .. import __version__
from ..certificates import CERT_NAME, read_ca_certificate
from ..policy.allowlist import ENFORCE
from ..policy.client_policy import ClientPolicy
from ..policy.compiled import Policy
from ..policy.ranges import canonical_host, parse_address
from .check_page import CONTENT_SECURITY_POLICY, render_check_page
from .current import CurrentPolicy
from .options import DEFAULT_CHECK_HOST
from .peers import client_address

logger = logging.getLogger("chime_egress")

HEALTH_PATH = "/health"
READY_PATH = "/ready"  # 503 while draining: a load balancer stops sending new clients
LIVE_PATH = "/live"  # 200 while the process answers, draining or not
CHECK_PATH = "/"
CHECK_JSON_PATH = "/check.json"
CA_PATH = "/ca.pem"

# The AppKeys of the shipped example allowlist: enforcing exactly these refuses every real app.
EXAMPLE_APP_KEYS = frozenset({"ExampleAppKey1", "ExampleAppKey2"})


def example_problem(policy: Policy) -> str | None:
    """Why the policy in force would refuse every real app, if it is the shipped example."""
    enforced = [p for p in policy.clients.all if p.mode == ENFORCE and p.apps]
    for client_policy in enforced:
        if {app.app_key for app in client_policy.apps} <= EXAMPLE_APP_KEYS:
            return (
                f"network {client_policy.name} enforces the shipped example AppKeys "
                f"({', '.join(sorted(EXAMPLE_APP_KEYS))}): every real app gets 403; "
                "list your apps' AppKeys in the allowlist"
            )
    return None


@dataclass(frozen=True)
class Answer:
    status: int
    document: dict[str, Any] | None  # sent as JSON; None: `body` as it is
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def health_answer(current: CurrentPolicy, draining: bool) -> Answer:
    """The addon's state: 200 when it is in force with a usable policy and accepting clients."""
    problems: list[str] = []
    document: dict[str, Any] = {"addon": "chime_headers", "version": __version__}
    if not current.loaded:
        problems.append("no allowlist is loaded")
    else:
        policy = current.policy
        document["allowlist"] = str(policy.allowlist.path)
        document["summary"] = policy.summary()
        if policy.ranges is not None:
            document["ranges_sync_token"] = policy.ranges.sync_token
        loaded_at = current.published_at
        if loaded_at is not None:
            document["config_age_seconds"] = round(time.time() - loaded_at, 3)
        if problem := example_problem(policy):
            problems.append(problem)
    if draining:
        problems.append("draining: shutting down, not accepting new clients")
    document["draining"] = draining
    document["status"] = "unhealthy" if problems else "healthy"
    document["problems"] = problems
    return Answer(503 if problems else 200, document)


def live_answer() -> Answer:
    return Answer(200, {"addon": "chime_headers", "version": __version__, "status": "live"})


class ProxyEndpoint:
    """Answers requests for the check host from the addon's state; nothing is forwarded."""

    def __init__(
        self,
        current: CurrentPolicy,
        draining: Callable[[], bool],
        choose: Callable[[http.HTTPFlow], ClientPolicy] | None = None,
    ) -> None:
        self.current = current
        self.draining = draining
        # Which settings apply to the asking client: who it is (identities), else its address.
        self.choose = choose
        self.host = DEFAULT_CHECK_HOST
        self.confdir: Path | None = None  # mitmproxy's, where its CA certificate is
        self._paths: dict[str, Callable[[http.HTTPFlow], Answer]] = {
            CHECK_PATH: self._check_page,
            CHECK_JSON_PATH: self._check_json,
            CA_PATH: self._ca,
            HEALTH_PATH: self._health,
            READY_PATH: self._health,
            LIVE_PATH: lambda flow: live_answer(),
        }

    def handles(self, flow: http.HTTPFlow) -> bool:
        return canonical_host(flow.request.pretty_host) == self.host

    def answer(self, flow: http.HTTPFlow) -> None:
        path = flow.request.path.split("?", 1)[0]
        route = self._paths.get(path)
        try:
            if route is None:
                answer = Answer(404, {"error": "no such page", "pages": sorted(self._paths)})
            else:
                answer = route(flow)
        except Exception as error:  # answered here whatever happens: never forwarded
            logger.exception("chime: cannot answer a request for the check host")
            answer = Answer(500, {"error": f"{type(error).__name__}"})
        headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
        if answer.document is not None:
            body = json.dumps(answer.document, indent=2, sort_keys=True).encode() + b"\n"
            headers["Content-Type"] = "application/json"
        else:
            body = answer.body
        flow.response = http.Response.make(answer.status, body, {**headers, **answer.headers})

    # The check page: the asking client's own facts, nothing of anyone else's

    def wants_identity(self, flow: http.HTTPFlow) -> bool:
        """The check page shows the asker's own settings: who it is matters (identities)."""
        return flow.request.path.split("?", 1)[0] in (CHECK_PATH, CHECK_JSON_PATH)

    def check_document(self, flow: http.HTTPFlow) -> dict[str, Any]:
        """What the proxy does for the asking client: only that client's own settings."""
        address = client_address(flow.client_conn)
        document: dict[str, Any] = {
            "addon": "chime_headers",
            "version": __version__,
            "client": {"address": address},
            "ca_certificate": self._ca_facts(),
        }
        policy = self.current.policy  # NoPolicyError without one: answered 500, never forwarded
        chosen = policy.clients.for_client(address)
        if self.choose is not None:
            try:
                chosen = self.choose(flow)
            except Exception as error:  # who is asking cannot be known now (a directory down)
                document["client"]["identity"] = f"unknown now: {error}"
        parsed = parse_address(address)
        holding = [str(net) for net in chosen.clients if parsed is not None and parsed in net]
        loaded_at = self.current.published_at
        document["network"] = {
            "kind": chosen.kind,
            "name": chosen.name,
            "range": holding[0] if holding else None,
            "mode": chosen.mode,
        }
        document["headers"] = [{"name": n, "value": v} for n, v in chosen.http1_headers]
        document["configuration"] = {
            "loaded_at": None
            if loaded_at is None
            else datetime.fromtimestamp(loaded_at, UTC).isoformat(timespec="seconds"),
            "ranges_sync_token": policy.ranges.sync_token if policy.ranges else None,
        }
        return document

    def _ca_facts(self) -> dict[str, Any] | None:
        if self.confdir is None:
            return None
        try:
            certificate = read_ca_certificate(self.confdir)
        except (OSError, ValueError):
            return None
        return {
            "url": f"http://{self.host}{CA_PATH}",
            "sha256": certificate.sha256,
            "subject": certificate.subject,
        }

    def _check_json(self, flow: http.HTTPFlow) -> Answer:
        return Answer(200, self.check_document(flow))

    def _check_page(self, flow: http.HTTPFlow) -> Answer:
        accept = flow.request.headers.get("Accept", "")
        if "application/json" in accept and "text/html" not in accept:
            return self._check_json(flow)
        page = render_check_page(self.check_document(flow))
        return Answer(
            200,
            None,
            page.encode(),
            {
                "Content-Type": "text/html; charset=utf-8",
                "Content-Security-Policy": CONTENT_SECURITY_POLICY,
                "Referrer-Policy": "no-referrer",
            },
        )

    def _ca(self, flow: http.HTTPFlow) -> Answer:
        try:
            if self.confdir is None:
                raise FileNotFoundError
            pem = read_ca_certificate(self.confdir).pem
        except (OSError, ValueError):
            return Answer(404, {"error": f"no CA certificate ({CERT_NAME}) in the confdir"})
        return Answer(
            200,
            None,
            pem,
            {
                "Content-Type": "application/x-x509-ca-cert",
                "Content-Disposition": f'attachment; filename="{CERT_NAME}"',
            },
        )

    def _health(self, flow: http.HTTPFlow) -> Answer:
        return health_answer(self.current, self.draining())
