"""A raw recording upstream standing in for Chime, and the parsers that judge what reached it.

:class:`RecordingServer` binds a loopback address (``127.0.0.2``: a Chime address in the tests)
and keeps, per connection, every byte that arrives (HTTP/1, plain or inside TLS), or every header
and trailer block of every stream (HTTP/2, decoded with the ``h2`` library, nothing validated).
It answers each HTTP/1 request that h11 can read with ``200`` so clients and the proxy go on, and
stops answering (while still recording) at the first one h11 cannot read.

The judges read recorded HTTP/1 bytes the way real servers would: h11 (strict), Python's
``http.client.parse_headers`` (what ``http.server`` uses: its e-mail parser also ends lines on a
bare CR), and Node's own HTTP server with its lenient parser (``insecureHTTPParser``). A request is
good only if every judge that reads it sees exactly one line of each Chime header, with the
configured value, and nothing else it would take for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.message
import http.client
import io
import itertools
import json
import re
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h2.events  # type: ignore[import-untyped, unused-ignore]
import h2.exceptions  # type: ignore[import-untyped, unused-ignore]
import h11

from .config import APP_KEYS_HEADER, TENANTS_HEADER
from .lifecycle import Service
from .proxy import clean_env
from .servers import format_authority, h2_server_connection
from .tls import ServerCert, TestCA

LLHTTP_JUDGE = Path(__file__).with_name("llhttp_judge.js")
CHIME_TEST_ADDRESS = "127.0.0.2"  # made a Chime address by the tests' allowlists
Fields = tuple[tuple[str, str], ...]
CHIME_NAMES = (APP_KEYS_HEADER.lower(), TENANTS_HEADER.lower())
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass
class Arrival:
    """What arrived on one upstream connection."""

    connection_id: int
    alpn: str | None
    raw: bytearray = field(default_factory=bytearray)
    """HTTP/1: every byte received (decrypted), in order."""
    h2_blocks: list[tuple[str, Fields]] = field(default_factory=list)
    """HTTP/2: ("headers" | "trailers", fields) for every block received, in order."""


class RecordingServer(Service):
    """A recording upstream on ``host``; ``cert`` makes it TLS (ALPN ``alpn``), else plain."""

    def __init__(
        self,
        host: str,
        *,
        cert: ServerCert | None = None,
        alpn: Sequence[str] = ("http/1.1",),
        name: str = "recorder",
        port: int = 0,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.cert = cert
        self.alpn = tuple(alpn)
        self.name = name
        self._port: int | None = None
        self._arrivals: list[Arrival] = []
        self._lock = threading.Condition()
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None

    @property
    def port(self) -> int:
        assert self._port is not None, "not started"
        return self._port

    @property
    def authority(self) -> str:
        return format_authority(self.host, self.port)

    def url(self, path: str = "/") -> str:
        return f"{'https' if self.cert else 'http'}://{self.authority}{path}"

    def arrivals(self) -> list[Arrival]:
        with self._lock:
            return [
                Arrival(a.connection_id, a.alpn, bytearray(a.raw), list(a.h2_blocks))
                for a in self._arrivals
            ]

    def clear(self) -> None:
        with self._lock:
            self._arrivals.clear()

    def wait_for_bytes(self, marker: bytes, timeout: float = 5.0) -> bool:
        """Wait until some connection received ``marker``; False on timeout."""
        with self._lock:
            return self._lock.wait_for(
                lambda: any(marker in a.raw for a in self._arrivals), timeout
            )

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> RecordingServer:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._port is None:
            raise RuntimeError(f"{self.name} did not start")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or self._stopping is None:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._stopping.set)
        thread.join(10)
        self._thread = None

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        ssl_context = self.cert.server_context(self.alpn) if self.cert else None
        server = await asyncio.start_server(
            self._handle, self.host, self._requested_port, ssl=ssl_context
        )
        self._port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stopping.wait()
        server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        arrival = Arrival(next(self._ids), alpn)
        with self._lock:
            self._arrivals.append(arrival)
        try:
            if alpn == "h2":
                await self._serve_h2(arrival, reader, writer)
            else:
                await self._serve_http1(arrival, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, h2.exceptions.ProtocolError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)

    def _received(self, arrival: Arrival, data: bytes) -> None:
        with self._lock:
            arrival.raw.extend(data)
            self._lock.notify_all()

    async def _serve_http1(
        self, arrival: Arrival, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        conn: h11.Connection | None = h11.Connection(h11.SERVER)
        while data := await reader.read(65536):
            self._received(arrival, data)
            if conn is None:
                continue  # h11 gave up on this connection: record, answer nothing more
            conn.receive_data(data)
            try:
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA or event is h11.PAUSED:
                        break
                    if isinstance(event, h11.EndOfMessage):
                        writer.write(_answer(conn))
                        await writer.drain()
                        conn.start_next_cycle()
            except h11.ProtocolError:
                conn = None

    async def _serve_h2(
        self, arrival: Arrival, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        conn = h2_server_connection()
        writer.write(conn.data_to_send())
        while data := await reader.read(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived | h2.events.TrailersReceived):
                    kind = "headers" if isinstance(event, h2.events.RequestReceived) else "trailers"
                    block = tuple((_text(n), _text(v)) for n, v in event.headers or ())
                    with self._lock:
                        arrival.h2_blocks.append((kind, block))
                        self._lock.notify_all()
                if isinstance(event, h2.events.StreamEnded) and event.stream_id:
                    conn.send_headers(
                        event.stream_id,
                        [(b":status", b"200"), (b"content-length", b"2")],
                    )
                    conn.send_data(event.stream_id, b"ok", end_stream=True)
                if isinstance(event, h2.events.DataReceived) and event.stream_id:
                    conn.acknowledge_received_data(
                        event.flow_controlled_length or 0, event.stream_id
                    )
            writer.write(conn.data_to_send())
            await writer.drain()


def recording(
    test_ca: TestCA | None, alpn: Sequence[str] = ("http/1.1",), name: str = "recorder"
) -> Iterator[RecordingServer]:
    """A recorder on the Chime test address, TLS with a certificate of `test_ca` if given."""
    cert = test_ca.issue([CHIME_TEST_ADDRESS], stem=name) if test_ca is not None else None
    with RecordingServer(CHIME_TEST_ADDRESS, cert=cert, alpn=alpn, name=name) as server:
        yield server


def _answer(conn: h11.Connection) -> bytes:
    return (
        (conn.send(h11.Response(status_code=200, headers=[("Content-Length", "2")])) or b"")
        + (conn.send(h11.Data(data=b"ok")) or b"")
        + (conn.send(h11.EndOfMessage()) or b"")
    )


def _text(data: bytes | str) -> str:
    return data.decode("latin-1") if isinstance(data, bytes) else data


# --- the judges --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parsed:
    """One request as one parser read it."""

    parser: str
    fields: Fields
    trailers: Fields = ()


def read_with_h11(raw: bytes) -> list[Parsed]:
    """The requests h11 reads from ``raw`` (it stops at the first it refuses)."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    conn.receive_data(b"")
    found: list[Parsed] = []
    head: Fields = ()
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if isinstance(event, h11.Request):
                head = tuple((_text(n), _text(v)) for n, v in event.headers.raw_items())
            elif isinstance(event, h11.EndOfMessage):
                trailers = tuple((_text(n), _text(v)) for n, v in event.headers.raw_items())
                found.append(Parsed("h11", head, trailers))
                conn.send(h11.Response(status_code=204, headers=[]))
                conn.send(h11.EndOfMessage())
                conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                break
    except (h11.ProtocolError, h11.LocalProtocolError):
        pass
    return found


