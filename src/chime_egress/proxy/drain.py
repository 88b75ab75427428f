"""Graceful shutdown: on SIGTERM or SIGINT, stop accepting, let meetings finish, then exit 0.

Kubernetes and compose send SIGTERM once, wait their grace period, then SIGKILL. mitmproxy's own
handler only asks the event loop to stop; with many connections open it can take many seconds,
or never finish, and every connection is cut at once either way. So the addon takes both signals:

1. at once: the listening sockets close (a load balancer's next connection attempt fails and goes
   to another replica) and the readiness answer turns 503;
2. open connections go on until they end by themselves, up to `chime_drain_seconds`;
3. whatever is left is closed (the Chime SDK reconnects its signaling WebSocket, to a replica
   that is accepting), and mitmproxy is asked to stop;
4. a watchdog, armed at the signal on a thread of its own, ends the process (exit code 0) if it
   has not ended 8 seconds after the drain deadline: however busy the event loop, and whatever
   mitmproxy's own shutdown does, the process exits within `chime_drain_seconds` + 8 s.

A second signal during the drain exits at once (exit code 128 + the signal's number).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from typing import Any

from .jsonlog import fields
from .options import DEFAULT_DRAIN_SECONDS
from .resident import close_all

logger = logging.getLogger("chime_egress")

# After the deadline's closes, how long the connections' own clean-up may take (mitmproxy's
# handlers finish one by one), then mitmproxy's shutdown: the watchdog ends the process at the
# drain deadline plus both, 8 s.
CLOSE_GRACE_SECONDS = 3.0
SHUTDOWN_GRACE_SECONDS = 5.0
_POLL_SECONDS = 0.1


class Drain:
    def __init__(self) -> None:
        self.seconds = float(DEFAULT_DRAIN_SECONDS)
        self.draining = False
        self.started: float | None = None  # time.monotonic() of the first signal
        self._task: asyncio.Task[None] | None = None
        self._master: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self, master: Any) -> None:
        """Take SIGTERM and SIGINT from mitmproxy (called in `running`, on the event loop).

        Only for a master that serves (a proxy server addon) and on the main thread, where
        signals are delivered: a test harness driving the addon keeps its own handlers. The
        handler is a plain signal handler, not the event loop's: it runs at once, even while
        the loop is busy with thousands of connections, so the watchdog's bound holds from the
        moment the signal arrives.
        """
        if master.addons.get("proxyserver") is None or self._master is master:
            return  # no server to drain, or installed already (the launcher does it early)
        self._master = master
        try:
            self._loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._loop.remove_signal_handler(signum)  # mitmproxy's: it only stops the loop
                signal.signal(signum, self._on_signal)
        except (RuntimeError, ValueError, NotImplementedError) as error:
            logger.warning(f"chime: cannot take SIGTERM and SIGINT ({error}): no drain on exit")

    def _on_signal(self, signum: int, frame: object) -> None:
        assert self._loop is not None  # installed
        if self.draining:
            os._exit(128 + signum)  # a second signal: now (nothing that could block first)
        self.draining = True
        self.started = time.monotonic()
        _start_watchdog(self.seconds + CLOSE_GRACE_SECONDS + SHUTDOWN_GRACE_SECONDS)
        self._loop.call_soon_threadsafe(self._begin, signal.Signals(signum).name)

    def _begin(self, name: str) -> None:
        self._task = asyncio.get_running_loop().create_task(self._drain(name))

    async def _drain(self, name: str) -> None:
        server = self._master.addons.get("proxyserver")
        try:
            await server.servers.update([])  # close every listening socket
        except Exception:
            logger.exception("chime: cannot close the listening sockets; draining anyway")
        open_now = len(server.connections)
        logger.info(
            f"chime: {name}: draining: no longer accepting; {open_now} open connection(s) may "
            f"go on for up to {self.seconds:g} s",
            extra=fields("drain_started", connections=open_now, deadline_seconds=self.seconds),
        )
        assert self.started is not None
        deadline = self.started + self.seconds
        while server.connections and time.monotonic() < deadline:
            await asyncio.sleep(_POLL_SECONDS)
        closed = close_all(server)
        elapsed = time.monotonic() - self.started
        logger.info(
            f"chime: drained in {elapsed:.1f} s: {open_now - closed} connection(s) ended by "
            f"themselves, {closed} closed at the deadline; stopping",
            extra=fields(
                "drain_finished",
                seconds=round(elapsed, 3),
                ended=open_now - closed,
                closed=closed,
            ),
        )
        # Left to finish their clean-up, the closed connections leave the event loop little to
        # cancel when it stops (thousands of cancellations are what makes mitmproxy slow to exit).
        settled = time.monotonic() + CLOSE_GRACE_SECONDS
        while server.connections and time.monotonic() < settled:
            await asyncio.sleep(_POLL_SECONDS)
        logger.info("chime: stopping mitmproxy")
        self._master.shutdown()


def _start_watchdog(seconds: float) -> None:
    # Nothing but the exit itself: a log call or a flush could wait on a lock or a full pipe
    # held by the very shutdown that is stuck.
    timer = threading.Timer(seconds, os._exit, args=(0,))
    timer.daemon = True
    timer.start()
