"""How the proxy names the two ends of a connection in its log lines and records."""

from __future__ import annotations

from mitmproxy import connection


def client_address(client: connection.Client) -> str:
    """The client's IP address, as networks are matched on."""
    return str(client.peername[0])


def client_peer(client: connection.Client) -> str:
    host, port, *_ = client.peername
    return f"{host}:{port}"


def server_name(server: connection.Server) -> str:
    """The TLS server name if the client sent one, else the address it asked for."""
    if server.sni:
        return str(server.sni)
    if server.address:
        return f"{server.address[0]}:{server.address[1]}"
    return "?"
