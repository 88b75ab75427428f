"""Routing a connection: decided once, by the address it goes to, before mitmproxy reads a byte.

Only connections to a configured prefix are decrypted; every other connection is handed to a raw
relay before mitmproxy parses any of it, and so is Chime media (`chime_egress.policy.media`), and
so is all Chime traffic of clients whose network is in observe mode (`observing.py`). When the
destination cannot be decided, mitmproxy's default (intercept) is left in place and every request
is judged again, failing closed (`injection.py`). An intercepted connection speaks HTTP through
mitmproxy's parser or nothing, whatever mitmproxy would have chosen (`http_only.py`).

The verdict is made on the address actually connected to: the peername once connected, or, when
a host name is judged before connecting, the one address judged, to which the connection is then
pinned (`pin`; `connecting.py` pins the others): a name whose answer changes between lookups
cannot move a connection judged "not Chime" onto a Chime address.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass
from weakref import WeakKeyDictionary, WeakSet

from mitmproxy import connection, ctx, http, tls
from mitmproxy.net.tls import starts_like_tls_record
from mitmproxy.proxy import layer, layers
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.tls import parse_client_hello

from ..policy.client_policy import ClientPolicy
from ..policy.compiled import Policy
from ..policy.media import media_reason
from ..policy.ranges import Prefix, is_chime_name, parse_address
from ..untrusted import printable
from .current import CurrentPolicy
from .http_only import refuse_http1_trailers, require_http
from .identity import Identities, IdentityUnavailable
from .jsonlog import fields
from .metrics import INTERCEPTED, MEDIA, OBSERVED, PASSED_THROUGH, REFUSED, Metrics
from .observing import Observer, raw_relay
from .peers import client_address, client_peer, server_name

logger = logging.getLogger("chime_egress")


@dataclass(frozen=True)
class Verdict:
    """Whether a server connection goes to Chime, and the evidence."""

    prefix: Prefix | None
    address: str | None  # the address that matched, or the one judged, or why none was
    connect_to: str | None = None  # the address judged for a host name, where it must connect

    @property
    def is_chime(self) -> bool:
        return self.prefix is not None


class _NeedMoreData(Exception):
    """The client's ClientHello has not fully arrived yet."""


