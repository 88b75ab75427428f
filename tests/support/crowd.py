"""Many WebSockets at once through the proxy: meeting participants holding their signaling channel.

A `Crowd` runs one asyncio loop on a private thread and opens N `websockets` client connections
(CONNECT through the proxy, TLS, the upgrade) with a bounded number of handshakes in flight, keeps
them open, and can exchange a message on every one or wait for them to be closed by the far end.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect

from .clients import run_on_loop
from .proxy import LISTEN_HOST
from .tls import client_context

T = TypeVar("T")


class Crowd:
    def __init__(self, url: str, *, proxy_port: int, cacert: Path, concurrency: int = 50) -> None:
        self.url = url
        self.proxy = f"http://{LISTEN_HOST}:{proxy_port}"
        self.ssl = client_context(cacert, alpn=("http/1.1",))
        self.concurrency = concurrency
        self.connections: list[ClientConnection] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="crowd", daemon=True)
        self._thread.start()

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        return run_on_loop(self._loop, coro, timeout, "the crowd did not finish")

    def join(self, count: int, timeout: float = 300) -> None:
        """Open `count` more WebSockets; each reads the server's first message (its upgrade)."""
        self._run(self._join(count), timeout)

    async def _join(self, count: int) -> None:
        gate = asyncio.Semaphore(self.concurrency)

        async def one() -> ClientConnection:
            async with gate:
                connection = await connect(
                    self.url,
                    proxy=self.proxy,
                    ssl=self.ssl,
                    compression=None,
                    open_timeout=60,
                    close_timeout=2,
                    ping_interval=None,
                    max_queue=4,
                )
                await asyncio.wait_for(connection.recv(), 30)  # the server's upgrade echo
                return connection

        self.connections += await asyncio.gather(*(one() for _ in range(count)))

    def exchange(
        self, message: str = "still here", timeout: float = 120, sample: int | None = None
    ) -> int:
        """Send `message` on every open WebSocket (or the first `sample`); how many echoed it."""
        return self._run(self._exchange(message, sample), timeout)

    async def _exchange(self, message: str, sample: int | None) -> int:
        async def one(connection: ClientConnection) -> bool:
            try:
                await connection.send(message)
                return await asyncio.wait_for(connection.recv(), 30) == message
            except Exception:
                return False

        chosen = self.connections if sample is None else self.connections[:sample]
        results = await asyncio.gather(*(one(c) for c in chosen))
        return sum(results)

    def closed(self) -> int:
        """How many of the WebSockets have been closed (by either end)."""
        return sum(1 for c in self.connections if c.state.name == "CLOSED")

    def wait_all_closed(self, timeout: float) -> int:
        """Wait until every WebSocket is closed; how many are, at the end."""
        return self._run(self._wait_closed(), timeout)

    async def _wait_closed(self) -> int:
        await asyncio.gather(*(c.wait_closed() for c in self.connections))
        return self.closed()

    def close(self, timeout: float = 60) -> None:
        """Close every WebSocket from this end."""
        self._run(self._close(), timeout)

    async def _close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.connections), return_exceptions=True)

    def stop(self) -> None:
        """Drop everything (connections not yet closed are aborted) and end the thread."""
        for connection in self.connections:
            transport = connection.transport
            self._loop.call_soon_threadsafe(transport.abort)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> Crowd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
