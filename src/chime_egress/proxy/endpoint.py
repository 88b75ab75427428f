"""Requests the proxy answers itself, at a reserved host name: the health probe's and people's.

`http://chime-egress.invalid/health` (the `chime_check_host` option names the host) is answered
by the addon from its own state, never forwarded: only a proxy with the addon loaded can answer
it, so the container's health check fails exactly when the proxy would run without the addon.
`.invalid` is reserved (RFC 6761): no DNS answers for it, so no request for it can reach a server
by mistake. The name is reached through the proxy (an explicit proxy, or a PAC file naming it).

Answers describe the proxy and the asking client only, never other clients.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mitmproxy import http

from .. import __version__
from ..policy.allowlist import ENFORCE
from ..policy.compiled import Policy
from ..policy.ranges import canonical_host
from .current import CurrentPolicy
from .options import DEFAULT_CHECK_HOST

logger = logging.getLogger("chime_egress")

HEALTH_PATH = "/health"
READY_PATH = "/ready"  # 503 while draining: a load balancer stops sending new clients
LIVE_PATH = "/live"  # 200 while the process answers, draining or not

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
    document: dict[str, Any]


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

    def __init__(self, current: CurrentPolicy, draining: Callable[[], bool]) -> None:
        self.current = current
        self.draining = draining
        self.host = DEFAULT_CHECK_HOST
        self._paths: dict[str, Callable[[http.HTTPFlow], Answer]] = {
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
        flow.response = http.Response.make(
            answer.status,
            json.dumps(answer.document, indent=2, sort_keys=True).encode() + b"\n",
            {"Content-Type": "application/json", "Cache-Control": "no-store"},
        )

    def _health(self, flow: http.HTTPFlow) -> Answer:
        return health_answer(self.current, self.draining())
