"""An intercepted Chime connection speaks HTTP through mitmproxy's parser, or nothing.

Once a connection is decided Chime and intercepted, every request on it must pass the injector.
mitmproxy decides the layer inside a tunnel by itself: its "probably not HTTP" heuristic (a first
read of one byte, a leading CRLF, no ALPN) or a `tcp_hosts` match picks a raw TCP relay, which
would carry a client's own Chime headers to Chime untouched. So whatever mitmproxy chose, the
innermost layer of an intercepted TCP connection becomes its HTTP layer (which answers bytes that
are not HTTP with 400); a UDP one may only carry HTTP/3 or non-QUIC datagrams, which cannot carry
headers (media). Only media, recognised before interception (`routing.py`), is relayed raw.

mitmproxy's HTTP/1 parser raises (and logs a traceback) on a request trailer section; requests
read here end with a clean protocol error instead, logged in one line, and never leave whole.
"""

from __future__ import annotations

from typing import Any

import h11
from mitmproxy.proxy import commands, events, layer, layers
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.http import HTTPMode
from mitmproxy.proxy.layers.http._http1 import Http1Server
from mitmproxy.proxy.tunnel import TunnelLayer

TRAILERS_REFUSED = "HTTP/1.1 request trailers are refused by chime-egress"


def require_http(nextlayer: layer.NextLayer) -> bool:
    """Make the layer chosen for an intercepted connection end in HTTP; True if it was replaced."""
    parent: TunnelLayer | None = None
    child = nextlayer.layer
    while isinstance(child, TunnelLayer):  # TLS, DTLS and QUIC layers: look inside them
        parent, child = child, child.child_layer
    if child is None or isinstance(child, layers.HttpLayer | layer.NextLayer):
        if isinstance(child, layers.HttpLayer):
            refuse_http1_trailers(child)
        return False
    context = child.context if parent is not None else nextlayer.context
    if context.client.transport_protocol == "udp":
        if isinstance(child, layers.UDPLayer):
            return False  # not QUIC: datagrams that cannot carry HTTP headers
        replacement: layer.Layer = Refused(context)
    else:
        replacement = layers.HttpLayer(context, HTTPMode.transparent)
        refuse_http1_trailers(replacement)
    if parent is None:
        nextlayer.layer = replacement
    else:
        parent.child_layer = replacement
    return True


def refuse_http1_trailers(http_layer: layers.HttpLayer) -> None:
    """Have `http_layer` read HTTP/1 requests with a parser that refuses trailers cleanly.

    mitmproxy's HttpLayer keeps a client connection handler set before it starts (client replay
    uses the same seam); HTTP/2 and HTTP/3 clients are left to mitmproxy's own handlers.
    """
    context = http_layer.context
    if context.client.alpn in (None, b"", b"http/1.1", b"http/1.0"):
        http_layer.connections.setdefault(context.client, _Http1Server(context.fork()))


class _Http1Server(Http1Server):
    """mitmproxy's HTTP/1 request reader, ending a request that has trailers with an error."""

    def read_body(self, event: events.Event) -> layer.CommandGenerator[None]:
        if not isinstance(self.body_reader, _NoTrailers):
            self.body_reader = _NoTrailers(self.body_reader)  # type: ignore[assignment]
        yield from super().read_body(event)


class _NoTrailers:
    """h11's body reader, raising a protocol error where a trailer section would end a body."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader

    def __call__(self, buf: Any) -> Any:
        event = self._reader(buf)
        if isinstance(event, h11.EndOfMessage) and event.headers:
            raise h11.RemoteProtocolError(TRAILERS_REFUSED)
        return event

    def read_eof(self) -> Any:
        return self._reader.read_eof()


class Refused(layer.Layer):
    """Closes both ends: what an intercepted Chime connection gets when it cannot be HTTP."""

    def __init__(self, context: Context) -> None:
        super().__init__(context)

    def _handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
        if isinstance(event, events.Start):
            if self.context.server.connected:
                yield commands.CloseConnection(self.context.server)
            yield commands.CloseConnection(self.context.client)
