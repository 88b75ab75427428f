"""mitmproxy glue: decide per connection whether it is Chime-bound, and add the headers.

Only connections to a configured prefix are decrypted; every other connection is handed to a raw
TCP relay before mitmproxy parses a byte of it. Every hook fails closed: if anything goes wrong
for a request that may be Chime-bound, that request is answered with an error and never leaves.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from weakref import WeakKeyDictionary

from mitmproxy import connection, ctx, exceptions, http
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy import layer, layers

from .errors import ConfigError
from .headers import CHIME_HEADER_NAMES
from .policy import FilesSignature, Policy, files_signature, load_policy
from .ranges import Prefix, parse_address

logger = logging.getLogger("chime_egress")

DEFAULT_ALLOWLIST = "config/allowlist.yaml"
DEFAULT_RELOAD_INTERVAL = "1"


@dataclass(frozen=True)
class Verdict:
    """Whether a server connection goes to Chime, and the evidence."""

    prefix: Prefix | None
    address: str | None  # the address that matched, or the one we judged

    @property
    def is_chime(self) -> bool:
        return self.prefix is not None


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
        self.reload_interval = float(DEFAULT_RELOAD_INTERVAL)
        self._verdicts: WeakKeyDictionary[connection.Server, Verdict] = WeakKeyDictionary()
        self._watcher: asyncio.Task[None] | None = None

    def load(self, loader: Loader) -> None:
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

    def configure(self, updated: set[str]) -> None:
        if "chime_reload_interval" in updated:
            try:
                self.reload_interval = parse_reload_interval(ctx.options.chime_reload_interval)
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

    async def _watch_files(self) -> None:
        """Reload on edits; a change is read once it has held still for one interval."""
        seen: FilesSignature | None = None
        loaded: tuple[object, FilesSignature] | None = None
        while True:
            await asyncio.sleep(self.reload_interval)
            policy = self.policy
            if policy is None:
                continue
            current = files_signature(policy.sources)
            if loaded is None or loaded[0] is not policy:
                # A new policy (start-up, or the option changed): it was read from these files.
                loaded = (policy, current)
                seen = current
                continue
            if current == loaded[1] or current != seen:
                seen = current
                continue
            await self._reload(policy, current)
            loaded = (self.policy, current) if self.policy is not None else None
            seen = current

    async def _reload(self, old: Policy, signature: FilesSignature) -> None:
        path = old.allowlist.path
        try:
            policy = await asyncio.to_thread(load_policy, path)
        except ConfigError as error:
            logger.error(f"chime: reload failed; keeping the last good configuration:\n{error}")
            return
        except Exception:
            logger.exception("chime: reload failed; keeping the last good configuration")
            return
        if files_signature(policy.sources) != signature and policy.sources == old.sources:
            return  # written to while we read it: take it on the next round
        self.policy = policy
        logger.info(f"chime: allowlist reloaded from {path}: {policy.summary()}")

    async def next_layer(self, nextlayer: layer.NextLayer) -> None:
        context = nextlayer.context
        server = context.server
        if server.address is None or server in self._verdicts:
            # No destination yet (the client's own connection to the proxy), or already decided
            # for this connection (the layer inside an intercepted TLS tunnel).
            return
        try:
            verdict = await self._judge(context.client, server)
        except Exception:
            # Unsure: intercept (mitmproxy's default). Requests re-judge and fail closed.
            logger.exception(
                f"chime: cannot judge {_peer(context.client)} -> {_host_of(server, None)}"
            )
            return
        if verdict.is_chime:
            return
        transport = context.client.transport_protocol
        nextlayer.layer = (
            layers.TCPLayer(context, ignore=True)
            if transport == "tcp"
            else layers.UDPLayer(context, ignore=True)
        )

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        try:
            verdict = self._verdicts.get(flow.server_conn)
            if verdict is None:
                verdict = await self._judge(flow.client_conn, flow.server_conn, flow.request.host)
            if verdict.is_chime:
                self._inject(flow)
        except Exception:
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
            headers.pop(name, None)  # removes every copy, in any letter case
        is_h2 = flow.request.is_http2 or flow.request.is_http3
        for name, value in policy.http2_headers if is_h2 else policy.http1_headers:
            headers[name] = value

    async def _judge(
        self, client: connection.Client, server: connection.Server, host: str | None = None
    ) -> Verdict:
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
            verdict = await self._judge_host(policy, str(target_host), int(port or 443))
        self._verdicts[server] = verdict
        if verdict.is_chime:
            logger.info(
                f"chime: intercepting {_peer(client)} -> {_host_of(server, host)} "
                f"[{verdict.address}] matched {verdict.prefix}"
            )
        else:
            logger.debug(
                f"chime: passing through {_peer(client)} -> {_host_of(server, host)} "
                f"[{verdict.address}]"
            )
        return verdict

    @staticmethod
    async def _judge_host(policy: Policy, host: str, port: int) -> Verdict:
        if parse_address(host) is not None:
            return Verdict(policy.table.lookup(host), host)
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = [str(info[4][0]) for info in infos]
        for address in addresses:
            prefix = policy.table.lookup(address)
            if prefix is not None:
                return Verdict(prefix, address)
        return Verdict(None, ",".join(addresses) or None)


def _peer(client: connection.Client) -> str:
    host, port, *_ = client.peername
    return f"{host}:{port}"


def _host_of(server: connection.Server, host: str | None) -> str:
    if server.sni:
        return server.sni
    if server.address:
        return f"{server.address[0]}:{server.address[1]}"
    return host or "?"
