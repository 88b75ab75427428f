"""The mitmproxy addon: options, configuration, and the hooks, each handed to one collaborator.

- `routing.Router` decides once per connection whether it is Chime-bound and what mitmproxy does
  with it (intercept, relay raw, relay as media, observe);
- `injection.Injector` gives every Chime-bound request exactly the configured headers;
- `observing.Observer` relays and records the connections of clients in observe mode;
- `reloading.ReloadWatcher` loads edits to the allowlist and ranges files.
They share one `CurrentPolicy`, the only reference a reload replaces. Every hook fails closed:
when anything goes wrong for a request that may be Chime-bound, that request is answered with an
error and never leaves.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mitmproxy import command, connection, ctx, exceptions, http
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy import layer

from ..errors import ConfigError
from ..policy.compiled import Policy, load_policy
from .current import CurrentPolicy
from .endpoint import DEFAULT_CHECK_HOST, ProxyEndpoint, parse_check_host
from .identity import Identities
from .injection import INJECTED_NETWORK, Injector
from .jsonlog import fields, open_json_log, parse_json_log_target
from .metrics import Metrics, MetricsServer, parse_listen_address
from .observing import Observer
from .reloading import DEFAULT_RELOAD_INTERVAL, ReloadWatcher, parse_reload_interval
from .routing import Router

__all__ = ["INJECTED_NETWORK", "ChimeHeaders"]

logger = logging.getLogger("chime_egress")

DEFAULT_ALLOWLIST = "config/allowlist.yaml"
_PROXYAUTH_CONFLICT = (
    "the allowlist's identity section checks proxy credentials itself; unset mitmproxy's "
    "proxyauth option (its LDAP check blocks every connection while the directory answers, "
    "and 'any' accepts made-up user names), or remove the identity section"
)
WEBSOCKET_RELAYS = ("tcp", "websocket")


def _proxyauth_set() -> bool:
    """Whether mitmproxy's own proxyauth is on (absent where its addon is not loaded)."""
    return bool(getattr(ctx.options, "proxyauth", None))