def read_with_http_client(raw: bytes) -> list[Parsed]:
    """The requests ``http.server`` reads: a request line, then ``http.client.parse_headers``.

    Bodies are skipped by Content-Length or chunked framing, as http.server applications do.
    """
    stream = io.BytesIO(raw)
    found: list[Parsed] = []
    try:
        while line := stream.readline(65537):
            if not line.strip():
                continue
            fields = _items(http.client.parse_headers(stream))
            lowered = {n.lower(): v for n, v in fields}
            trailers: Fields = ()
            if "chunked" in lowered.get("transfer-encoding", "").lower():
                while size := int(stream.readline(65537).split(b";")[0].strip() or b"0", 16):
                    stream.read(size + 2)
                trailers = _items(http.client.parse_headers(stream))
            else:
                stream.read(int(lowered.get("content-length", "0").strip() or 0))
            found.append(Parsed("http.client", fields, trailers))
    except (ValueError, http.client.HTTPException):
        pass  # what it cannot read, it refuses
    return found


def _items(message: email.message.Message) -> Fields:
    return tuple((str(n), str(v)) for n, v in message.items())


def read_with_llhttp(raw: bytes) -> list[Parsed]:
    """The requests Node's HTTP server reads with its lenient parser."""
    proc = subprocess.run(
        ["node", str(LLHTTP_JUDGE)],
        input=raw,
        capture_output=True,
        timeout=20,
        env=clean_env(),
        check=True,
    )
    document = json.loads(proc.stdout)
    return [
        Parsed("llhttp", _pairs(request["headers"]), _pairs(request["trailers"]))
        for request in document["requests"]
    ]


