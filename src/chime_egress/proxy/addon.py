"""mitmproxy glue: decide once per connection whether it is Chime-bound, and add the headers.

Only connections to a configured prefix are decrypted; every other connection is handed to a raw
TCP relay before mitmproxy parses a byte of it, and so is Chime media (see media.py), and so is
all Chime traffic of clients whose network is in observe mode (counted, never decrypted). Every
hook fails closed: when anything goes wrong for a request that may be Chime-bound, that request
is answered with an error and never leaves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from weakref import WeakKeyDictionary, WeakSet

from mitmproxy import command, connection, ctx, exceptions, http
from mitmproxy.addonmanager import Loader
from mitmproxy.net.tls import starts_like_tls_record
from mitmproxy.proxy import commands, events, layer, layers
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.tls import parse_client_hello

from ..errors import ConfigError
from ..policy.client_policy import ClientPolicy
from ..policy.compiled import FilesSignature, Policy, files_signature, load_policy
from ..policy.diagnostics import refusal_hint
from ..policy.headers import APP_KEYS_HEADER, CHIME_HEADER_NAMES, TENANTS_HEADER
from ..policy.media import media_reason
from ..policy.ranges import Prefix, is_chime_name, parse_address
from .jsonlog import fields, open_json_log, parse_json_log_target
from .metrics import (
    INTERCEPTED,
    MEDIA,
    OBSERVED,
    PASSED_THROUGH,
    Metrics,
    MetricsServer,
    parse_listen_address,
)

logger = logging.getLogger("chime_egress")

DEFAULT_ALLOWLIST = "config/allowlist.yaml"
DEFAULT_RELOAD_INTERVAL = "1"
WEBSOCKET_RELAYS = ("tcp", "websocket")
# flow.metadata key: the network whose headers a request left with (shown in saved flows).
INJECTED_NETWORK = "chime_egress.network"
_BODY_EXCERPT = 200


@dataclass(frozen=True)
class Verdict:
    """Whether a server connection goes to Chime, and the evidence."""

    prefix: Prefix | None
    address: str | None  # the address that matched, or the ones that were judged

    @property
    def is_chime(self) -> bool:
        return self.prefix is not None


class _NeedMoreData(Exception):
    """The client's ClientHello has not fully arrived yet."""


@dataclass
class Observation:
    """A Chime connection relayed untouched because its client is in observe mode."""

    client: str
    client_address: str
    policy: Policy  # the configuration that chose observe mode for it
    host: str
    sni: str | None
    address: str | None
    prefix: str
    network: str
    started: float
    bytes_from_client: int = 0
    bytes_from_server: int = 0


class ObservingRelay(layers.TCPLayer):
    """mitmproxy's raw TCP relay, counting the bytes it relays for the observe-mode record.

    An observed connection must not outlive its client's observe mode: when a reload puts the
    client in enforce mode, the relay closes the connection at its next data (the client's
    reconnection is then intercepted), rather than carry a meeting on without the headers.
    """

    def __init__(
        self,
        context: Context,
        observation: Observation,
        still_observed: Callable[[Observation], bool],
    ) -> None:
        super().__init__(context, ignore=True)
        self.observation = observation
        self.still_observed = still_observed

    def handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
        if isinstance(event, events.DataReceived):
            if not self.still_observed(self.observation):
                self._handle_event = self.done
                yield commands.CloseConnection(self.context.server)
                yield commands.CloseConnection(self.context.client)
                return
            if event.connection is self.context.client:
                self.observation.bytes_from_client += len(event.data)
            else:
                self.observation.bytes_from_server += len(event.data)
        yield from super().handle_event(event)


def parse_reload_interval(text: str) -> float:
    """Seconds between checks of the allowlist files; a str option so a typo cannot unload us."""
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"chime_reload_interval must be seconds, not {text!r}") from None
    if not 0.05 <= seconds <= 5:
        raise ValueError("chime_reload_interval must be between 0.05 and 5 seconds")
    return seconds