class ChimeHeaders:
    def __init__(self) -> None:
        self.current = CurrentPolicy()
        self.metrics = Metrics()
        self.metrics_server: MetricsServer | None = None
        self.observer = Observer(self.current, self.metrics)
        self.identities = Identities(self.current, self.metrics)
        self.router = Router(self.current, self.metrics, self.observer, self.identities)
        self.injector = Injector(self.router, self.metrics)
        self.watcher = ReloadWatcher(self.current, self.metrics, self._publish)
        self.endpoint = ProxyEndpoint(self.current)
        self.websocket_relay = "tcp"
        self._json_handler: logging.Handler | None = None

    @property
    def policy(self) -> Policy | None:
        return self.current.policy if self.current.loaded else None

    # Options and configuration

    def load(self, loader: Loader) -> None:
        # Every option is a str: a value mitmproxy cannot parse would silently unload the
        # whole script (mitmproxy issue 8013), leaving a proxy that adds no headers.
        loader.add_option(
            "chime_allowlist",
            str,
            DEFAULT_ALLOWLIST,
            "YAML allowlist of Chime AppKeys and TenantIDs, and the Chime destination ranges.",
        )
        loader.add_option(
            "chime_reload_interval",
            str,
            DEFAULT_RELOAD_INTERVAL,
            "Seconds between checks for edits to the allowlist and ranges files.",
        )
        loader.add_option(
            "chime_websocket_relay",
            str,
            "tcp",
            "How WebSocket messages on intercepted Chime connections are relayed after the "
            "upgrade (which gets the headers): 'tcp' relays the bytes without parsing frames; "
            "'websocket' parses every message, as mitmproxy does by default.",
        )
        loader.add_option(
            "chime_metrics",
            str,
            "",
            "Serve Prometheus metrics at http://HOST:PORT/metrics: PORT (on 127.0.0.1) or "
            "HOST:PORT, e.g. 0.0.0.0:9108 in a container. Empty: off.",
        )
        loader.add_option(
            "chime_log_json",
            str,
            "",
            "Also write each of the addon's log records as one JSON object per line: '-' for "
            "standard output (with mitmdump -q), or a file to append to. Empty: off.",
        )
        loader.add_option(
            "chime_check_host",
            str,
            DEFAULT_CHECK_HOST,
            "Host name the proxy answers itself (never forwarded): http://HOST/health for the "
            "health probe. Must not be a Chime name.",
        )

    def configure(self, updated: set[str]) -> None:
        if "termlog_verbosity" in updated:
            # mitmdump sets the root logger to DEBUG whatever it displays, so every DEBUG record
            # (one per passed-through connection) would be built and dispatched only to be
            # dropped: most of this addon's per-connection cost. Emit them only when shown.
            shown = getattr(ctx.options, "termlog_verbosity", "debug")
            logger.setLevel(logging.DEBUG if shown == "debug" else logging.INFO)
        if "chime_reload_interval" in updated:
            try:
                self.watcher.interval = parse_reload_interval(ctx.options.chime_reload_interval)
            except ValueError as error:
                raise exceptions.OptionsError(str(error)) from None
        if "chime_websocket_relay" in updated:
            if ctx.options.chime_websocket_relay not in WEBSOCKET_RELAYS:
                raise exceptions.OptionsError(
                    f"chime_websocket_relay must be one of {', '.join(WEBSOCKET_RELAYS)}, "
                    f"not {ctx.options.chime_websocket_relay!r}"
                )
            self.websocket_relay = ctx.options.chime_websocket_relay
        if "chime_log_json" in updated:
            self._configure_json_log(ctx.options.chime_log_json)
        if "chime_metrics" in updated:
            self._configure_metrics(ctx.options.chime_metrics)
        if "chime_check_host" in updated:
            try:
                self.endpoint.host = parse_check_host(ctx.options.chime_check_host)
            except ValueError as error:
                raise exceptions.OptionsError(str(error)) from None
        if updated & {"ignore_hosts", "allow_hosts"} and (
            ctx.options.ignore_hosts or ctx.options.allow_hosts
        ):
            # Either would let mitmproxy pass a Chime connection through raw, without headers.
            raise exceptions.OptionsError(
                "chime_headers decides itself which connections to intercept; "
                "ignore_hosts and allow_hosts could send Chime traffic without the headers"
            )
        if "chime_allowlist" in updated or not self.current.loaded:
            path = Path(ctx.options.chime_allowlist).expanduser()
            try:
                policy = load_policy(path)
            except ConfigError as error:
                raise exceptions.OptionsError(
                    f"chime_allowlist: invalid configuration:\n{error}"
                ) from None
            self._publish(policy, f"chime: allowlist loaded from {path}: {policy.summary()}")
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
            self.metrics_server = MetricsServer(self.metrics, *address)
        except OSError as error:
            raise exceptions.OptionsError(
                f"chime_metrics: cannot listen on {text}: {error.strerror or error}"
            ) from None
        host, port = address
        shown = f"[{host}]" if ":" in host else host
        logger.info(f"chime: metrics at http://{shown}:{port}/metrics")

    def _publish(self, policy: Policy, message: str) -> None:
        self.current.publish(policy)
        self.identities.update(policy.allowlist.identity)
        # Nothing below may undo a published reload, nor stop the watcher task.
        try:
            self.metrics.configuration_loaded(
                policy.clients, policy.ranges.sync_token if policy.ranges else None
            )
        except Exception:
            logger.exception("chime: cannot update the configuration metrics")
        logger.info(message, extra=fields("config_loaded", summary=policy.summary()))
        for warning in policy.allowlist.warnings:
            logger.warning(f"chime: allowlist warning: {warning}")
        if policy.allowlist.identity is not None and _proxyauth_set():
            logger.error(f"chime: {_PROXYAUTH_CONFLICT}")

    # Life cycle

    def running(self) -> None:
        self.watcher.start()

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

    def client_disconnected(self, client: connection.Client) -> None:
        self.observer.client_disconnected(client)

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if self.endpoint.handles(flow):
            self.endpoint.answer(flow)
            return
        if self.identities.resolver is not None:  # an identity section: who is asking
            await self.identities.requestheaders(flow)
            if flow.response is not None:  # answered 407 or 502: it goes nowhere
                return
        await self.injector.requestheaders(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        self.injector.response(flow)
        # The headers only matter on the upgrade request. Without a WebSocket record mitmproxy
        # relays the upgraded connection as plain bytes instead of parsing every frame.
        if flow.websocket is not None and self.websocket_relay == "tcp" and ctx.options.rawtcp:
            flow.websocket = None
