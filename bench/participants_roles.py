"""The child processes of bench_participants.py: echo server, floor relay, load generator.

    python bench/participants_roles.py server|floor|generate [asyncio|uvloop]

Each reads its settings as one JSON line on stdin, answers on stdout with JSON lines, takes
further commands as JSON lines, and exits when stdin closes. Running them in their own
processes keeps the generator, the server and the relay from sharing one event loop (and one
core) with each other, and lets the orchestrator measure each one's CPU from /proc.

server    TLS on 127.0.0.2 (SO_REUSEPORT, so several processes share the ports):
          - WebSocket: answers the upgrade with 101 and `X-Bench-Chime: ok|none|wrong` (did the
            upgrade carry exactly the expected Chime headers, none of them, or something else),
            echoes every binary message, and for `?rate=R&size=S` also sends its own stream of
            R messages of S bytes a second (audio from the other participants);
          - media: a TLS echo of raw bytes (TURN/TLS; its certificate names the media host).
floor     the least a Python relay can do for the proxy's work: accepts CONNECT, opens TLS to the
          upstream (eagerly, as mitmproxy does), answers 200, terminates the client's TLS with a
          certificate of the proxy's CA, adds the two headers to the first request, then copies
          bytes both ways. Connections to the media port are copied raw (the floor knows the
          port; the proxy has to read the ClientHello to decide).
generate  N participants (a share of the run's), joined with a concurrency limit, then paced.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
from collections import Counter
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from participants_generator import generate
from participants_wire import (
    HANDSHAKE_TIMEOUT,
    MAX_BACKLOG,
    OP_BINARY,
    OP_CLOSE,
    SERVER_MESSAGE,
    Control,
    Link,
    Pacer,
    accept_key,
    frame,
    parse_head,
    raise_fd_limit,
    relay,
    stamped,
    take_frames,
)

APP_KEYS_HEADER, TENANTS_HEADER = "x-amzn-chime-app-keys", "x-amzn-chime-tenants"


# ---------------------------------------------------------------------------------------------
# Server


class ServerState:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.expected = {
            APP_KEYS_HEADER: [settings["app_keys"]],
            TENANTS_HEADER: [settings["tenants"]],
        }
        self.counts: Counter[str] = Counter()
        self.streams: dict[tuple[float, int], Pacer[WebSocketServerLink]] = {}
        self.serial = 0

    def verdict(self, fields: dict[str, list[str]]) -> str:
        found = {name: fields[name] for name in self.expected if name in fields}
        if not found and not any(name.startswith("x-amzn-chime-") for name in fields):
            return "none"
        return "ok" if found == self.expected else "wrong"

    def stream(self, rate: float, size: int) -> Pacer[WebSocketServerLink]:
        """The one pacer sending every connection's stream of `rate` messages of `size` bytes."""
        key = (rate, size)
        if key not in self.streams:

            def send(link: WebSocketServerLink) -> None:
                if link.open and link.backlog() < MAX_BACKLOG:
                    link.write(frame(stamped(SERVER_MESSAGE, size), masked=False))
                    self.counts["stream_sent"] += 1
                else:
                    self.counts["stream_skipped"] += 1

            pacer: Pacer[WebSocketServerLink] = Pacer(1 / rate, send)
            pacer.start(asyncio.get_running_loop().time())
            self.streams[key] = pacer
        return self.streams[key]


class WebSocketServerLink(Link):
    def __init__(self, state: ServerState) -> None:
        super().__init__()
        self.state = state
        self.stream: Pacer[WebSocketServerLink] | None = None
        self.serial = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.state.counts["connections"] += 1
        asyncio.get_running_loop().create_task(self.handshake())

    async def handshake(self) -> None:
        try:
            head = await asyncio.wait_for(self.read_head(), HANDSHAKE_TIMEOUT)
        except (TimeoutError, ConnectionError, ValueError):
            self.state.counts["handshake_failed"] += 1
            self.close()
            return
        request_line, fields = parse_head(head)
        key = fields.get("sec-websocket-key", [""])[0].encode()
        if not key or fields.get("upgrade", [""])[0].lower() != "websocket":
            self.state.counts["not_websocket"] += 1
            self.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self.close()
            return
        verdict = self.state.verdict(fields)
        self.state.counts[f"upgrades_headers_{verdict}"] += 1
        self.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key) + b"\r\n"
            b"X-Bench-Chime: " + verdict.encode() + b"\r\n\r\n"
        )
        query = parse_qs(urlsplit(request_line.split(" ")[1]).query)
        rate = float(query.get("rate", ["0"])[0])
        self.switch(self.on_frames)
        if rate > 0:
            self.stream = self.state.stream(rate, int(query.get("size", ["160"])[0]))
            self.state.serial += 1
            self.serial = self.state.serial
            self.stream.add(self, self.serial)

    def on_frames(self, data: bytes) -> None:
        self.buffer += data
        echoes = []
        for opcode, payload in take_frames(self.buffer):
            if opcode == OP_BINARY:
                echoes.append(frame(payload, masked=False))
            elif opcode == OP_CLOSE:
                echoes.append(frame(payload[:2], masked=False, opcode=OP_CLOSE))
                self.write(b"".join(echoes))
                self.close()
                return
        if echoes:
            self.state.counts["echoed"] += len(echoes)
            self.write(b"".join(echoes))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.stream is not None:
            self.stream.remove(self, self.serial)


