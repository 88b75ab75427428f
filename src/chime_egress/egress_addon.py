"""mitmproxy glue: decide once per connection whether it is Chime-bound, and add the headers.

Only connections to a configured prefix are decrypted; every other connection is handed to a raw
TCP relay before mitmproxy parses a byte of it, and so is Chime media (see media.py). Every hook
fails closed: when anything goes wrong for a request that may be Chime-bound, that request is
answered with an error and never leaves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from weakref import WeakKeyDictionary, WeakSet

from mitmproxy import command, connection, ctx, exceptions, http
from mitmproxy.addonmanager import Loader
from mitmproxy.net.tls import starts_like_tls_record
from mitmproxy.proxy import layer, layers
from mitmproxy.proxy.layers.tls import parse_client_hello

from .errors import ConfigError
from .headers import CHIME_HEADER_NAMES
from .media import media_reason
from .policy import FilesSignature, Policy, files_signature, load_policy
from .ranges import Prefix, parse_address
from .stats import Counters

logger = logging.getLogger("chime_egress")

DEFAULT_ALLOWLIST = "config/allowlist.yaml"
DEFAULT_RELOAD_INTERVAL = "1"
WEBSOCKET_RELAYS = ("tcp", "websocket")
CHIME_DOMAIN = ".chime.aws"


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
        self.counters = Counters()
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
            self.policy = policy
            logger.info(f"chime: allowlist loaded from {path}: {policy.summary()}")

    def running(self) -> None:
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch_files())

    def done(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    @command.command("chime.stats")  # type: ignore[untyped-decorator]
    def stats(self) -> str:
        """What the Chime addon has done since start-up, as JSON."""
        return json.dumps(self.counters.as_dict(), sort_keys=True)

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
            self.counters.reloads_failed += 1
            if isinstance(error, ConfigError):
                logger.error(f"chime: reload failed; keeping the last good configuration:\n{error}")
            else:
                logger.exception("chime: reload failed; keeping the last good configuration")
            return False
        self.policy = policy
        self.counters.reloads_succeeded += 1
        logger.info(f"chime: allowlist reloaded from {path}: {policy.summary()}")
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
        client = _peer(context.client)
        target = f"{_host(server)} (SNI {sni})" if sni else _host(server)
        if verdict.is_chime and why_media is None:
            self.counters.connections_intercepted += 1
            logger.info(
                f"chime: intercepting {client} -> {target} "
                f"[{verdict.address}] matched {verdict.prefix}"
            )
            return
        if why_media is not None:
            self.counters.media_connections_passed_through += 1
            logger.info(
                f"chime: passing media through {client} -> {target} "
                f"[{verdict.address}] matched {verdict.prefix}: {why_media}"
            )
        else:
            self.counters.connections_passed_through += 1
            logger.debug(f"chime: passing through {client} -> {_host(server)} [{verdict.address}]")
        nextlayer.layer = (
            layers.TCPLayer(context, ignore=True)
            if context.client.transport_protocol == "tcp"
            else layers.UDPLayer(context, ignore=True)
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
            if verdict is None:
                # Not seen at the connection level: absolute-form plain HTTP, or a mode where
                # mitmproxy connects after the request arrives.
                verdict = await self._judge(flow.server_conn, flow.request.host)
                if verdict.is_chime:
                    logger.info(
                        f"chime: intercepting {_peer(flow.client_conn)} -> "
                        f"{flow.request.pretty_host} [{verdict.address}] matched {verdict.prefix}"
                    )
            if verdict.is_chime:
                self._inject(flow)
        except Exception:
            self.counters.requests_refused += 1
            logger.exception(
                f"chime: refusing request to {flow.request.pretty_host}: "
                "cannot decide or add the Chime headers"
            )
            flow.response = http.Response.make(
                502,
                b"chime-egress: the proxy could not apply its Chime policy to this request\n",
                {"Content-Type": "text/plain"},
            )

    def _inject(self, flow: http.HTTPFlow) -> None:
        policy = self.policy
        assert policy is not None
        headers = flow.request.headers
        for name in CHIME_HEADER_NAMES:
            if headers.pop(name, None) is not None:  # removes every copy, in any letter case
                self.counters.client_headers_stripped += 1
        is_h2 = flow.request.is_http2 or flow.request.is_http3
        for name, value in policy.http2_headers if is_h2 else policy.http1_headers:
            headers[name] = value
        self.counters.requests_injected += 1

    def response(self, flow: http.HTTPFlow) -> None:
        # The headers only matter on the upgrade request. Without a WebSocket record mitmproxy
        # relays the upgraded connection as plain bytes instead of parsing every frame.
        if flow.websocket is not None and self.websocket_relay == "tcp" and ctx.options.rawtcp:
            flow.websocket = None


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


def is_chime_name(host: str) -> bool:
    return host.lower().rstrip(".").endswith(CHIME_DOMAIN)


def _peer(client: connection.Client) -> str:
    host, port, *_ = client.peername
    return f"{host}:{port}"


def _host(server: connection.Server) -> str:
    if server.sni:
        return str(server.sni)
    if server.address:
        return f"{server.address[0]}:{server.address[1]}"
    return "?"
