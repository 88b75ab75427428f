"""Connecting upstream: to the one address judged, and never to the proxy's own host.

A destination judged before connecting (lazy strategy, absolute-form requests) is pinned to the
address judged by the router. Any other one named by a host name is pinned here, just before
mitmproxy connects (`server_connect`), to the resolver's first answer, and judged on it (the
peername) afterwards. mitmproxy would otherwise resolve the name again on its own, and a name
whose answer changes between lookups could move a connection judged "not Chime" onto Chime.

The address is then checked against `policy.local`: the proxy's own listeners, and loopback,
link-local and unspecified addresses unless `chime_local_destinations` allows them. A refused
connection is never opened (mitmproxy answers the client 502 with the reason).

A parent proxy (upstream mode) resolves names and connects itself: neither applies to the
destinations reached through it, whose final address the proxy cannot know; nor to the parent
proxy itself, or a reverse proxy's target, which the operator named in `--mode`.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable

from mitmproxy.proxy import server_hooks

from ..policy.local import LocalDestinations
from ..policy.ranges import IPAddress, parse_address
from .jsonlog import fields
from .metrics import Metrics
from .peers import client_peer
from .routing import Router, pin, resolve

logger = logging.getLogger("chime_egress")

Listeners = Callable[[], Iterable[tuple[str, int]]]


def is_local_address(address: IPAddress) -> bool:
    """Whether `address` belongs to this host: only a local address can be bound to."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(address), 0))
        except OSError:
            return False
    return True


class Connector:
    def __init__(self, router: Router, metrics: Metrics, listeners: Listeners) -> None:
        self.router = router
        self.metrics = metrics
        self.listeners = listeners
        self.local = LocalDestinations()

    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        server = data.server
        if server.error or server.address is None or server.via is not None:
            return
        if getattr(data.client.proxy_mode, "address", None) == server.address:
            return  # the parent proxy or the reverse proxy's target: the operator's choice
        host, port = str(server.address[0]), int(server.address[1])
        address = parse_address(host)
        if address is None:
            try:
                target = (await resolve(host, port))[0]
            except (OSError, IndexError) as error:
                # What mitmproxy's own lookup would have answered; nothing is refused here.
                server.error = f"cannot resolve {host}: {getattr(error, 'strerror', error)}"
                return
            address = parse_address(target)
            if address is None:  # pragma: no cover - a resolver answers addresses
                server.error = f"{host} resolved to {target!r}, not an address"
                return
            pin(server, target, data.client.sni)
        elif (name := self.router.tls_name(data.client, (host, port))) and server.sni == host:
            server.sni = name
        why = self.local.refusal(address, port, self.listeners(), is_local_address)
        if why is not None:
            self._refuse(data, why)

    def _refuse(self, data: server_hooks.ServerConnectionHookData, why: str) -> None:
        self.metrics.destinations_refused.inc()
        client = client_peer(data.client)
        logger.warning(
            f"chime: refusing {client} a connection: {why}",
            extra=fields("destination_refused", client=client, reason=why),
        )
        data.server.error = f"chime-egress: {why}"
