"""The mitmproxy addon: options, configuration, and the hooks, each handed to one collaborator.

- `routing.Router` decides once per connection whether it is Chime-bound and what mitmproxy does
  with it (intercept, relay raw, relay as media, observe);
- `connecting.Connector` pins each connection to the address judged, and refuses the proxy's
  own host;
- `injection.Injector` gives every Chime-bound request exactly the configured headers;
- `observing.Observer` relays and records the connections of clients in observe mode;
- `reloading.ReloadWatcher` loads edits to the allowlist and ranges files.
They share one `CurrentPolicy`, the only reference a reload replaces. Every hook fails closed:
when anything goes wrong for a request that may be Chime-bound, that request is answered with an
error and never leaves.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

from mitmproxy import command, connection, ctx, exceptions, http, tcp
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy import layer, server_hooks
from mitmproxy.tls import ClientHelloData, TlsData
from OpenSSL import SSL
from OpenSSL._util import lib as _openssl

from ..errors import ConfigError
from ..policy.compiled import Policy, load_policy
from ..policy.local import LocalDestinations, parse_local_destinations
from ..private_files import others_may_read
from .connecting import Connector
from .current import CurrentPolicy
from .drain import Drain
from .endpoint import (
    LIVE_PATH,
    READY_PATH,
    Answer,
    ProxyEndpoint,
    health_answer,
    live_answer,
)
from .identity import Identities
from .injection import INJECTED_NETWORK, Injector
from .jsonlog import fields, open_json_log, parse_json_log_target
from .metrics import Metrics, MetricsServer, parse_listen_address
from .observing import Observer
from .options import (
    OPTIONS,
    REFUSED_OPTIONS,
    parse_allowlist_option,
    parse_check_host,
    parse_drain_seconds,
    parse_reload_interval,
    parse_websocket_relay,
    refused_settings,
)
from .reading import ReadTimeout
from .reloading import ReloadWatcher, describe_changes
from .routing import Router
from .upgrades import UpgradeRelay

__all__ = ["INJECTED_NETWORK", "ChimeHeaders"]

logger = logging.getLogger("chime_egress")

_PROXYAUTH_CONFLICT = (
    "the allowlist's identity section checks proxy credentials itself; unset mitmproxy's "
    "proxyauth option (its LDAP check blocks every connection while the directory answers, "
    "and 'any' accepts made-up user names), or remove the identity section"
)


def _invalid_allowlist(error: ConfigError) -> str:
    """One line for one problem (file:line: field: what to do); a count, then a line each."""
    if len(error.problems) == 1:
        return f"chime_allowlist: invalid configuration: {error.problems[0]}"
    return f"chime_allowlist: invalid configuration, {len(error.problems)} problems:\n{error}"


def _proxyauth_set() -> bool:
    """Whether mitmproxy's own proxyauth is on (absent where its addon is not loaded)."""
    return bool(getattr(ctx.options, "proxyauth", None))


