"""Observe mode: Chime connections of observed clients relayed untouched, counted, and logged.

Nothing is decrypted and nothing added. One record per connection is logged when its client
leaves. An observed connection must not outlive its client's observe mode: when a reload puts
the client in enforce mode, the relay closes the connection at its next data, so the client's
reconnection is intercepted, rather than carry a meeting on without the headers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from weakref import WeakKeyDictionary

from mitmproxy import connection
from mitmproxy.proxy import commands, events, layer, layers
from mitmproxy.proxy.context import Context

from ..policy.compiled import Policy
from ..policy.identity import Identity
from ..untrusted import printable
from .current import CurrentPolicy
from .jsonlog import fields
from .metrics import Metrics
from .peers import client_address, client_peer, server_name

logger = logging.getLogger("chime_egress")


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
    identity: Identity | None = None  # who asked, when known: a reload re-chooses by it


class ObservingRelay(layers.TCPLayer):
    """mitmproxy's raw TCP relay, counting the bytes it relays for the observe-mode record."""

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


def raw_relay(context: Context) -> layer.Layer:
    """mitmproxy's relay that passes a connection's bytes on without reading them."""
    if context.client.transport_protocol == "tcp":
        return layers.TCPLayer(context, ignore=True)
    return layers.UDPLayer(context, ignore=True)


class Observer:
    """Relays observed connections and logs their records."""

    def __init__(self, current: CurrentPolicy, metrics: Metrics) -> None:
        self.current = current
        self.metrics = metrics
        self._observations: WeakKeyDictionary[connection.Client, Observation] = WeakKeyDictionary()

    def relay(
        self,
        nextlayer: layer.NextLayer,
        *,
        address: str | None,
        prefix: str,
        sni: str | None,
        network: str,
        identity: Identity | None = None,
    ) -> None:
        """Relay a Chime connection untouched; its record is logged when the client leaves."""
        context = nextlayer.context
        observation = Observation(
            client=client_peer(context.client),
            client_address=client_address(context.client),
            policy=self.current.policy,
            host=server_name(context.server),
            sni=sni,
            address=address,
            prefix=prefix,
            network=network,
            started=time.monotonic(),
            identity=identity,
        )
        if context.client.transport_protocol == "tcp":
            self._observations[context.client] = observation
            nextlayer.layer = ObservingRelay(context, observation, self._still_observed)
        else:
            # mitmproxy's UDP relay has no per-datagram hook to count or stop with; UDP reaches
            # mitmproxy only in transparent and WireGuard modes, where Chime's HTTP is TCP.
            self._log(observation, counted=False)
            nextlayer.layer = raw_relay(context)

    def client_disconnected(self, client: connection.Client) -> None:
        observation = self._observations.pop(client, None)
        if observation is not None:
            self._log(observation, counted=True)

    def _still_observed(self, observation: Observation) -> bool:
        if not self.current.loaded or self.current.policy is observation.policy:
            return True
        policy = self.current.policy
        observation.policy = policy
        client_policy = policy.clients.select(observation.identity, observation.client_address)
        if client_policy.observing:
            return True
        logger.info(
            f"chime: closing observed connection {observation.client} -> "
            f"{printable(observation.host)}: "
            f"its client is now in {client_policy.label()}, so it reconnects through "
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

    def _log(self, observation: Observation, *, counted: bool) -> None:
        seconds = sent = received = None
        amounts = " (udp)"
        if counted:
            seconds = round(time.monotonic() - observation.started, 3)
            sent, received = observation.bytes_from_client, observation.bytes_from_server
            bytes_counter, network = self.metrics.observed_bytes, observation.network
            self.metrics.child(bytes_counter, network, "client").inc(sent)
            self.metrics.child(bytes_counter, network, "server").inc(received)
            amounts = f": {sent} bytes sent, {received} received in {seconds}s"
        sni = f" (SNI {printable(observation.sni)})" if observation.sni else ""
        logger.info(
            f"chime: observed {observation.client} -> {printable(observation.host)}{sni} "
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
