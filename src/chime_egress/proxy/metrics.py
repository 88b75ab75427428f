"""What the proxy did, as Prometheus metrics, read by /metrics and the chime.stats command.

A registry of its own (not prometheus_client's global one) so that two addon instances, or the
tests, never share counts, and /metrics shows only the proxy's own series.
"""

from __future__ import annotations

import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
)
from prometheus_client.exposition import generate_latest

from ..policy.client_policy import ClientPolicies
from ..policy.ranges import canonical_host, is_chime_name

PREFIX = "chime_egress"
# Host names label the 403 counter, but a client chooses the Host it sends: only DNS names
# (letters, digits, '-', '.') under chime.aws are used, and only this many of them; the rest,
# control characters or quotes included, count as "other".
MAX_403_HOSTS = 200
_DNS_NAME = re.compile(r"[a-z0-9-]+(?:\.[a-z0-9-]+)*")

# Outcomes of the connection decision, the `outcome` label of chime_egress_connections_total.
INTERCEPTED = "intercepted"
PASSED_THROUGH = "passed_through"
MEDIA = "media_passed_through"
OBSERVED = "observed"
REFUSED = "refused"  # Chime, but who is asking cannot be known: every request answered 502


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds: what a
        # replica's capacity is judged by (docs/capacity.md), where no orchestrator measures it.
        ProcessCollector(registry=self.registry)
        self.connections = self._counter(
            "connections",
            "Client connections by decision: intercepted (Chime, headers added), passed_through "
            "(not Chime), media_passed_through (Chime media), observed (Chime, observe mode), "
            "refused (Chime, but who is asking cannot be known now).",
            "network",
            "outcome",
        )
        self.requests_injected = self._counter(
            "requests_injected",
            "Requests to Chime that left with the allowlist headers.",
            "network",
        )
        self.requests_observed = self._counter(
            "requests_observed",
            "Plain-HTTP requests to Chime left unchanged because their client is in observe mode.",
            "network",
        )
        self.client_headers_stripped = self._counter(
            "client_headers_stripped",
            "Copies of the Chime headers sent by clients and removed before the proxy's own.",
            "network",
        )
        self.requests_refused = self._counter(
            "requests_refused",
            "Requests answered 502 because the proxy could not apply its policy to them.",
        )
        self.requests_rejected = self._counter(
            "requests_rejected",
            "Requests to Chime answered 400 and never forwarded: a server behind the proxy could "
            "have read their headers differently (a bare CR, an obs-fold line, a control "
            "character, a Connection option or a trailer naming a Chime header).",
        )
        self.destinations_refused = self._counter(
            "destinations_refused",
            "Connections and requests refused because they went to the proxy itself, or to a "
            "loopback, link-local or unspecified address that chime_local_destinations does "
            "not allow.",
        )
        self.chime_403 = self._counter(
            "chime_403_responses",
            "403 responses from Chime to requests that carried the allowlist headers, by host "
            f"(names under chime.aws, the first {MAX_403_HOSTS}; others count as 'other').",
            "network",
            "host",
        )
        self.observed_bytes = self._counter(
            "observed_bytes",
            "Bytes relayed on observed Chime connections, by direction (sent by the client or "
            "by the server).",
            "network",
            "direction",
        )
        self.reloads = self._counter(
            "reloads", "Reloads of the allowlist after an edit, by result.", "result"
        )
        self.config_file_invalid = self._gauge(
            "config_file_invalid",
            "1 while the last reload failed: the files on disk are not the configuration in "
            "force. 0 once a reload succeeds.",
        )
        self.config_age = self._gauge(
            "config_age_seconds", "Seconds since the configuration in force was loaded."
        )
        self.sync_token = self._gauge(
            "ranges_sync_token", "syncToken of the AWS ranges file in force (0 without one)."
        )
        self.apps = self._gauge(
            "apps_configured",
            "Apps whose AppKey the proxy sends, per network policy (0 in observe mode).",
            "network",
            "mode",
        )
        self.identity_lookups = self._counter(
            "identity_lookups",
            "Checks of who is asking, by source (htpasswd, ldap: credentials; ldap_groups) and "
            "result (cached, cached_failure, accepted, rejected, answered, unavailable).",
            "source",
            "result",
        )
        self.identity_refused = self._counter(
            "identity_refused",
            "Proxy requests answered 407 or 502 before going anywhere, by reason "
            "(credentials_missing, credentials_rejected, directory_unavailable).",
            "reason",
        )
        self.identity_headers_ignored = self._counter(
            "identity_headers_ignored",
            "Requests carrying the trusted identity header from an address that is not a listed "
            "parent proxy: ignored and removed.",
        )
        # Labelled children by (metric, labels): labels() takes a lock and builds a key on
        # every call, a cost paid per connection and per request otherwise.
        self._children: dict[tuple[int, tuple[str, ...]], Counter] = {}
        self._403_hosts: set[str] = set()
        self._loaded_at = time.monotonic()
        self.config_age.set_function(lambda: time.monotonic() - self._loaded_at)
        for result in ("succeeded", "failed"):
            self.reloads.labels(result)  # present at 0 from the start, so rate() works

    def _counter(self, name: str, documentation: str, *labels: str) -> Counter:
        return Counter(f"{PREFIX}_{name}", documentation, labels, registry=self.registry)

    def _gauge(self, name: str, documentation: str, *labels: str) -> Gauge:
        return Gauge(f"{PREFIX}_{name}", documentation, labels, registry=self.registry)

    def child(self, counter: Counter, *labels: str) -> Counter:
        """counter.labels(*labels), remembered (children of a counter are never removed)."""
        key = (id(counter), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = counter.labels(*labels)
        return found

    def count_403(self, network: str, host: str) -> None:
        host = canonical_host(host)
        if not (is_chime_name(host) and _DNS_NAME.fullmatch(host)):
            host = "other"
        elif host not in self._403_hosts:
            if len(self._403_hosts) >= MAX_403_HOSTS:
                host = "other"
            else:
                self._403_hosts.add(host)
        self.child(self.chime_403, network, host).inc()

    def configuration_loaded(self, clients: ClientPolicies, sync_token: str | None) -> None:
        self._loaded_at = time.monotonic()
        self.config_file_invalid.set(0)
        self.sync_token.set(float(sync_token) if sync_token else 0)
        # A network removed by a reload must not keep reporting its old app count.
        self.apps.clear()
        for policy in clients.all:
            sent = 0 if policy.observing else len(policy.apps)
            self.apps.labels(policy.name, policy.mode).set(sent)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def snapshot(self) -> dict[str, Any]:
        """Every series as JSON-ready values: {name: value} or {name: {"label=v,...": value}}."""
        result: dict[str, Any] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                name = sample.name.removeprefix(f"{PREFIX}_")
                value = sample.value  # an int from the process collector, else a float
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                if sample.labels:
                    key = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                    result.setdefault(name, {})[key] = value
                else:
                    result[name] = value
        return result


def parse_listen_address(text: str) -> tuple[str, int] | None:
    """The chime_metrics option: "" (off), "PORT" (loopback) or "HOST:PORT" ("[::1]:PORT")."""
    text = text.strip()
    if not text:
        return None
    host, separator, port_text = text.rpartition(":")
    if not separator:
        host = "127.0.0.1"
    host = host.strip("[]")
    if not host:
        raise ValueError(f"chime_metrics: no host before ':' in {text!r}; write HOST:PORT")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(
            f"chime_metrics must be PORT or HOST:PORT (e.g. 0.0.0.0:9108), not {text!r}"
        ) from None
    if not 1 <= port <= 65535:
        raise ValueError(f"chime_metrics: port {port} is outside 1-65535")
    return host, port


class MetricsServer:
    """/metrics, and the /ready and /live probes, over HTTP on a thread of their own.

    The probes are here as well as on the proxy port because a draining proxy closes its
    listening sockets at once: a load balancer's or Kubernetes' readiness check must still get a
    clear 503 from somewhere, and the liveness check a 200, until the process exits.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        probes: Mapping[str, Callable[[], tuple[int, bytes]]] | None = None,
    ) -> None:
        self.address = (host, port)
        routes = dict(probes or {})

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path in routes:
                    status, body = routes[path]()
                    kind = "application/json"
                else:
                    status, body, kind = 200, generate_latest(registry), CONTENT_TYPE_LATEST
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # scrapes and probes every few seconds: not for the proxy's log

        server_class = _IPv6Server if ":" in host else _QuietServer
        # Raises OSError when the port is taken: the admin asked for metrics, so start-up fails.
        self._server = server_class((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="chime-egress metrics", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # HAProxy's health checks reset the connection once they have the status line: a
        # traceback in the proxy's log every check interval would bury the real errors.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _IPv6Server(_QuietServer):
    address_family = socket.AF_INET6