def _pairs(flat: list[str]) -> Fields:
    return tuple(zip(flat[0::2], flat[1::2], strict=True))


def read_http1(raw: bytes) -> list[Parsed]:
    """Every request every judge reads from ``raw``."""
    return [*read_with_h11(raw), *read_with_http_client(raw), *read_with_llhttp(raw)]


def read_h2(arrival: Arrival) -> list[Parsed]:
    """HTTP/2 streams as decoded: headers, then the trailers that followed them."""
    found: list[Parsed] = []
    for kind, block in arrival.h2_blocks:
        if kind == "headers":
            found.append(Parsed("h2", block))
        elif found:
            last = found[-1]
            found[-1] = Parsed("h2", last.fields, block)
    return found


def read_arrivals(arrivals: Sequence[Arrival]) -> list[Parsed]:
    found: list[Parsed] = []
    for arrival in arrivals:
        found += read_h2(arrival) if arrival.alpn == "h2" else read_http1(bytes(arrival.raw))
    return found


def chime_problems(request: Parsed, app_keys: str, tenants: str | None) -> list[str]:
    """What is wrong with the Chime headers of one parsed request (empty: exactly right)."""
    problems = []
    for header, expected in zip(CHIME_NAMES, (app_keys, tenants), strict=True):
        values = [v.strip() for n, v in request.fields if _read_as(n) == header]
        wanted = [expected] if expected is not None else []
        if values != wanted:
            problems.append(f"{request.parser} read {header}: {values}, expected {wanted}")
        if any(_read_as(n) == header for n, _ in request.trailers):
            problems.append(f"{request.parser} read a {header} trailer: {request.trailers}")
    for name, value in request.fields:
        if name.lower() in ("connection", "proxy-connection") and any(
            option.strip().lower() in CHIME_NAMES for option in value.split(",")
        ):
            problems.append(f"{request.parser} read {name}: {value}")
        if request.parser == "h2" and (_CONTROL.search(value) or _CONTROL.search(name)):
            problems.append(f"h2 field with a control character: {name!r}: {value!r}")
    return problems


def _read_as(name: str) -> str:
    """The header a server reads ``name`` as, if it maps `_` to `-` (CGI) and ignores case."""
    return name.strip().lower().replace("_", "-")
