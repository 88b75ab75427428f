"""The load generator of bench_participants.py: a share of the participants, in one process.

    python bench/participants_roles.py generate [asyncio|uvloop]

Each participant opens a WebSocket (through the proxy's CONNECT and TLS, or directly), checks
the server's answer about the Chime headers, and in the audio scenario also a TURN/TLS video
connection that must not be decrypted. Joins run with a concurrency limit; then `Pacer`s send
the messages, each stamped with the time it was sent; answers are measured where they arrive.
Only messages sent in the measured window count, and a message is skipped rather than queued
when five seconds of messages are unanswered on its WebSocket (or 256 KiB wait to be sent).
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import ssl
import time
from collections import Counter
from typing import Any, cast

from participants_wire import (
    CLIENT_MESSAGE,
    MAX_BACKLOG,
    OP_BINARY,
    OP_CLOSE,
    SERVER_MESSAGE,
    STAMP,
    Control,
    Histogram,
    Link,
    Pacer,
    accept_key,
    frame,
    parse_head,
    stamped,
    take_frames,
)


class JoinFailure(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class Participant:
    """One participant's WebSocket (signaling or audio) and, in the audio scenario, video."""

    __slots__ = ("echoed", "generator", "index", "link", "sent", "video")

    def __init__(self, generator: Generator, index: int) -> None:
        self.generator = generator
        self.index = index
        self.link: Link | None = None
        self.video: Link | None = None
        self.sent = 0
        self.echoed = 0

    def on_data(self, data: bytes) -> None:
        link = self.link
        assert link is not None
        link.buffer += data
        generator = self.generator
        for opcode, payload in take_frames(link.buffer):
            if opcode == OP_BINARY:
                kind, sent_ns = STAMP.unpack_from(payload)
                if kind == CLIENT_MESSAGE:
                    self.echoed += 1
                    generator.on_echo(sent_ns)
                elif kind == SERVER_MESSAGE:
                    generator.on_stream(sent_ns)
            elif opcode == OP_CLOSE:
                link.close()


