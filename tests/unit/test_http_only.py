"""proxy/http_only.py on mitmproxy's layer objects: what an intercepted connection may become."""

from __future__ import annotations

from mitmproxy import options
from mitmproxy.proxy import layer, layers
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.http import HTTPMode
from mitmproxy.test import tflow

from chime_egress.proxy.http_only import Refused, require_http


def next_layer(transport: str = "tcp", alpn: bytes | None = None) -> layer.NextLayer:
    client = tflow.tclient_conn()
    client.transport_protocol = transport  # type: ignore[assignment]
    client.alpn = alpn
    context = Context(client, options.Options())
    context.server.address = ("99.77.130.1", 443)
    return layer.NextLayer(context)


def test_a_raw_tcp_relay_becomes_mitmproxys_http_layer() -> None:
    nextlayer = next_layer()
    nextlayer.layer = layers.TCPLayer(nextlayer.context)
    assert require_http(nextlayer) is True
    assert isinstance(nextlayer.layer, layers.HttpLayer)
    assert nextlayer.layer.mode is HTTPMode.transparent


def test_a_raw_relay_inside_tls_is_replaced_and_the_tls_kept() -> None:
    nextlayer = next_layer()
    server_tls = layers.ServerTLSLayer(nextlayer.context)
    client_tls = layers.ClientTLSLayer(nextlayer.context)
    server_tls.child_layer = client_tls
    client_tls.child_layer = layers.TCPLayer(nextlayer.context)
    nextlayer.layer = server_tls
    assert require_http(nextlayer) is True
    assert nextlayer.layer is server_tls and server_tls.child_layer is client_tls
    assert isinstance(client_tls.child_layer, layers.HttpLayer)


def test_http_and_undecided_layers_are_kept() -> None:
    nextlayer = next_layer()
    http = layers.HttpLayer(nextlayer.context, HTTPMode.transparent)
    nextlayer.layer = http
    assert require_http(nextlayer) is False and nextlayer.layer is http
    undecided = next_layer()
    assert require_http(undecided) is False and undecided.layer is None


def test_http1_clients_get_the_trailer_refusing_reader_and_http2_clients_mitmproxys() -> None:
    for alpn, guarded in ((None, True), (b"http/1.1", True), (b"h2", False)):
        nextlayer = next_layer(alpn=alpn)
        nextlayer.layer = layers.TCPLayer(nextlayer.context)
        require_http(nextlayer)
        assert isinstance(nextlayer.layer, layers.HttpLayer)
        assert (nextlayer.context.client in nextlayer.layer.connections) is guarded


def test_udp_may_carry_datagrams_but_not_raw_quic() -> None:
    datagrams = next_layer("udp")
    udp = layers.UDPLayer(datagrams.context)
    datagrams.layer = udp
    assert require_http(datagrams) is False and datagrams.layer is udp
    quic = next_layer("udp")
    quic.layer = layers.RawQuicLayer(quic.context, force_raw=True)
    assert require_http(quic) is True
    assert isinstance(quic.layer, Refused)
