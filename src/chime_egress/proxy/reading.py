"""File work with a deadline: a read that does not finish is a failed read, never a hung proxy.

A configuration file on a network mount that stops answering blocks the thread that reads it (or
stats it) for as long as the mount hangs; no code can interrupt such a call from inside. So the
work runs in a daemon thread of its own: the event loop waits for it at most `timeout` seconds,
then carries on and treats the read as failed, and the stuck thread, abandoned, can hold up
neither the loop nor the process's exit (asyncio's default executor would be joined at shutdown,
so it is not used). At most one such thread runs per Deadline: while one is stuck, later calls
fail at once instead of piling threads up on the hung mount.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0


class ReadTimeout(Exception):
    """The work did not finish in time (or an earlier one still has not)."""


class Deadline:
    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        self._running: Future[object] | None = None

    def call(self, work: Callable[[], T]) -> T:
        """Run `work` and wait for it, at most `timeout` seconds (for synchronous callers)."""
        future = self._start(work)
        try:
            return future.result(self.timeout)
        except TimeoutError:
            raise self._late() from None

    async def run(self, work: Callable[[], T]) -> T:
        """Run `work` without blocking the event loop; at most `timeout` seconds."""
        future = self._start(work)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout)
        except TimeoutError:
            raise self._late() from None

    def _start(self, work: Callable[[], T]) -> Future[T]:
        running = self._running
        if running is not None and not running.done():
            raise ReadTimeout(
                f"an earlier read has not finished after {self.timeout:g} s "
                "(a hung network mount?); not starting another"
            )
        future: Future[T] = Future()

        def target() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(work())
            except BaseException as error:  # handed to the waiting caller, whatever it is
                future.set_exception(error)

        self._running = future  # type: ignore[assignment]
        threading.Thread(target=target, name="chime-egress file read", daemon=True).start()
        return future

    def _late(self) -> ReadTimeout:
        return ReadTimeout(
            f"reading did not finish within {self.timeout:g} s (a hung network mount?)"
        )
