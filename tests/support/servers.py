"""Echo servers for the end-to-end tests, each on its own thread and asyncio loop.

An :class:`EchoServer` binds one loopback address (``127.0.0.2``, ``127.0.0.3``, ``::1``, ...) on a
free port and serves in one of these modes:

``tls``
    TLS with ALPN ``h2`` and ``http/1.1``. Every HTTP request (HTTP/1.1 or HTTP/2) is answered with
    ``status`` (200 unless overridden) and a JSON body ``{"method", "path", "http_version",
    "headers": [[name, value], ...], ...}`` whose headers are exactly as received: original letter
    case, order and duplicates (HTTP/2: the regular header fields in the order received; the
    pseudo-headers are reported apart). An HTTP/1.1 ``Upgrade: websocket`` request gets a real
    ``101`` handshake, then one text message holding the same JSON, then every message is echoed.
``plain``
    The same over plain TCP (HTTP/1.1 only).
``raw``
    A plain TCP echo: every byte received is recorded (per connection) and sent back unchanged.
``close``
    Accepts TCP connections and closes them at once (an upstream that hangs up).

Every request is also recorded in a thread-safe list (:meth:`EchoServer.requests`).
For an address where nothing listens at all, use :func:`free_port`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import h2.config  # type: ignore[import-untyped, unused-ignore]
import h2.connection  # type: ignore[import-untyped, unused-ignore]
import h2.events  # type: ignore[import-untyped, unused-ignore]
import h2.exceptions  # type: ignore[import-untyped, unused-ignore]

from .lifecycle import Service
from .tls import ServerCert

ServerMode = Literal["tls", "plain", "raw", "close"]
WsGreeting = Literal["separate", "coalesced", "delayed"]

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HEAD = 1 << 20


def _latin1(value: bytes) -> str:
    return value.decode("latin-1")


def format_authority(host: str, port: int) -> str:
    """``host:port``, with IPv6 literals in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def h2_server_connection() -> h2.connection.H2Connection:
    """A server-side HTTP/2 connection that takes fields exactly as they arrive, preface queued."""
    config = h2.config.H2Configuration(
        client_side=False,
        header_encoding=None,
        validate_inbound_headers=False,
        normalize_inbound_headers=False,
    )
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    return conn


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` where nothing listens (bound once, then released)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the server received it."""

    method: str
    path: str
    http_version: str
    headers: tuple[tuple[str, str], ...]
    connection_id: int
    tls: bool
    alpn: str | None
    websocket: bool = False
    body: bytes = b""
    raw_head: bytes | None = None
    """HTTP/1 only: the request line and header block, byte for byte (up to the blank line)."""
    pseudo_headers: tuple[tuple[str, str], ...] = ()
    """HTTP/2 only: the pseudo-header fields (``:method``, ``:path``, ...) as received."""

    def values(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), in the order received."""
        lname = name.lower()
        return [v for n, v in self.headers if n.lower() == lname]

    def names(self, name: str) -> list[str]:
        """The exact spelling of every field whose name matches ``name`` (case-insensitive)."""
        lname = name.lower()
        return [n for n, _ in self.headers if n.lower() == lname]

    def to_json(self) -> dict[str, Any]:
        """The body the server answers with (and the first WebSocket message)."""
        return {
            "method": self.method,
            "path": self.path,
            "http_version": self.http_version,
            "headers": [[n, v] for n, v in self.headers],
            "pseudo_headers": [[n, v] for n, v in self.pseudo_headers],
            "connection_id": self.connection_id,
            "tls": self.tls,
            "alpn": self.alpn,
            "websocket": self.websocket,
        }


@dataclass
class _Shared:
    """State shared between the server thread and the test thread (always under ``lock``)."""

    lock: threading.Condition = field(default_factory=threading.Condition)
    requests: list[ReceivedRequest] = field(default_factory=list)
    raw: dict[int, bytearray] = field(default_factory=dict)
    ws_messages: list[str | bytes] = field(default_factory=list)
    connections_opened: int = 0
    connections_open: int = 0


class EchoServer(Service):
    """A loopback echo server on a background thread; use as a context manager or start/stop."""

    def __init__(
        self,
        host: str,
        *,
        mode: ServerMode = "tls",
        cert: ServerCert | None = None,
        port: int = 0,
        status: int = 200,
        alpn: Sequence[str] = ("h2", "http/1.1"),
        name: str | None = None,
        ws_greeting: WsGreeting = "separate",
    ) -> None:
        if mode == "tls" and cert is None:
            raise ValueError("mode 'tls' needs a certificate")
        self.host = host
        self.mode: ServerMode = mode
        self.cert = cert
        self.status = status
        """HTTP status for every answer (also for WebSocket upgrades: non-200 refuses them)."""
        self.ws_greeting: WsGreeting = ws_greeting
        """How the first WebSocket message follows the 101: ``separate`` (its own write right
        after), ``coalesced`` (one write with the 101, so one TCP segment) or ``delayed`` (0.3 s
        later)."""
        self.name = name or f"{mode}@{format_authority(host, port)}"
        self._requested_port = port
        self._alpn = tuple(alpn)
        self._port: int | None = None
        self._shared = _Shared()
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._stopping: asyncio.Event | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> EchoServer:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(
            target=self._run, name=f"EchoServer {self.name}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"echo server {self.name} did not start")
        if self._startup_error is not None:
            raise RuntimeError(f"echo server {self.name} failed to start") from self._startup_error
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._stopping.set)
        thread.join(10)
        self._thread = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        try:
            ssl_ctx = None
            if self.mode == "tls":
                assert self.cert is not None
                ssl_ctx = self.cert.server_context(self._alpn)
            self._server = await asyncio.start_server(
                self._handle, self.host, self._requested_port, ssl=ssl_ctx, limit=_MAX_HEAD
            )
            self._port = self._server.sockets[0].getsockname()[1]
            self.name = f"{self.mode}@{format_authority(self.host, self.port)}"
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stopping.wait()
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- what the test sees ----------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def authority(self) -> str:
        """``host:port`` (``[::1]:port`` for IPv6), as in a CONNECT request or a URL."""
        return format_authority(self.host, self.port)

    def url(self, path: str = "/", scheme: str | None = None) -> str:
        if scheme is None:
            scheme = "https" if self.mode == "tls" else "http"
        return f"{scheme}://{self.authority}{path}"

    def requests(self) -> list[ReceivedRequest]:
        with self._shared.lock:
            return list(self._shared.requests)

    def last_request(self) -> ReceivedRequest:
        with self._shared.lock:
            if not self._shared.requests:
                raise AssertionError(f"{self.name} has received no request")
            return self._shared.requests[-1]

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[ReceivedRequest]:
        """Wait until at least ``count`` requests have arrived; return them all."""
        with self._shared.lock:
            if not self._shared.lock.wait_for(lambda: len(self._shared.requests) >= count, timeout):
                raise AssertionError(
                    f"{self.name}: expected {count} requests within {timeout}s, "
                    f"got {len(self._shared.requests)}"
                )
            return list(self._shared.requests)

    def raw_received(self) -> dict[int, bytes]:
        """``raw`` mode: all bytes received, per connection id."""
        with self._shared.lock:
            return {cid: bytes(data) for cid, data in self._shared.raw.items()}

    def ws_messages(self) -> list[str | bytes]:
        """Every WebSocket message received (all connections), in order."""
        with self._shared.lock:
            return list(self._shared.ws_messages)

    @property
    def connections_opened(self) -> int:
        with self._shared.lock:
            return self._shared.connections_opened

    @property
    def connections_open(self) -> int:
        with self._shared.lock:
            return self._shared.connections_open

    def clear(self) -> None:
        """Forget the requests, raw bytes and messages recorded so far."""
        with self._shared.lock:
            self._shared.requests.clear()
            self._shared.raw.clear()
            self._shared.ws_messages.clear()

    def drop_connections(self) -> None:
        """Abort every open connection (the listening socket stays open)."""
        loop = self._loop
        if loop is None:
            return

        def abort_all() -> None:
            for writer in list(self._writers):
                writer.transport.abort()

        loop.call_soon_threadsafe(abort_all)

    # --- connection handling ---------------------------------------------------------------

    def _record(self, request: ReceivedRequest) -> None:
        with self._shared.lock:
            self._shared.requests.append(request)
            self._shared.lock.notify_all()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn_id = next(self._ids)
        self._writers.add(writer)
        with self._shared.lock:
            self._shared.connections_opened += 1
            self._shared.connections_open += 1
        try:
            if self.mode == "close":
                writer.transport.abort()
                return
            if self.mode == "raw":
                await self._serve_raw(conn_id, reader, writer)
                return
            alpn: str | None = None
            ssl_object = writer.get_extra_info("ssl_object")
            if ssl_object is not None:
                alpn = ssl_object.selected_alpn_protocol()
            if alpn == "h2":
                await self._serve_h2(conn_id, reader, writer)
            else:
                await self._serve_http1(conn_id, alpn, reader, writer)
        except (
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
            h2.exceptions.ProtocolError,
        ):
            pass
        finally:
            self._writers.discard(writer)
            with self._shared.lock:
                self._shared.connections_open -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)

    async def _serve_raw(
        self, conn_id: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with self._shared.lock:
            self._shared.raw[conn_id] = bytearray()
        while data := await reader.read(65536):
            with self._shared.lock:
                self._shared.raw.setdefault(conn_id, bytearray()).extend(data)
                self._shared.lock.notify_all()
            writer.write(data)
            await writer.drain()

    # HTTP/1.x

    async def _serve_http1(
        self,
        conn_id: int,
        alpn: str | None,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        is_tls = self.mode == "tls"
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            lines = head[:-4].split(b"\r\n")
            try:
                method, target, version = lines[0].split(b" ", 2)
            except ValueError:
                await self._send_http1(writer, 400, b"bad request line\n", keep_alive=False)
                return
            headers: list[tuple[str, str]] = []
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers.append((_latin1(name), _latin1(value.strip(b" \t"))))
            lowered = {n.lower(): v for n, v in headers}
            body = await self._read_http1_body(reader, lowered)
            is_ws = (
                lowered.get("upgrade", "").lower() == "websocket"
                and "upgrade" in lowered.get("connection", "").lower()
            )
            request = ReceivedRequest(
                method=_latin1(method),
                path=_latin1(target),
                http_version=_latin1(version),
                headers=tuple(headers),
                connection_id=conn_id,
                tls=is_tls,
                alpn=alpn,
                websocket=is_ws,
                body=body,
                raw_head=bytes(head),
            )
            self._record(request)
            payload = json.dumps(request.to_json()).encode()
            status = self.status
            if is_ws and status in (101, 200):
                key = lowered.get("sec-websocket-key", "").encode("latin-1")
                accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())
                handshake = (
                    b"HTTP/1.1 101 Switching Protocols\r\n"
                    b"Upgrade: websocket\r\n"
                    b"Connection: Upgrade\r\n"
                    b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                )
                greeting = _ws_frame(0x1, payload)
                if self.ws_greeting == "coalesced":
                    writer.write(handshake + greeting)
                else:
                    writer.write(handshake)
                    await writer.drain()
                    if self.ws_greeting == "delayed":
                        await asyncio.sleep(0.3)
                    writer.write(greeting)
                await writer.drain()
                await self._serve_websocket(reader, writer)
                return
            keep_alive = (
                version == b"HTTP/1.1" and "close" not in lowered.get("connection", "").lower()
            )
            await self._send_http1(writer, status, payload, keep_alive=keep_alive)
            if not keep_alive:
                return

    @staticmethod
    async def _read_http1_body(reader: asyncio.StreamReader, lowered: dict[str, str]) -> bytes:
        if "chunked" in lowered.get("transfer-encoding", "").lower():
            body = bytearray()
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    # trailers, up to the blank line
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass
                    return bytes(body)
                body.extend(await reader.readexactly(size))
                await reader.readexactly(2)
        length = int(lowered.get("content-length", "0") or "0")
        return await reader.readexactly(length) if length else b""

    @staticmethod
    async def _send_http1(
        writer: asyncio.StreamWriter, status: int, payload: bytes, *, keep_alive: bool
    ) -> None:
        writer.write(
            f"HTTP/1.1 {status} Echo\r\n"
            f"Content-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n".encode()
            + payload
        )
        await writer.drain()

    # WebSocket (RFC 6455), server side: our frames are unmasked, the client's are masked.

    async def _serve_websocket(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        fragments = bytearray()
        fragment_opcode = 0
        while True:
            b1, b2 = await reader.readexactly(2)
            fin, opcode = bool(b1 & 0x80), b1 & 0x0F
            length = b2 & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await reader.readexactly(8))
            mask = await reader.readexactly(4) if b2 & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(await reader.readexactly(length)))
            if opcode == 0x8:  # close: echo the status code back and hang up
                await self._ws_send(writer, 0x8, data[:2])
                return
            if opcode == 0x9:  # ping
                await self._ws_send(writer, 0xA, data)
                continue
            if opcode == 0xA:  # pong
                continue
            if opcode in (0x1, 0x2):
                fragments = bytearray(data)
                fragment_opcode = opcode
            else:  # continuation
                fragments.extend(data)
            if not fin:
                continue
            message: str | bytes = (
                fragments.decode("utf-8") if fragment_opcode == 0x1 else bytes(fragments)
            )
            with self._shared.lock:
                self._shared.ws_messages.append(message)
                self._shared.lock.notify_all()
            await self._ws_send(writer, fragment_opcode, bytes(fragments))

    @staticmethod
    async def _ws_send(writer: asyncio.StreamWriter, opcode: int, payload: bytes) -> None:
        writer.write(_ws_frame(opcode, payload))
        await writer.drain()

    # HTTP/2

    async def _serve_h2(
        self, conn_id: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        conn = h2_server_connection()
        writer.write(conn.data_to_send())
        await writer.drain()
        heads: dict[int, list[tuple[bytes, bytes]]] = {}
        bodies: dict[int, bytearray] = {}
        pending: dict[int, bytes] = {}

        def flush(stream_id: int) -> None:
            data = pending.pop(stream_id, None)
            if data is None:
                return
            while data:
                window = min(
                    conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size
                )
                if window <= 0:
                    pending[stream_id] = data
                    return
                chunk, data = data[:window], data[window:]
                conn.send_data(stream_id, chunk, end_stream=not data)

        while data := await reader.read(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived) and event.stream_id is not None:
                    heads[event.stream_id] = [(bytes(n), bytes(v)) for n, v in event.headers or []]
                    bodies[event.stream_id] = bytearray()
                elif isinstance(event, h2.events.DataReceived) and event.stream_id is not None:
                    bodies.setdefault(event.stream_id, bytearray()).extend(event.data or b"")
                    conn.acknowledge_received_data(
                        event.flow_controlled_length or 0, event.stream_id
                    )
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id is not None:
                    sid = event.stream_id
                    request = self._h2_request(conn_id, heads.pop(sid, []), bodies.pop(sid, b""))
                    self._record(request)
                    payload = json.dumps(request.to_json()).encode()
                    conn.send_headers(
                        sid,
                        [
                            (b":status", str(self.status).encode()),
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()),
                        ],
                    )
                    pending[sid] = payload
                    flush(sid)
                elif isinstance(event, h2.events.WindowUpdated):
                    for sid in list(pending):
                        flush(sid)
                elif isinstance(event, h2.events.StreamReset) and event.stream_id is not None:
                    pending.pop(event.stream_id, None)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    writer.write(conn.data_to_send())
                    await writer.drain()
                    return
            writer.write(conn.data_to_send())
            await writer.drain()

    def _h2_request(
        self, conn_id: int, fields: list[tuple[bytes, bytes]], body: bytes | bytearray
    ) -> ReceivedRequest:
        pseudo = tuple((_latin1(n), _latin1(v)) for n, v in fields if n.startswith(b":"))
        regular = tuple((_latin1(n), _latin1(v)) for n, v in fields if not n.startswith(b":"))
        pmap = dict(pseudo)
        return ReceivedRequest(
            method=pmap.get(":method", ""),
            path=pmap.get(":path", ""),
            http_version="HTTP/2",
            headers=regular,
            connection_id=conn_id,
            tls=self.mode == "tls",
            alpn="h2",
            body=bytes(body),
            pseudo_headers=pseudo,
        )


def _ws_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final WebSocket frame (server to client)."""
    header = bytes([0x80 | opcode])
    if len(payload) < 126:
        header += bytes([len(payload)])
    elif len(payload) < 1 << 16:
        header += bytes([126]) + struct.pack("!H", len(payload))
    else:
        header += bytes([127]) + struct.pack("!Q", len(payload))
    return header + payload


def wait_until(
    predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.05
) -> bool:
    """Poll ``predicate()`` until it is truthy or ``timeout`` passes; return its last verdict."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(interval)
