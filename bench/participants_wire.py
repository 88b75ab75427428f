"""What every process of bench_participants.py shares: a callback protocol, WebSocket frames,
histograms, pacing, and the JSON lines its child processes speak with the orchestrator.

Every simulated participant, the echo server and the floor relay use `Link`, a plain asyncio
Protocol, rather than asyncio streams: a stream costs a future per read, and the generator must
stay lighter than the proxy it measures. A `Link` reads HTTP heads while its connection is set
up (CONNECT, the WebSocket upgrade) and hands every later chunk of bytes to one callback.

WebSocket framing is the minimum RFC 6455 needs for binary messages: client frames are masked
(with an all-zero key, which is valid and leaves the payload as it is: nothing here needs the
key to be unpredictable), server frames are not. Every message a participant or the server
sends carries the CLOCK_MONOTONIC time it was sent, which is the same clock in every process of
the machine, so latency is measured where a message arrives, without any per-message state.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import resource
import struct
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar, cast

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
HEAD_END = b"\r\n\r\n"
MAX_HEAD = 64 * 1024
OP_BINARY, OP_CLOSE = 0x2, 0x8
ZERO_MASK = b"\0\0\0\0"

# Message payload: kind (1 byte), send time (CLOCK_MONOTONIC ns, 8 bytes), padding.
STAMP = struct.Struct("!cQ")
CLIENT_MESSAGE = b"C"  # sent by a participant, echoed by the server
SERVER_MESSAGE = b"S"  # the server's own stream (audio from the other participants)


def accept_key(key: bytes) -> bytes:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())


def stamped(kind: bytes, size: int) -> bytes:
    """A payload of `size` bytes (at least STAMP.size) stamped with the time now."""
    return STAMP.pack(kind, time.monotonic_ns()) + bytes(max(0, size - STAMP.size))


def frame(payload: bytes, *, masked: bool, opcode: int = OP_BINARY) -> bytes:
    """One final WebSocket frame; a masked one uses the all-zero key (payload unchanged)."""
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head = bytes((0x80 | opcode, mask_bit | length))
    elif length < 1 << 16:
        head = bytes((0x80 | opcode, mask_bit | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, mask_bit | 127)) + length.to_bytes(8, "big")
    return head + ZERO_MASK + payload if masked else head + payload


def unmask(payload: bytes, key: bytes) -> bytes:
    if key == ZERO_MASK:
        return payload
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big"
    )


def take_frames(buffer: bytearray) -> list[tuple[int, bytes]]:
    """The complete frames at the start of `buffer` as (opcode, unmasked payload), removed from it.

    Fragmented messages are not reassembled: nobody in this benchmark sends them.
    """
    frames = []
    at, size = 0, len(buffer)
    while size - at >= 2:
        opcode, second = buffer[at] & 0x0F, buffer[at + 1]
        length, start = second & 0x7F, at + 2
        if length == 126:
            if size - start < 2:
                break
            length, start = int.from_bytes(buffer[start : start + 2], "big"), start + 2
        elif length == 127:
            if size - start < 8:
                break
            length, start = int.from_bytes(buffer[start : start + 8], "big"), start + 8
        key = b""
        if second & 0x80:
            key, start = bytes(buffer[start : start + 4]), start + 4
        end = start + length
        if end > size:
            break
        payload = bytes(buffer[start:end])
        frames.append((opcode, unmask(payload, key) if len(key) == 4 else payload))
        at = end
    del buffer[:at]
    return frames


def parse_head(head: bytes) -> tuple[str, dict[str, list[str]]]:
    """(first line, header fields by lowercase name) of an HTTP/1.1 head."""
    first, *lines = head.decode("latin-1").split("\r\n")
    fields: dict[str, list[str]] = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            fields.setdefault(name.strip().lower(), []).append(value.strip())
    return first, fields


class Link(asyncio.Protocol):
    """One connection: HTTP heads are read with `read_head` until `switch` hands later bytes on.

    Set `peer` to pause reading this connection while the peer's output buffer is full (a relay).
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.on_data: Callable[[bytes], None] | None = None
        self.on_close: Callable[[], None] | None = None
        self.peer: Link | None = None
        self.open = False
        self._waiter: asyncio.Future[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same methods
        self.transport = cast(asyncio.Transport, transport)
        self.open = True

    def data_received(self, data: bytes) -> None:
        if self.on_data is not None:
            self.on_data(data)
            return
        self.buffer += data
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            end = self.buffer.find(HEAD_END)
            if end >= 0:
                self._waiter = None
                head = bytes(self.buffer[: end + 4])
                del self.buffer[: end + 4]
                waiter.set_result(head)
            elif len(self.buffer) > MAX_HEAD:
                waiter.set_exception(ValueError("HTTP head longer than 64 KiB"))

    def eof_received(self) -> bool | None:
        return None  # close

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("connection closed during the handshake"))
        if self.on_close is not None:
            self.on_close()
        if self.peer is not None:
            self.peer.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    async def read_head(self) -> bytes:
        """The next HTTP head (through the blank line); raises ConnectionError if closed first."""
        end = self.buffer.find(HEAD_END)
        if end >= 0:
            head = bytes(self.buffer[: end + 4])
            del self.buffer[: end + 4]
            return head
        if not self.open:
            raise ConnectionError("connection closed during the handshake")
        self._waiter = asyncio.get_running_loop().create_future()
        return await self._waiter

    def switch(self, on_data: Callable[[bytes], None]) -> None:
        """From now on hand every chunk to `on_data`, starting with what is already buffered."""
        self.on_data = on_data
        if self.buffer:
            leftover = bytes(self.buffer)
            self.buffer.clear()
            on_data(leftover)

    def write(self, data: bytes) -> None:
        if self.open and self.transport is not None:
            self.transport.write(data)

    def backlog(self) -> int:
        """Bytes written but not yet handed to the kernel."""
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def close(self) -> None:
        """Close after what is written has been sent; nothing more is written from now on (a
        TLS transport logs a warning for every write once it is closing)."""
        self.open = False
        if self.transport is not None:
            self.transport.close()