class ChimeHeaders:
    def __init__(self) -> None:
        self.policy: Policy | None = None
        self.metrics = Metrics()
        self.metrics_server: MetricsServer | None = None
        self._json_handler: logging.Handler | None = None
        self._observations: WeakKeyDictionary[connection.Client, Observation] = WeakKeyDictionary()
        # The policy whose headers each injected request carries, for the 403 diagnostics.
        self._injected: WeakKeyDictionary[http.HTTPFlow, ClientPolicy] = WeakKeyDictionary()
        self.reload_interval = float(DEFAULT_RELOAD_INTERVAL)
        self.websocket_relay = "tcp"
        self._verdicts: WeakKeyDictionary[connection.Server, Verdict] = WeakKeyDictionary()
        self._decided: WeakSet[connection.Server] = WeakSet()
        self._connect_alpn: WeakKeyDictionary[connection.Client, str] = WeakKeyDictionary()
        self._watcher: asyncio.Task[None] | None = None

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

    def configure(self, updated: set[str]) -> None:
        if "termlog_verbosity" in updated:
            # mitmdump sets the root logger to DEBUG whatever it displays, so every DEBUG record
            # (one per passed-through connection) would be built and dispatched only to be
            # dropped: most of this addon's per-connection cost. Emit them only when shown.
            shown = getattr(ctx.options, "termlog_verbosity", "debug")
            logger.setLevel(logging.DEBUG if shown == "debug" else logging.INFO)
        if "chime_reload_interval" in updated:
            try:
                self.reload_interval = parse_reload_interval(ctx.options.chime_reload_interval)
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
        if updated & {"ignore_hosts", "allow_hosts"} and (
            ctx.options.ignore_hosts or ctx.options.allow_hosts
        ):
            # Either would let mitmproxy pass a Chime connection through raw, without headers.
            raise exceptions.OptionsError(
                "chime_headers decides itself which connections to intercept; "
                "ignore_hosts and allow_hosts could send Chime traffic without the headers"
            )
        if "chime_allowlist" in updated or self.policy is None:
            path = Path(ctx.options.chime_allowlist).expanduser()
            try:
                policy = load_policy(path)
            except ConfigError as error:
                raise exceptions.OptionsError(
                    f"chime_allowlist: invalid configuration:\n{error}"
                ) from None
            self._publish(policy, f"chime: allowlist loaded from {path}: {policy.summary()}")

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
        self.policy = policy
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

    def running(self) -> None:
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch_files())

    def done(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
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

    # Hot reload

    async def _watch_files(self) -> None:
        """Reload after an edit, once the files have held still for one interval."""
        seen: FilesSignature | None = None
        failed: FilesSignature | None = None
        while True:
            await asyncio.sleep(self.reload_interval)
            policy = self.policy
            if policy is None:
                continue
            current = files_signature(policy.sources)
            if current in (policy.loaded_signature, failed):
                continue
            if current != seen:  # still being written, perhaps: look again next round
                seen = current
                continue
            failed = None if await self._reload(policy.allowlist.path) else current

    async def _reload(self, path: Path) -> bool:
        try:
            policy = await asyncio.to_thread(load_policy, path)
        except Exception as error:
            self.metrics.reloads.labels("failed").inc()
            self.metrics.config_file_invalid.set(1)
            facts = fields("reload_failed", file=str(path), error=str(error))
            if isinstance(error, ConfigError):
                logger.error(
                    f"chime: reload failed; keeping the last good configuration:\n{error}",
                    extra=facts,
                )
            else:
                logger.exception(
                    "chime: reload failed; keeping the last good configuration", extra=facts
                )
            return False
        self.metrics.reloads.labels("succeeded").inc()
        self._publish(policy, f"chime: allowlist reloaded from {path}: {policy.summary()}")
        return True

    # Connection decisions

    def http_connect(self, flow: http.HTTPFlow) -> None:
        # RFC 7639: Firefox names the tunnel's protocol (webrtc) before any TLS is spoken.
        if alpn := flow.request.headers.get("ALPN"):
            self._connect_alpn[flow.client_conn] = alpn

    async def next_layer(self, nextlayer: layer.NextLayer) -> None:
        context = nextlayer.context
        server = context.server
        if server.address is None or server in self._decided:
            # No destination yet (the client's own connection to the proxy), or decided already
            # for this connection (the layer inside an intercepted TLS tunnel).
            return
        try:
            verdict = self._verdicts.get(server) or await self._judge(server)
            why_media, sni = self._inspect_tunnel(nextlayer) if verdict.is_chime else (None, None)
        except _NeedMoreData:
            nextlayer.layer = None  # ask again once more of the ClientHello has arrived
            return
        except Exception:
            # Unsure: leave mitmproxy's default (intercept); each request re-judges and fails
            # closed if it still cannot decide.
            logger.exception(f"chime: cannot judge {_peer(context.client)} -> {_host(server)}")
            return
        self._decided.add(server)
        client_policy = self._client_policy(context.client)
        outcome = self._route(nextlayer, verdict, client_policy, sni, why_media)
        self.metrics.child(self.metrics.connections, client_policy.name, outcome).inc()

    def _route(
        self,
        nextlayer: layer.NextLayer,
        verdict: Verdict,
        client_policy: ClientPolicy,
        sni: str | None,
        why_media: str | None,
    ) -> str:
        """Set the layer for a judged connection, log the decision, and return its outcome."""
        context = nextlayer.context
        if not verdict.is_chime:  # the common case: log only when shown
            if logger.isEnabledFor(logging.DEBUG):
                self._log_connection(
                    logging.DEBUG, "connection_passed_through", context, verdict, client_policy
                )
            nextlayer.layer = _raw_relay(context)
            return PASSED_THROUGH
        if client_policy.observing:
            self._observe(nextlayer, verdict, sni, client_policy.name)
            return OBSERVED
        if why_media is None:
            self._log_connection(
                logging.INFO, "connection_intercepted", context, verdict, client_policy, sni
            )
            return INTERCEPTED
        self._log_connection(
            logging.INFO, "media_passed_through", context, verdict, client_policy, sni, why_media
        )
        nextlayer.layer = _raw_relay(context)
        return MEDIA

    def _log_connection(
        self,
        level: int,
        event: str,
        context: Context,
        verdict: Verdict,
        client_policy: ClientPolicy,
        sni: str | None = None,
        why_media: str | None = None,
    ) -> None:
        client, host = _peer(context.client), _host(context.server)
        target = f"{host} (SNI {sni})" if sni else host
        if event == "connection_intercepted":
            text = f"intercepting {client} -> {target} [{verdict.address}] matched "
            text += f"{verdict.prefix} ({client_policy.describe()})"
        elif event == "media_passed_through":
            text = f"passing media through {client} -> {target} [{verdict.address}] matched "
            text += f"{verdict.prefix}: {why_media}"
        else:
            text = f"passing through {client} -> {host} [{verdict.address}]"
        logger.log(
            level,
            f"chime: {text}",
            extra=fields(
                event,
                client=client,
                network=client_policy.name,
                mode=client_policy.mode,
                host=host,
                sni=sni,
                destination=verdict.address,
                prefix=str(verdict.prefix) if verdict.prefix else None,
                reason=why_media,
            ),
        )

    def _client_policy(self, client: connection.Client) -> ClientPolicy:
        policy = self.policy
        assert policy is not None
        return policy.clients.for_client(_address(client))

    def _observe(
        self,
        nextlayer: layer.NextLayer,
        verdict: Verdict,
        sni: str | None,
        network: str,
    ) -> None:
        """Relay a Chime connection untouched; its record is logged when the client leaves."""
        context = nextlayer.context
        assert self.policy is not None
        observation = Observation(
            client=_peer(context.client),
            client_address=_address(context.client),
            policy=self.policy,
            host=_host(context.server),
            sni=sni,
            address=verdict.address,
            prefix=str(verdict.prefix),
            network=network,
            started=time.monotonic(),
        )
        if context.client.transport_protocol == "tcp":
            self._observations[context.client] = observation
            nextlayer.layer = ObservingRelay(context, observation, self._still_observed)
        else:
            # mitmproxy's UDP relay has no per-datagram hook to count or stop with; UDP reaches
            # mitmproxy only in transparent and WireGuard modes, where Chime's HTTP is TCP.
            self._log_observation(observation, counted=False)
            nextlayer.layer = _raw_relay(context)

    def _still_observed(self, observation: Observation) -> bool:
        policy = self.policy
        if policy is observation.policy or policy is None:
            return True
        observation.policy = policy
        client_policy = policy.clients.for_client(observation.client_address)
        if client_policy.observing:
            return True
        logger.info(
            f"chime: closing observed connection {observation.client} -> {observation.host}: "
            f"its client is now in {client_policy.describe()}, so it reconnects through "
            "interception",
            extra=fields(
                "observed_connection_closed",
                client=observation.client,
                host=observation.host,
                network=client_policy.name,
                mode=client_policy.mode,
            ),
        )
        return False

    def client_disconnected(self, client: connection.Client) -> None:
        observation = self._observations.pop(client, None)
        if observation is not None:
            self._log_observation(observation, counted=True)

    def _log_observation(self, observation: Observation, *, counted: bool) -> None:
        seconds = sent = received = None
        amounts = " (udp)"
        if counted:
            seconds = round(time.monotonic() - observation.started, 3)
            sent, received = observation.bytes_from_client, observation.bytes_from_server
            bytes_counter, network = self.metrics.observed_bytes, observation.network
            self.metrics.child(bytes_counter, network, "client").inc(sent)
            self.metrics.child(bytes_counter, network, "server").inc(received)
            amounts = f": {sent} bytes sent, {received} received in {seconds}s"
        sni = f" (SNI {observation.sni})" if observation.sni else ""
        logger.info(
            f"chime: observed {observation.client} -> {observation.host}{sni} "
            f"[{observation.address}] matched {observation.prefix} "
            f"(network {observation.network}, mode observe){amounts}",
            extra=fields(
                "connection_observed",
                client=observation.client,
                network=observation.network,
                mode="observe",
                sni=observation.sni,
                host=observation.host,
                destination=observation.address,
                prefix=observation.prefix,
                bytes_from_client=sent,
                bytes_from_server=received,
                duration_seconds=seconds,
            ),
        )

    def _inspect_tunnel(self, nextlayer: layer.NextLayer) -> tuple[str | None, str | None]:
        """(why this Chime tunnel is media to pass through or None, the TLS server name)."""
        policy = self.policy
        assert policy is not None
        data = nextlayer.data_client()
        tls = starts_like_tls_record(data)
        sni, offered_alpns = None, []
        if tls:
            try:
                hello = parse_client_hello(data)
            except ValueError:
                return None, None  # not a ClientHello we understand: intercept
            if hello is None:
                raise _NeedMoreData
            sni, offered_alpns = hello.sni, hello.alpn_protocols
        why = media_reason(
            connect_alpn=self._connect_alpn.get(nextlayer.context.client),
            tls=tls,
            sni=sni,
            offered_alpns=offered_alpns,
            first_bytes=data,
            media_hosts=policy.media_hosts,
        )
        return why, sni

    async def _judge(self, server: connection.Server, host: str | None = None) -> Verdict:
        """Match the address actually connected to, else every address the host resolves to."""
        policy = self.policy
        assert policy is not None
        if server.peername is not None and server.via is None:
            address = str(server.peername[0])
            verdict = Verdict(policy.table.lookup(address), address)
        else:
            target_host, port = server.address if server.address else (host, 0)
            if target_host is None:
                raise ValueError("request has no destination host")
            verdict = await _judge_host(policy, str(target_host), int(port or 443))
        self._verdicts[server] = verdict
        return verdict

    # Requests

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        try:
            verdict = self._verdicts.get(flow.server_conn)
            client_policy = self._client_policy(flow.client_conn)
            if verdict is None:
                # Not seen at the connection level: absolute-form plain HTTP, or a mode where
                # mitmproxy connects after the request arrives.
                verdict = await self._judge(flow.server_conn, flow.request.host)
                if verdict.is_chime:
                    self._log_request_decision(flow, verdict, client_policy)
            if verdict.is_chime:
                if client_policy.observing:
                    # Reaches here only for plain HTTP (or a reload after the connection was
                    # decided): what observe mode promises is to add nothing.
                    self.metrics.child(self.metrics.requests_observed, client_policy.name).inc()
                else:
                    self._inject(flow, client_policy)
        except Exception:
            self.metrics.requests_refused.inc()
            logger.exception(
                f"chime: refusing request to {flow.request.pretty_host}: "
                "cannot decide or add the Chime headers",
                extra=fields(
                    "request_refused",
                    client=_peer(flow.client_conn),
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
        client = _peer(flow.client_conn)
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
        # The headers only matter on the upgrade request. Without a WebSocket record mitmproxy
        # relays the upgraded connection as plain bytes instead of parsing every frame.
        if flow.websocket is not None and self.websocket_relay == "tcp" and ctx.options.rawtcp:
            flow.websocket = None

    def _report_refusal(self, flow: http.HTTPFlow, client_policy: ClientPolicy) -> None:
        """Chime refused a request that carried our headers: say who, where, with what, and why."""
        assert flow.response is not None
        host = flow.request.pretty_host
        sent = client_policy.headers
        app_keys, tenants = (sent.app_keys, sent.tenants) if sent else (None, None)
        hint = refusal_hint(client_policy, _address(flow.client_conn))
        body = (flow.response.get_content(strict=False) or b"")[:_BODY_EXCERPT]
        excerpt = body.decode("utf-8", "replace").strip()
        self.metrics.count_403(client_policy.name, host)
        logger.warning(
            f"chime: Chime answered 403 to {_peer(flow.client_conn)} for "
            f"{host}{flow.request.path} ({client_policy.describe()}); sent "
            f"{APP_KEYS_HEADER}: {app_keys}, {TENANTS_HEADER}: {tenants or '(not sent)'}; "
            f"likely: {hint}" + (f"; response: {excerpt!r}" if excerpt else ""),
            extra=fields(
                "chime_403",
                client=_peer(flow.client_conn),
                host=host,
                path=flow.request.path,
                network=client_policy.name,
                mode=client_policy.mode,
                app_keys=app_keys,
                tenants=tenants,
                hint=hint,
                response=excerpt or None,
            ),
        )


async def _judge_host(policy: Policy, host: str, port: int) -> Verdict:
    if parse_address(host) is not None:
        return Verdict(policy.table.lookup(host), host)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        # Behind a parent proxy only the parent may resolve external names. A Chime name we
        # cannot place is unsure and fails closed; any other name is not ours to break.
        if is_chime_name(host):
            raise
        return Verdict(None, f"{host} (not resolvable here)")
    addresses = [str(info[4][0]) for info in infos]
    for address in addresses:
        prefix = policy.table.lookup(address)
        if prefix is not None:
            return Verdict(prefix, address)
    return Verdict(None, ",".join(addresses) or None)


def _raw_relay(context: Context) -> layer.Layer:
    if context.client.transport_protocol == "tcp":
        return layers.TCPLayer(context, ignore=True)
    return layers.UDPLayer(context, ignore=True)


def _address(client: connection.Client) -> str:
    """The client's IP address, as networks are matched on."""
    return str(client.peername[0])


def _peer(client: connection.Client) -> str:
    host, port, *_ = client.peername
    return f"{host}:{port}"


def _host(server: connection.Server) -> str:
    if server.sni:
        return str(server.sni)
    if server.address:
        return f"{server.address[0]}:{server.address[1]}"
    return "?"