class ChimeHeaders:
    # The name mitmproxy knows the addon by (`master.addons.get`); resident.py looks for it.
    name = "chime_headers"

    def __init__(self) -> None:
        self.current = CurrentPolicy()
        self.metrics = Metrics()
        self.metrics_server: MetricsServer | None = None
        self.observer = Observer(self.current, self.metrics)
        self.identities = Identities(self.current, self.metrics)
        self.router = Router(self.current, self.metrics, self.observer, self.identities)
        self.injector = Injector(self.router, self.metrics)
        self.connector = Connector(self.router, self.metrics, self._listeners)
        self.watcher = ReloadWatcher(self.current, self.metrics, self._publish)
        self.drain = Drain()
        self.endpoint = ProxyEndpoint(
            self.current,
            lambda: self.drain.draining,
            lambda flow: self.router.client_policy(flow.client_conn, flow),
        )
        self.upgrades = UpgradeRelay()
        self._json_handler: logging.Handler | None = None

    @property
    def policy(self) -> Policy | None:
        return self.current.policy if self.current.loaded else None

    # Options and configuration

    def load(self, loader: Loader) -> None:
        for spec in OPTIONS:  # every one a str: see options.py
            loader.add_option(spec.name, str, spec.default, spec.help)

    def configure(self, updated: set[str]) -> None:
        if "termlog_verbosity" in updated:
            # mitmdump sets the root logger to DEBUG whatever it displays, so every DEBUG record
            # (one per passed-through connection) would be built and dispatched only to be
            # dropped: most of this addon's per-connection cost. Emit them only when shown.
            shown = getattr(ctx.options, "termlog_verbosity", "debug")
            logger.setLevel(logging.DEBUG if shown == "debug" else logging.INFO)
        if updated & REFUSED_OPTIONS:
            refused = refused_settings({name: getattr(ctx.options, name, None) for name in updated})
            if refused:
                raise exceptions.OptionsError("\n".join(str(setting) for setting in refused))
        try:
            if "chime_reload_interval" in updated:
                self.watcher.interval = parse_reload_interval(ctx.options.chime_reload_interval)
            if "chime_websocket_relay" in updated:
                self.upgrades.relay = parse_websocket_relay(ctx.options.chime_websocket_relay)
            if "chime_check_host" in updated:
                self.endpoint.host = parse_check_host(ctx.options.chime_check_host)
            if "chime_drain_seconds" in updated:
                self.drain.seconds = parse_drain_seconds(ctx.options.chime_drain_seconds)
            if "chime_allowlist" in updated or not self.current.loaded:
                allowlist = parse_allowlist_option(ctx.options.chime_allowlist)
        except ValueError as error:
            raise exceptions.OptionsError(str(error)) from None
        if "chime_log_json" in updated:
            self._configure_json_log(ctx.options.chime_log_json)
        if "chime_metrics" in updated:
            self._configure_metrics(ctx.options.chime_metrics)
        if "confdir" in updated:
            self.endpoint.confdir = Path(ctx.options.confdir).expanduser()
        if "chime_local_destinations" in updated:
            try:
                allowed = parse_local_destinations(ctx.options.chime_local_destinations)
            except ValueError as error:
                raise exceptions.OptionsError(str(error)) from None
            self.connector.local = LocalDestinations(allowed)
        if "chime_allowlist" in updated or not self.current.loaded:
            path = Path(allowlist).expanduser()
            try:
                policy = self.watcher.deadline.call(lambda: load_policy(path))
            except ConfigError as error:
                raise exceptions.OptionsError(_invalid_allowlist(error)) from None
            except ReadTimeout as error:
                raise exceptions.OptionsError(f"chime_allowlist: {path}: {error}") from None
            previous = self.current.policy if self.current.loaded else None
            self._publish(
                policy,
                f"chime: allowlist loaded from {path}: {policy.summary()}",
                describe_changes(previous, policy) if previous is not None else None,
            )
        if self.policy is not None and self.policy.allowlist.identity and _proxyauth_set():
            raise exceptions.OptionsError(_PROXYAUTH_CONFLICT)

    def _configure_json_log(self, text: str) -> None:
        try:
            target = parse_json_log_target(text)
            handler = open_json_log(target) if target is not None else None
        except (ValueError, OSError) as error:
            raise exceptions.OptionsError(f"chime_log_json: {error}") from None
        if self._json_handler is not None:
            logger.removeHandler(self._json_handler)
            self._json_handler.close()
        self._json_handler = handler
        if handler is not None:
            logger.addHandler(handler)
        if target not in (None, "-") and (exposed := others_may_read(Path(target).expanduser())):
            logger.warning(f"chime: chime_log_json: {exposed}")

    def _configure_metrics(self, text: str) -> None:
        try:
            address = parse_listen_address(text)
        except ValueError as error:
            raise exceptions.OptionsError(str(error)) from None
        if self.metrics_server is not None:
            if self.metrics_server.address == address:
                return
            self.metrics_server.stop()
            self.metrics_server = None
        if address is None:
            return
        try:
            self.metrics_server = MetricsServer(
                self.metrics.registry, *address, probes=self._probes()
            )
        except OSError as error:
            raise exceptions.OptionsError(
                f"chime_metrics: cannot listen on {text}: {error.strerror or error}"
            ) from None
        host, port = address
        shown = f"[{host}]" if ":" in host else host
        logger.info(f"chime: metrics at http://{shown}:{port}/metrics")

    def _probes(self) -> dict[str, Callable[[], tuple[int, bytes]]]:
        def encoded(answer: Answer) -> tuple[int, bytes]:
            return answer.status, json.dumps(answer.document, sort_keys=True).encode() + b"\n"

        ready = lambda: encoded(health_answer(self.current, self.drain.draining))  # noqa: E731
        return {READY_PATH: ready, LIVE_PATH: lambda: encoded(live_answer())}

    def _listeners(self) -> list[tuple[str, int]]:
        """Where this proxy listens: mitmproxy's proxy servers and the metrics endpoint."""
        found: list[tuple[str, int]] = []
        proxyserver = ctx.master.addons.get("proxyserver")
        if proxyserver is not None:
            found.extend((str(host), int(port)) for host, port, *_ in proxyserver.listen_addrs())
        if self.metrics_server is not None:
            found.append((self.metrics_server.address[0], self.metrics_server.port))
        return found

    def _publish(self, policy: Policy, message: str, changes: str | None) -> None:
        """Put `policy` in force and log `message` with `changes`, what it changed."""
        self.current.publish(policy)
        self.identities.update(policy.allowlist.identity)
        # Nothing below may undo a published reload, nor stop the watcher task.
        try:
            self.metrics.configuration_loaded(
                policy.clients, policy.ranges.sync_token if policy.ranges else None
            )
        except Exception:
            logger.exception("chime: cannot update the configuration metrics")
        message += f"; changes: {changes}" if changes else ""
        logger.info(
            message, extra=fields("config_loaded", summary=policy.summary(), changes=changes)
        )
        for warning in policy.allowlist.warnings:
            logger.warning(f"chime: allowlist warning: {warning}")
        if policy.allowlist.identity is not None and _proxyauth_set():
            logger.error(f"chime: {_PROXYAUTH_CONFLICT}")

    # Life cycle

    def running(self) -> None:
        self.watcher.start()
        self.drain.install(ctx.master)

    def done(self) -> None:
        self.watcher.stop()
        self.identities.close()
        if self.metrics_server is not None:
            self.metrics_server.stop()
            self.metrics_server = None
        if self._json_handler is not None:
            logger.removeHandler(self._json_handler)
            self._json_handler.close()
            self._json_handler = None

    @command.command("chime.stats")  # type: ignore[untyped-decorator]
    def stats(self) -> str:
        """What the Chime addon has done since start-up, as JSON (the metrics' current values)."""
        return json.dumps(self.metrics.snapshot(), sort_keys=True)

    # Connections and requests, each handed to its collaborator

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        await self.identities.http_connect(flow)
        self.router.http_connect(flow)

    async def next_layer(self, nextlayer: layer.NextLayer) -> None:
        await self.router.next_layer(nextlayer)

    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        await self.connector.server_connect(data)

    def client_disconnected(self, client: connection.Client) -> None:
        self.observer.client_disconnected(client)

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        try:
            own = self.endpoint.handles(flow)
        except Exception:  # a request the check cannot read is not ours: the injector judges it
            own = False
        if own:
            if self.identities.resolver is not None and self.endpoint.wants_identity(flow):
                # The check page shows the asker's own settings: learn who it is first (a 407
                # asks the browser for credentials; the probes stay open to anyone).
                await self.identities.requestheaders(flow)
                if flow.response is not None:
                    return
            self.endpoint.answer(flow)
            return
        if self.identities.resolver is not None:  # an identity section: who is asking
            await self.identities.requestheaders(flow)
            if flow.response is not None:  # answered 407 or 502: it goes nowhere
                return
        await self.injector.requestheaders(flow)

    def request(self, flow: http.HTTPFlow) -> None:
        self.injector.request(flow)

    def tls_clienthello(self, data: ClientHelloData) -> None:
        self.router.tls_clienthello(data)

    def tls_start_client(self, data: TlsData) -> None:
        _release_idle_buffers(data)

    def tls_start_server(self, data: TlsData) -> None:
        _release_idle_buffers(data)

    def response(self, flow: http.HTTPFlow) -> None:
        self.injector.response(flow)
        self.upgrades.response(flow)

    def tcp_start(self, flow: tcp.TCPFlow) -> None:
        self.upgrades.tcp_start(flow)


def _release_idle_buffers(data: TlsData) -> None:
    """Let OpenSSL free a TLS connection's read and write buffers while it is idle.

    A meeting's signaling WebSocket is idle most of the time, and every intercepted one holds
    two TLS connections: measured with 1,000 idle WebSockets, this takes a replica's memory per
    WebSocket from about 180 KiB to about 136 KiB (BENCHMARKS.md, "Participants"). pyOpenSSL has
    no per-connection setter; its bindings' SSL_set_mode is what its own Context.set_mode wraps.
    """
    if data.ssl_conn is None or _openssl is None:
        return
    with contextlib.suppress(AttributeError):  # a pyOpenSSL without the binding: keep buffers
        _openssl.SSL_set_mode(data.ssl_conn._ssl, SSL.MODE_RELEASE_BUFFERS)