class MediaServerLink(Link):
    """TURN/TLS stand-in: echoes the bytes."""

    def __init__(self, state: ServerState) -> None:
        super().__init__()
        self.state = state

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.state.counts["media_connections"] += 1
        self.switch(self.echo)

    def echo(self, data: bytes) -> None:
        self.state.counts["media_bytes"] += len(data)
        self.write(data)


def server_context(cert: str, key: str, alpn: list[str]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


async def serve(control: Control, settings: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    state = ServerState(settings)
    ws = await loop.create_server(
        lambda: WebSocketServerLink(state),
        settings["host"],
        settings["ws_port"],
        ssl=server_context(settings["cert"], settings["key"], ["http/1.1"]),
        backlog=4096,
        reuse_port=True,
    )
    media = await loop.create_server(
        lambda: MediaServerLink(state),
        settings["host"],
        settings["media_port"],
        ssl=server_context(settings["cert"], settings["key"], []),
        backlog=4096,
        reuse_port=True,
    )
    control.say(
        {
            "ws_port": ws.sockets[0].getsockname()[1],
            "media_port": media.sockets[0].getsockname()[1],
        }
    )
    while (command := await control.read()) is not None:
        if command.get("cmd") == "stats":
            control.say(dict(state.counts))


# ---------------------------------------------------------------------------------------------
# Floor relay


class FloorLink(Link):
    def __init__(self, settings: dict[str, Any], contexts: tuple[ssl.SSLContext, ...]) -> None:
        super().__init__()
        self.settings = settings
        self.contexts = contexts
        self.headers = (
            f"X-Amzn-Chime-App-Keys: {settings['app_keys']}\r\n"
            f"X-Amzn-Chime-Tenants: {settings['tenants']}\r\n"
        ).encode()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        asyncio.get_running_loop().create_task(self.serve())

    async def serve(self) -> None:
        try:
            await asyncio.wait_for(self.tunnel(), HANDSHAKE_TIMEOUT)
        except Exception:
            self.close()

    async def tunnel(self) -> None:
        loop = asyncio.get_running_loop()
        for_client, for_upstream = self.contexts
        request_line, _ = parse_head(await self.read_head())
        method, authority, _ = request_line.split(" ", 2)
        host, _, port_text = authority.rpartition(":")
        if method != "CONNECT":
            raise ValueError(f"not a CONNECT: {request_line!r}")
        media = int(port_text) == self.settings["media_port"]
        _, upstream = await loop.create_connection(
            Link,
            host,
            int(port_text),
            ssl=None if media else for_upstream,
            server_hostname=None if media else host,
        )
        try:
            self.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if not media:
                assert self.transport is not None
                tls = await loop.start_tls(self.transport, self, for_client, server_side=True)
                self.transport = cast(asyncio.Transport, tls)
                head = await self.read_head()
                line_end = head.index(b"\r\n") + 2
                upstream.write(head[:line_end] + self.headers + head[line_end:])
        except BaseException:
            upstream.close()
            raise
        relay(self, upstream)


async def floor(control: Control, settings: dict[str, Any]) -> None:
    for_client = server_context(settings["cert"], settings["key"], ["http/1.1"])
    for_upstream = ssl.create_default_context(cafile=settings["upstream_ca"])
    for_upstream.set_alpn_protocols(["http/1.1"])
    server = await asyncio.get_running_loop().create_server(
        lambda: FloorLink(settings, (for_client, for_upstream)),
        settings["listen_host"],
        0,
        backlog=4096,
    )
    control.say({"port": server.sockets[0].getsockname()[1]})
    while await control.read() is not None:
        pass


ROLES = {"server": serve, "floor": floor, "generate": generate}


async def main(role: str) -> None:
    control = Control()
    await control.open()
    settings = await control.read()
    if settings is None:
        return
    await ROLES[role](control, settings)


if __name__ == "__main__":
    raise_fd_limit()
    role, loop = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "asyncio"
    factory = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main(role))
