"""After a WebSocket upgrade: the headers went on the upgrade request; relay bytes, keep nothing.

A meeting's signaling WebSocket lives for hours, and with audio over WebSocket carries about 100
messages a second. mitmproxy would parse every frame (its WebSocket layer), or, once told there
is no WebSocket, relay the upgraded connection through a TCP layer that still records each
message in a flow for the life of the connection (memory growing with every message) and runs
every addon's `tcp_message` hook for each one (the dumper prints a line for each): most of the
CPU a relayed message cost (bench/bench_participants.py, BENCHMARKS.md). Nothing after the
upgrade can carry headers, so none of that is needed.

mitmproxy's TCP layer skips the flow, its record and its hooks wherever the flow is falsy
(`if self.flow:`, in mitmproxy 11 and 12 alike). The upgraded connection's flow is given a class
that says so when mitmproxy announces it (`tcp_start`): from then on the layer relays bytes as it
does for connections it passes through. Should a mitmproxy ever test the flow otherwise, the
relay goes back to recording and hooking: slower, never wrong.
"""

from __future__ import annotations

from weakref import WeakSet

from mitmproxy import connection, ctx, http, tcp

from .options import DEFAULT_WEBSOCKET_RELAY


class UnrecordedTCPFlow(tcp.TCPFlow):
    """A relayed upgrade's flow, which mitmproxy's TCP layer treats as no flow at all."""

    def __bool__(self) -> bool:
        return False


class UpgradeRelay:
    def __init__(self) -> None:
        self.relay = DEFAULT_WEBSOCKET_RELAY  # the addon sets chime_websocket_relay's value
        self._upgraded: WeakSet[connection.Client] = WeakSet()

    def response(self, flow: http.HTTPFlow) -> None:
        """A WebSocket upgrade of an intercepted connection: relay it as bytes (option 'tcp')."""
        if flow.websocket is not None and self.relay == "tcp" and ctx.options.rawtcp:
            flow.websocket = None  # mitmproxy now hands the connection to its TCP layer
            self._upgraded.add(flow.client_conn)

    def tcp_start(self, flow: tcp.TCPFlow) -> None:
        if flow.client_conn in self._upgraded:
            self._upgraded.discard(flow.client_conn)
            flow.__class__ = UnrecordedTCPFlow