class Generator:
    """This process's share of the participants, and what they measured."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.s = settings
        self.participants = [
            Participant(self, settings["first"] + i) for i in range(settings["count"])
        ]
        self.ws_context = ssl.create_default_context(cafile=settings["cafile"])
        self.ws_context.set_alpn_protocols(["http/1.1"])
        # Trusting only the media server's own CA proves the proxy did not decrypt the media.
        self.media_context = ssl.create_default_context(cafile=settings["media_cafile"])
        self.window = (math.inf, -math.inf)  # CLOCK_MONOTONIC ns: messages sent in it count
        self.running = False
        self.counts: Counter[str] = Counter()
        self.rtt = Histogram()
        self.stream = Histogram()
        self.join = Histogram()
        self.errors: Counter[str] = Counter()
        self.examples: dict[str, str] = {}
        self.ping_after = math.inf
        self.max_outstanding = 2
        self.message = b""
        self.video_chunk = bytes(settings["video_size"])

    # --- measuring ---------------------------------------------------------------------------

    def on_echo(self, sent_ns: int) -> None:
        start, end = self.window
        if start <= sent_ns < end:
            self.rtt.add((time.monotonic_ns() - sent_ns) / 1000)
            self.counts["echoed"] += 1
        elif sent_ns >= self.ping_after:
            self.counts["pinged"] += 1

    def on_stream(self, sent_ns: int) -> None:
        start, end = self.window
        if start <= sent_ns < end:
            self.stream.add((time.monotonic_ns() - sent_ns) / 1000)
            self.counts["stream_received"] += 1

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        self.examples.setdefault(kind, detail[:300])

    # --- joining -----------------------------------------------------------------------------

    async def tunnel(
        self, participant: Participant, port: int, context: ssl.SSLContext, sni: str
    ) -> Link:
        """A TLS connection to the server's `port`, through the proxy's CONNECT if there is one;
        closed again when a step fails (or the join times out)."""
        loop = asyncio.get_running_loop()
        s = self.s
        local = None
        if s["source_addresses"]:
            local = (f"127.0.1.{1 + participant.index % s['source_addresses']}", 0)
        step, link = "connect", None
        try:
            if s["proxy"] is None:
                step = "connect/TLS"
                _, link = await loop.create_connection(
                    Link, s["host"], port, ssl=context, server_hostname=sni, local_addr=local
                )
                return link
            transport, link = await loop.create_connection(Link, *s["proxy"], local_addr=local)
            authority = f"{s['host']}:{port}"
            link.write(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
            step = "CONNECT"
            status = (await link.read_head()).split(b"\r\n", 1)[0]
            if not status.startswith(b"HTTP/1.1 200"):
                raise JoinFailure("connect_refused", status.decode("latin-1"))
            step = "TLS"
            tls = await loop.start_tls(transport, link, context, server_hostname=sni)
            link.transport = cast(asyncio.Transport, tls)
            return link
        except BaseException as exc:
            if link is not None:
                link.close()
            if isinstance(exc, ssl.SSLError):
                raise JoinFailure("tls", f"{step}: {exc}") from exc
            if isinstance(exc, OSError):
                kind = "connect" if step == "connect" else "closed"
                raise JoinFailure(kind, f"{step}: {exc!r}") from exc
            raise

    async def join_one(self, participant: Participant) -> None:
        s = self.s
        link = await self.tunnel(participant, s["ws_port"], self.ws_context, s["host"])
        participant.link = link
        key = base64.b64encode(os.urandom(16))
        link.write(
            f"GET {s['path']} HTTP/1.1\r\nHost: {s['host']}:{s['ws_port']}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n".encode()
            + b"Sec-WebSocket-Key: "
            + key
            + b"\r\nSec-WebSocket-Version: 13\r\n"
            b"User-Agent: chime-egress-bench\r\n\r\n"
        )
        try:
            status, fields = parse_head(await link.read_head())
        except (ConnectionError, ValueError) as exc:
            raise JoinFailure("upgrade", repr(exc)) from exc
        if not status.startswith("HTTP/1.1 101"):
            raise JoinFailure("upgrade", status)
        if fields.get("sec-websocket-accept") != [accept_key(key).decode()]:
            raise JoinFailure("upgrade", "wrong Sec-WebSocket-Accept")
        seen = fields.get("x-bench-chime", ["(no answer)"])[0]
        if seen != ("ok" if s["expect_headers"] else "none"):
            raise JoinFailure("headers", f"the server saw Chime headers: {seen}")
        link.switch(participant.on_data)
        link.on_close = self.on_close
        if s["video_rate"]:
            participant.video = await self.tunnel(
                participant, s["media_port"], self.media_context, s["media_sni"]
            )
            participant.video.switch(self.on_video)
            participant.video.on_close = self.on_close

    async def join_all(self, at: float) -> dict[str, Any]:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        pending = iter(self.participants)
        joined: list[Participant] = []

        async def worker() -> None:
            for participant in pending:
                started = time.monotonic()
                try:
                    await asyncio.wait_for(self.join_one(participant), self.s["join_timeout"])
                except JoinFailure as exc:
                    self.error(exc.kind, exc.detail)
                except TimeoutError:
                    self.error("timeout", f"join took more than {self.s['join_timeout']} s")
                except Exception as exc:
                    self.error("other", repr(exc))
                else:
                    self.join.add((time.monotonic() - started) * 1e6)
                    joined.append(participant)
                    continue
                for link in (participant.link, participant.video):
                    if link is not None:
                        link.close()
                participant.link = participant.video = None

        await asyncio.gather(*(worker() for _ in range(self.s["join_concurrency"])))
        self.participants = joined
        return {
            "joined": len(joined),
            "ended": time.monotonic(),
            "histogram": self.join.to_json(),
            "errors": dict(self.errors),
            "examples": self.examples,
        }

    def on_close(self) -> None:
        if self.running:
            self.error("closed", "a connection closed during the measurement")

    def on_video(self, data: bytes) -> None:
        start, end = self.window
        if start <= time.monotonic_ns() < end:
            self.counts["video_bytes_received"] += len(data)

    # --- traffic -----------------------------------------------------------------------------

    def send(self, participant: Participant) -> None:
        link = participant.link
        if link is None or not link.open:
            return
        now = time.monotonic_ns()
        start, end = self.window
        in_window = start <= now < end
        if participant.sent - participant.echoed >= self.max_outstanding or (
            link.backlog() > MAX_BACKLOG
        ):
            if in_window:
                self.counts["skipped"] += 1
            return
        link.write(frame(STAMP.pack(CLIENT_MESSAGE, now) + self.message, masked=True))
        participant.sent += 1
        if in_window:
            self.counts["sent"] += 1

    def send_video(self, participant: Participant) -> None:
        link = participant.video
        if link is None or not link.open or link.backlog() > MAX_BACKLOG:
            return
        link.write(self.video_chunk)
        start, end = self.window
        if start <= time.monotonic_ns() < end:
            self.counts["video_bytes_sent"] += len(self.video_chunk)

    async def run(self, at: float, warmup: float, duration: float) -> dict[str, Any]:
        s = self.s
        self.message = bytes(max(0, s["size"] - STAMP.size))
        self.max_outstanding = max(2, math.ceil(s["rate"] * 5))  # five seconds' worth
        start = at + warmup
        self.window = (int(start * 1e9), int((start + duration) * 1e9))
        self.running = True
        pacers: list[Pacer[Participant]] = []
        if s["rate"] > 0:
            pacers.append(Pacer(1 / s["rate"], self.send))
        if s["video_rate"] > 0:
            pacers.append(Pacer(1 / s["video_rate"], self.send_video))
        for pacer in pacers:
            for participant in self.participants:
                pacer.add(participant, participant.index)
            pacer.start(at)
        await asyncio.sleep(max(0.0, start + duration - time.monotonic()))
        for pacer in pacers:
            pacer.stop()
        deadline = time.monotonic() + s["grace"]
        while self.counts["echoed"] < self.counts["sent"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.running = False
        lag = Histogram.merged(pacer.lag for pacer in pacers)
        return {
            "counts": dict(self.counts),
            "rtt": self.rtt.to_json(),
            "stream": self.stream.to_json(),
            "lag": lag.to_json(),
            "errors": dict(self.errors),
            "examples": self.examples,
        }

    async def ping(self, timeout: float) -> dict[str, Any]:
        """One round trip on every joined WebSocket: how many are still alive."""
        self.ping_after = time.monotonic_ns()
        self.counts["pinged"] = 0
        sent = 0
        for participant in self.participants:
            link = participant.link
            if link is not None and link.open:
                link.write(frame(stamped(CLIENT_MESSAGE, 16), masked=True))
                sent += 1
        deadline = time.monotonic() + timeout
        while self.counts["pinged"] < sent and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return {"alive": self.counts["pinged"], "held": len(self.participants)}

    def close(self) -> None:
        """Close every connection, the WebSockets with a close frame (1000, normal closure) as a
        client does, so a proxy that parses the frames does not log an abnormal closure."""
        goodbye = frame((1000).to_bytes(2, "big"), masked=True, opcode=OP_CLOSE)
        for participant in self.participants:
            if participant.link is not None:
                participant.link.write(goodbye)
            for link in (participant.link, participant.video):
                if link is not None:
                    link.close()


async def generate(control: Control, settings: dict[str, Any]) -> None:
    generator = Generator(settings)
    control.say({"ready": True})
    while (command := await control.read()) is not None:
        if command["cmd"] == "join":
            control.say(await generator.join_all(command["at"]))
        elif command["cmd"] == "run":
            control.say(await generator.run(command["at"], command["warmup"], command["duration"]))
        elif command["cmd"] == "ping":
            control.say(await generator.ping(command["timeout"]))
        elif command["cmd"] == "close":
            generator.close()
            await asyncio.sleep(0.5)  # let the closes reach the wire
            control.say({"closed": True})
    generator.close()