def relay(a: Link, b: Link) -> None:
    """Copy bytes both ways between two connections, each pausing the other when it is full."""
    a.peer, b.peer = b, a
    a.switch(b.write)
    b.switch(a.write)


class Histogram:
    """Latencies in µs in logarithmic buckets 0.5 % wide: percentiles within 0.5 %, mergeable
    across processes (the generator's processes each send one), constant memory."""

    SCALE = 200  # buckets per factor e

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.max = 0.0

    def add(self, micros: float) -> None:
        bucket = int(math.log(micros) * self.SCALE) if micros > 1 else 0
        self.counts[bucket] = self.counts.get(bucket, 0) + 1
        self.count += 1
        if micros > self.max:
            self.max = micros

    def merge(self, other: Histogram) -> None:
        for bucket, count in other.counts.items():
            self.counts[bucket] = self.counts.get(bucket, 0) + count
        self.count += other.count
        self.max = max(self.max, other.max)

    def percentile(self, q: float) -> float:
        """The q-th percentile in µs (NaN when empty): the middle of the bucket holding it."""
        if not self.count:
            return math.nan
        rank = max(1, math.ceil(self.count * q / 100))
        if rank >= self.count:
            return self.max  # the largest is known exactly
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return min(self.max, math.exp((bucket + 0.5) / self.SCALE)) if bucket else 1.0
        return self.max

    def to_json(self) -> dict[str, Any]:
        return {"counts": {str(k): v for k, v in self.counts.items()}, "max": self.max}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Histogram:
        histogram = cls()
        histogram.counts = {int(k): int(v) for k, v in data["counts"].items()}
        histogram.count = sum(histogram.counts.values())
        histogram.max = float(data["max"])
        return histogram

    @classmethod
    def merged(cls, parts: Iterable[Histogram]) -> Histogram:
        total = cls()
        for part in parts:
            total.merge(part)
        return total


Member = TypeVar("Member")


def spread_stride(slots: int) -> int:
    """The integer nearest to slots / golden ratio that is prime to `slots` (1 for one slot)."""
    ideal = slots * (math.sqrt(5) - 1) / 2
    for candidate in sorted(range(1, slots + 1), key=lambda c: abs(c - ideal)):
        if math.gcd(candidate, slots) == 1:
            return candidate
    return 1


class Pacer(Generic[Member]):
    """Calls `fire(member)` once per `period` for every member, in slots of about 2 ms, and
    records how late each slot ran: the generator's own lag, the sign of a saturated process.

    Members are spread evenly over the period whatever their number: member `index` goes to
    slot (index * stride) mod slots, the stride being the golden-ratio share of the slots (and
    prime to their number), so consecutive members land far apart and any run of them covers
    the period evenly. (Consecutive slots would put 50 participants of a 1 s period into its
    first 100 ms: a burst that queues in the proxy and shows up as latency.)

    Open loop: a late slot is run as soon as possible and the next keeps its time, so a slow
    proxy does not slow the sending down (the senders decide what to skip).
    """

    def __init__(self, period: float, fire: Callable[[Member], None], slot: float = 0.002) -> None:
        self.slots = max(1, round(period / slot))
        self.interval = period / self.slots
        self.stride = spread_stride(self.slots)
        self.fire = fire
        self.members: list[list[Member]] = [[] for _ in range(self.slots)]
        self.lag = Histogram()
        self._next = 0.0
        self._slot = 0
        self._handle: asyncio.TimerHandle | None = None

    def slot(self, index: int) -> int:
        return index * self.stride % self.slots

    def add(self, member: Member, index: int) -> None:
        self.members[self.slot(index)].append(member)

    def remove(self, member: Member, index: int) -> None:
        group = self.members[self.slot(index)]
        if member in group:
            group.remove(member)

    def start(self, at: float) -> None:
        """Begin at `at` (time.monotonic(); the event loop's clock is the same one)."""
        self._next = at
        self._handle = asyncio.get_running_loop().call_at(at, self._run)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _run(self) -> None:
        loop = asyncio.get_running_loop()
        # time.monotonic rather than loop.time(): uvloop's is in milliseconds, cached per turn
        self.lag.add((time.monotonic() - self._next) * 1e6)
        for member in self.members[self._slot]:
            self.fire(member)
        self._slot = (self._slot + 1) % self.slots
        self._next += self.interval
        self._handle = loop.call_at(self._next, self._run)


MAX_BACKLOG = 256 * 1024  # bytes queued on one connection before a sender skips a message
HANDSHAKE_TIMEOUT = 60.0


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to the hard limit; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Control:
    """JSON lines with the orchestrator: read from stdin, written to stdout."""

    def __init__(self) -> None:
        self.reader = asyncio.StreamReader(limit=1 << 24)

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(self.reader), sys.stdin.buffer
        )

    async def read(self) -> dict[str, Any] | None:
        line = await self.reader.readline()
        return json.loads(line) if line.strip() else None

    @staticmethod
    def say(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()
