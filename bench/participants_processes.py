"""The orchestrator's side of bench_participants.py's processes: its children (the roles of
participants_roles.py, spoken to in JSON lines) and the proxy commands it starts and stops."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support

from tests.support.proxy import clean_env

ROLES = Path(__file__).resolve().parent / "participants_roles.py"
PROXY_HOST = "127.0.0.1"


class Child:
    """A role of participants_roles.py, spoken to in JSON lines."""

    def __init__(self, role: str, process: asyncio.subprocess.Process) -> None:
        self.role = role
        self.process = process

    @classmethod
    async def start(cls, role: str, settings: dict[str, Any], loop: str) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROLES),
            role,
            loop,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=clean_env(),
            limit=1 << 24,
        )
        child = cls(role, process)
        child.send(settings)
        return child

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")

    async def receive(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(
                f"the {self.role} process {self.pid} exited ({self.process.returncode})"
            )
        result: dict[str, Any] = json.loads(line)
        return result

    async def ask(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.send(message)
        return await self.receive(timeout)

    async def stop(self) -> None:
        if self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def ask_all(children: list[Child], message: dict[str, Any], timeout: float) -> list[Any]:
    for child in children:
        child.send(message)
    return list(await asyncio.gather(*(child.receive(timeout) for child in children)))


async def listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(PROXY_HOST, port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def stop_session(process: asyncio.subprocess.Process) -> None:
    """Stop a proxy command and everything it started (its own session, led by its pid)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            await asyncio.wait_for(process.wait(), 10)
            return
        except TimeoutError:
            continue


async def stop_target(handle: Any) -> None:
    if isinstance(handle, Child):
        await handle.stop()
    elif isinstance(handle, asyncio.subprocess.Process):
        await stop_session(handle)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((PROXY_HOST, 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