class Router:
    """Chooses mitmproxy's layer for each new connection, and remembers each verdict."""

    def __init__(
        self, current: CurrentPolicy, metrics: Metrics, observer: Observer, identities: Identities
    ) -> None:
        self.current = current
        self.metrics = metrics
        self.observer = observer
        self.identities = identities
        self._verdicts: WeakKeyDictionary[connection.Server, Verdict] = WeakKeyDictionary()
        self._decided: WeakSet[connection.Server] = WeakSet()
        self._intercepted: WeakSet[connection.Server] = WeakSet()
        self._tls_names: WeakKeyDictionary[connection.Client, dict[tuple[str, int], str]] = (
            WeakKeyDictionary()
        )
        self._connect_alpn: WeakKeyDictionary[connection.Client, str] = WeakKeyDictionary()

    def client_policy(
        self, client: connection.Client, flow: http.HTTPFlow | None = None
    ) -> ClientPolicy:
        """Who is asking decides, else where from (identity.py); raises when it cannot."""
        return self.identities.client_policy(client, flow)

    def verdict_for(self, server: connection.Server) -> Verdict | None:
        """The verdict made when the connection was routed, if it was."""
        return self._verdicts.get(server)

    def http_connect(self, flow: http.HTTPFlow) -> None:
        # RFC 7639: Firefox names the tunnel's protocol (webrtc) before any TLS is spoken.
        if alpn := flow.request.headers.get("ALPN"):
            self._connect_alpn[flow.client_conn] = alpn

    async def next_layer(self, nextlayer: layer.NextLayer) -> None:
        context = nextlayer.context
        server = context.server
        if server.address is None:
            # No destination yet: the client's own connection to the proxy. Its absolute-form
            # requests are read by an HTTP layer too: have it refuse HTTP/1.1 trailers cleanly.
            self._ask_mitmproxy(nextlayer)
            if isinstance(nextlayer.layer, layers.HttpLayer):
                refuse_http1_trailers(nextlayer.layer)
            return
        if server in self._decided:
            # Decided already for this connection: this is the layer inside its TLS tunnel.
            if server in self._intercepted:
                self._require_http(nextlayer)
            return
        try:
            verdict = self._verdicts.get(server) or await self.judge(server)
            why_media, sni = self._inspect_tunnel(nextlayer) if verdict.is_chime else (None, None)
        except _NeedMoreData:
            nextlayer.layer = None  # ask again once more of the ClientHello has arrived
            return
        except Exception:
            # Unsure: intercept, and only as HTTP (whatever mitmproxy's heuristics would choose
            # for what is inside), so each request is judged again and fails closed if it still
            # cannot be decided; never a raw relay of bytes that may be Chime-bound.
            logger.exception(
                f"chime: cannot judge {client_peer(context.client)} -> "
                f"{printable(server_name(server))}; intercepting it, as HTTP only"
            )
            self._decided.add(server)
            self._intercepted.add(server)
            self._require_http(nextlayer)
            return
        self._decided.add(server)
        try:
            client_policy = self.client_policy(context.client)
        except IdentityUnavailable as error:
            if verdict.is_chime:  # left intercepted: injection.py refuses each request (502)
                self._log_unidentified(context, verdict, str(error))
                return
            client_policy = self.current.policy.clients.for_client(client_address(context.client))
        outcome = self._route(nextlayer, verdict, client_policy, sni, why_media)
        self.metrics.child(self.metrics.connections, client_policy.name, outcome).inc()
        if outcome == INTERCEPTED:
            self._intercepted.add(server)
            self._require_http(nextlayer)

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        """An intercepted Chime connection stays intercepted, whatever another addon decided.

        The addon is last in mitmproxy's chain, so this runs after every other addon's hook:
        one that set `ignore_connection` would have the TLS relayed raw, without the headers.
        """
        if data.ignore_connection and data.context.server in self._intercepted:
            data.ignore_connection = False
            logger.warning(
                f"chime: another addon asked to pass {client_peer(data.context.client)} -> "
                f"{printable(server_name(data.context.server))} through undecrypted; it is a "
                "Chime connection and is intercepted"
            )

    @staticmethod
    def _ask_mitmproxy(nextlayer: layer.NextLayer) -> None:
        """Scripts run before mitmproxy's own NextLayer addon: let it choose (TLS, the HTTP
        version, QUIC...) through its hook, so that its choice can be checked here."""
        if nextlayer.layer is None:
            builtin = ctx.master.addons.get("nextlayer")
            if builtin is not None:
                builtin.next_layer(nextlayer)

    def _require_http(self, nextlayer: layer.NextLayer) -> None:
        self._ask_mitmproxy(nextlayer)
        if require_http(nextlayer):
            logger.info(
                f"chime: {client_peer(nextlayer.context.client)} -> "
                f"{server_name(nextlayer.context.server)}: mitmproxy chose a raw relay for an "
                "intercepted Chime connection; it is read as HTTP instead (or closed)"
            )

    async def judge(self, server: connection.Server) -> Verdict:
        """Match the address actually connected to, else the one the connection will be pinned to.

        Remembered for the connection: its requests are injected by this verdict.
        """
        policy = self.current.policy
        if server.peername is not None and server.via is None:
            address = str(server.peername[0])
            verdict = Verdict(policy.table.lookup(address), address)
        else:
            assert server.address is not None
            host, port = server.address
            verdict = await _judge_host(policy, str(host), int(port))
            if verdict.connect_to is not None and server.via is None:
                pin(server, verdict.connect_to, context_sni=None)
        self._verdicts[server] = verdict
        return verdict

    async def judge_request(self, flow: http.HTTPFlow) -> Verdict:
        """Judge a request that was not routed as a connection (absolute-form, no CONNECT).

        Each such request is judged alone (one client connection may ask for many hosts) and,
        unless a parent proxy resolves names, sent to exactly the address judged: only where
        mitmproxy connects changes, not the Host header.
        """
        request = flow.request
        verdict = await _judge_host(self.current.policy, request.host, request.port)
        if verdict.connect_to is not None and flow.server_conn.via is None:
            if request.scheme == "https":
                # mitmproxy names the TLS server after the address it connects to: keep the name.
                names = self._tls_names.setdefault(flow.client_conn, {})
                names[(verdict.connect_to, request.port)] = request.host
            request.data.host = verdict.connect_to
        return verdict

    def tls_name(self, client: connection.Client, address: tuple[str, int]) -> str | None:
        """The host name of an https request that `judge_request` pinned to `address`."""
        names = self._tls_names.get(client)
        return names.get(address) if names is not None else None

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
                self._log(
                    logging.DEBUG, "connection_passed_through", context, verdict, client_policy
                )
            nextlayer.layer = raw_relay(context)
            return PASSED_THROUGH
        if client_policy.observing:
            self.observer.relay(
                nextlayer,
                address=verdict.address,
                prefix=str(verdict.prefix),
                sni=sni,
                network=client_policy.name,
                identity=self.identities.state(context.client).identity,
            )
            return OBSERVED
        if why_media is None:
            self._log(logging.INFO, "connection_intercepted", context, verdict, client_policy, sni)
            return INTERCEPTED
        self._log(
            logging.INFO, "media_passed_through", context, verdict, client_policy, sni, why_media
        )
        nextlayer.layer = raw_relay(context)
        return MEDIA

    def _log(
        self,
        level: int,
        event: str,
        context: Context,
        verdict: Verdict,
        client_policy: ClientPolicy,
        sni: str | None = None,
        why_media: str | None = None,
    ) -> None:
        client, host = client_peer(context.client), server_name(context.server)
        # The host and the server name are the client's words: shown escaped, kept as sent in
        # the record's fields.
        shown_host = printable(host)
        target = f"{shown_host} (SNI {printable(sni)})" if sni else shown_host
        if event == "connection_intercepted":
            text = f"intercepting {client} -> {target} [{verdict.address}] matched "
            text += f"{verdict.prefix} ({client_policy.label()})"
        elif event == "media_passed_through":
            text = f"passing media through {client} -> {target} [{verdict.address}] matched "
            text += f"{verdict.prefix}: {why_media}"
        else:
            text = f"passing through {client} -> {shown_host} [{verdict.address}]"
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
                **self.identities.log_fields(context.client),
            ),
        )

    def _log_unidentified(self, context: Context, verdict: Verdict, why: str) -> None:
        self.metrics.child(self.metrics.connections, "unidentified", REFUSED).inc()
        client, host = client_peer(context.client), server_name(context.server)
        logger.warning(
            f"chime: refusing {client} -> {host} [{verdict.address}] matched {verdict.prefix}: "
            f"who is asking decides its Chime policy, and {why}",
            extra=fields(
                "connection_refused",
                client=client,
                host=host,
                destination=verdict.address,
                prefix=str(verdict.prefix),
                reason=why,
            ),
        )

    def _inspect_tunnel(self, nextlayer: layer.NextLayer) -> tuple[str | None, str | None]:
        """(why this Chime tunnel is media to pass through or None, the TLS server name)."""
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
            media_hosts=self.current.policy.media_hosts,
        )
        return why, sni


def pin(server: connection.Server, address: str, context_sni: str | None) -> None:
    """Make mitmproxy connect to `address` instead of resolving the server's host name again.

    The name stays the TLS server name, as mitmproxy would have sent it (the client's own SNI
    first, `context_sni`, when it is known).
    """
    assert server.address is not None
    host, port = server.address
    if server.sni is None:
        server.sni = context_sni or str(host)
    server.address = (address, port)


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def _judge_host(policy: Policy, host: str, port: int) -> Verdict:
    if parse_address(host) is not None:
        return Verdict(policy.table.lookup(host), host)
    try:
        addresses = await resolve(host, port)
    except socket.gaierror:
        # Behind a parent proxy only the parent may resolve external names. A Chime name we
        # cannot place is unsure and fails closed; any other name is not ours to break.
        if is_chime_name(host):
            raise
        return Verdict(None, f"{host} (not resolvable here)")
    if not addresses:
        raise ValueError(f"{host} resolves to no address")
    # A name with any Chime address is Chime, and connects there; else to the first address.
    for address in addresses:
        prefix = policy.table.lookup(address)
        if prefix is not None:
            return Verdict(prefix, address, connect_to=address)
    return Verdict(None, addresses[0], connect_to=addresses[0])
