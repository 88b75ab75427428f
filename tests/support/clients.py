"""Real clients for the end-to-end tests: the ``curl`` binary, ``websockets``, raw sockets.

All of them talk to the proxy on 127.0.0.1 and to targets on loopback addresses only, and ignore
any proxy settings of the environment.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from websockets.asyncio.client import ClientConnection as AsyncClientConnection
from websockets.asyncio.client import connect as ws_connect

from .proxy import LISTEN_HOST, clean_env
from .servers import format_authority
from .tls import client_context

_STATUS_MARK = "\n@@curl-status@@"
T = TypeVar("T")


@dataclass(frozen=True)
class CurlResult:
    """What curl reported: exit code, HTTP status, body (JSON when it parses) and stderr."""

    returncode: int
    status: int
    """The last HTTP status curl saw (0 when none), from ``--write-out %{http_code}``."""
    http_version: str
    """From ``--write-out %{http_version}``: ``1.1``, ``2``, ... (``0`` when none)."""
    body: Any
    """The parsed JSON body, or the raw text when it is not JSON."""
    text: str
    stderr: str
    command: tuple[str, ...]

    @property
    def json(self) -> dict[str, Any]:
        """The body as the echo server's JSON object; fails with the whole result otherwise."""
        if not isinstance(self.body, dict):
            raise AssertionError(f"curl did not return a JSON object: {self}")
        return self.body

    def headers(self) -> list[tuple[str, str]]:
        """The echo server's view of the request headers (exact names, order, duplicates)."""
        return [(str(n), str(v)) for n, v in self.json["headers"]]

    def values(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for n, v in self.headers() if n.lower() == lname]

    def names(self, name: str) -> list[str]:
        lname = name.lower()
        return [n for n, _ in self.headers() if n.lower() == lname]

    def __str__(self) -> str:
        return (
            f"$ {' '.join(self.command)}\n"
            f"exit code {self.returncode}, HTTP status {self.status}, HTTP/{self.http_version}\n"
            f"stderr: {self.stderr.strip()}\nbody: {self.text[:2000]}"
        )


def curl(
    url: str,
    *,
    proxy_port: int | None,
    cacert: Path | None = None,
    http: Literal["1.1", "2", "1.0"] | None = "1.1",
    headers: Sequence[str] = (),
    resolve: Sequence[str] = (),
    proxytunnel: bool = False,
    max_time: float = 10.0,
    extra_args: Sequence[str] = (),
) -> CurlResult:
    """Run the real ``curl`` (``-sS``) through the proxy on ``127.0.0.1:proxy_port``.

    ``cacert`` is the ONLY CA curl trusts (``--cacert`` plus an empty ``--capath``); ``headers`` are
    ``-H`` lines sent as written (HTTP/2 lowercases names); ``proxy_port=None`` talks directly.
    """
    cmd: list[str] = ["curl", "-sS", "--max-time", str(max_time), "--noproxy", ""]
    if proxy_port is not None:
        cmd += ["--proxy", f"http://{LISTEN_HOST}:{proxy_port}"]
    if cacert is not None:
        # An empty --capath keeps curl from also trusting the system store's hashed directory.
        empty = cacert.parent / "empty-capath"
        empty.mkdir(exist_ok=True)
        cmd += ["--cacert", str(cacert), "--capath", str(empty)]
    if http == "1.1":
        cmd.append("--http1.1")
    elif http == "1.0":
        cmd.append("--http1.0")
    elif http == "2":
        cmd.append("--http2")
    for header in headers:
        cmd += ["-H", header]
    for entry in resolve:
        cmd += ["--resolve", entry]
    if proxytunnel:
        cmd.append("--proxytunnel")
    cmd += ["--write-out", _STATUS_MARK + "%{http_code} %{http_version}"]
    cmd += list(extra_args)
    cmd.append(url)
    proc = subprocess.run(
        cmd,
        capture_output=True,
        env=clean_env(),
        timeout=max_time + 10,
        check=False,
    )
    stdout = proc.stdout.decode("utf-8", "replace")
    text, _, trailer = stdout.rpartition(_STATUS_MARK)
    if not _:
        text, trailer = stdout, ""
    status_text, _, version = trailer.strip().partition(" ")
    body: Any = text
    with suppress(ValueError):
        body = json.loads(text)
    return CurlResult(
        returncode=proc.returncode,
        status=int(status_text) if status_text.isdigit() else 0,
        http_version=version or "0",
        body=body,
        text=text,
        stderr=proc.stderr.decode("utf-8", "replace"),
        command=tuple(cmd),
    )


# --- WebSocket -------------------------------------------------------------------------------


def run_on_loop(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], timeout: float, what: str
) -> T:
    """`coro`'s result, run on `loop` (another thread's); TimeoutError "WHAT within Ns" after
    `timeout` seconds, the coroutine cancelled."""
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise TimeoutError(f"{what} within {timeout}s") from None


class WebSocketSession:
    """A ``websockets`` asyncio client connection, driven from synchronous test code.

    The asyncio client runs on its own event loop in a private thread. (The *sync* client of
    websockets reads and writes one TLS socket from two threads; with TLS 1.3 that stalls about
    one handshake in a few hundred, with or without a proxy, and then hangs in close. Checked
    with websockets 17.4 on Python 3.11.)
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, conn: AsyncClientConnection) -> None:
        self._loop = loop
        self._conn = conn

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        return run_on_loop(self._loop, coro, timeout, "no WebSocket answer")

    def recv(self, timeout: float = 10.0) -> str | bytes:
        """The next message (fails after ``timeout`` seconds)."""
        return self._run(asyncio.wait_for(self._conn.recv(), timeout), timeout + 1)

    def send(self, message: str | bytes, timeout: float = 10.0) -> None:
        self._run(asyncio.wait_for(self._conn.send(message), timeout), timeout + 1)

    def close(self, timeout: float = 5.0) -> None:
        with suppress(Exception):
            self._run(asyncio.wait_for(self._conn.close(), timeout), timeout + 1)

    @property
    def response_headers(self) -> list[tuple[str, str]]:
        """The headers of the 101 response, as the client saw them."""
        response = self._conn.response
        return [] if response is None else list(response.headers.raw_items())


@contextmanager
def websocket(
    url: str,
    *,
    proxy_port: int | None,
    cacert: Path | None = None,
    headers: Sequence[tuple[str, str]] = (),
    timeout: float = 10.0,
) -> Iterator[WebSocketSession]:
    """A WebSocket through the proxy; ``websockets`` (>= 15) sends the CONNECT itself.

    ``cacert`` is the only CA trusted for ``wss://``; ``headers`` are added to the upgrade request.
    """
    ssl_ctx = (
        client_context(cacert, alpn=("http/1.1",)) if url.startswith("wss:") and cacert else None
    )
    proxy = f"http://{LISTEN_HOST}:{proxy_port}" if proxy_port is not None else None
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="websocket client", daemon=True)
    thread.start()
    try:

        async def opening() -> AsyncClientConnection:
            return await ws_connect(
                url,
                proxy=proxy,
                ssl=ssl_ctx,
                additional_headers=list(headers),
                compression=None,
                open_timeout=timeout,
                close_timeout=2,
                ping_interval=None,
            )

        future = asyncio.run_coroutine_threadsafe(opening(), loop)
        try:
            conn = future.result(timeout + 5)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"WebSocket handshake with {url} took over {timeout}s") from None
        session = WebSocketSession(loop, conn)
        try:
            yield session
        finally:
            session.close()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        if not thread.is_alive():
            loop.close()


@dataclass(frozen=True)
class WebSocketExchange:
    """The server's first message (its view of the upgrade request) and the echoed messages."""

    upgrade: dict[str, Any]
    echoes: list[str | bytes]

    def values(self, name: str) -> list[str]:
        lname = name.lower()
        return [str(v) for n, v in self.upgrade["headers"] if str(n).lower() == lname]

    def names(self, name: str) -> list[str]:
        lname = name.lower()
        return [str(n) for n, _ in self.upgrade["headers"] if str(n).lower() == lname]


def read_upgrade_echo(conn: WebSocketSession, timeout: float = 10.0) -> dict[str, Any]:
    """The first message the echo server sends: the JSON of the upgrade request it received."""
    first = conn.recv(timeout=timeout)
    data = json.loads(first)
    if not isinstance(data, dict):
        raise AssertionError(f"unexpected first WebSocket message: {first!r}")
    return data


def websocket_roundtrip(
    url: str,
    *,
    proxy_port: int | None,
    cacert: Path | None = None,
    headers: Sequence[tuple[str, str]] = (),
    messages: Sequence[str | bytes] = ("hello", b"\x00\x01binary"),
    timeout: float = 10.0,
) -> WebSocketExchange:
    """Connect, read the server's first message, send ``messages`` and collect their echoes."""
    with websocket(
        url, proxy_port=proxy_port, cacert=cacert, headers=headers, timeout=timeout
    ) as conn:
        upgrade = read_upgrade_echo(conn, timeout)
        echoes: list[str | bytes] = []
        for message in messages:
            conn.send(message)
            echoes.append(conn.recv(timeout=timeout))
    return WebSocketExchange(upgrade=upgrade, echoes=echoes)


# --- raw CONNECT tunnels and persistent HTTP/1.1 connections ---------------------------------


class ProxyError(Exception):
    """The proxy refused a CONNECT request."""

    def __init__(self, status: int, response: bytes) -> None:
        super().__init__(f"CONNECT refused with status {status}: {response[:300]!r}")
        self.status = status
        self.response = response


def open_tunnel(proxy_port: int, host: str, port: int, timeout: float = 10.0) -> socket.socket:
    """A TCP socket to the proxy on which ``CONNECT host:port`` succeeded (2xx)."""
    sock = socket.create_connection((LISTEN_HOST, proxy_port), timeout=timeout)
    authority = format_authority(host, port)
    sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            break
        response += chunk
    head, _, rest = response.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    if not 200 <= status < 300:
        sock.close()
        raise ProxyError(status, response)
    if rest:  # nothing may follow the CONNECT response before we speak
        sock.close()
        raise AssertionError(f"unexpected bytes after the CONNECT response: {rest!r}")
    return sock


def recv_exactly(sock: socket.socket, count: int) -> bytes:
    """Read exactly ``count`` bytes (fails on EOF)."""
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise AssertionError(f"connection closed after {len(data)} of {count} bytes")
        data.extend(chunk)
    return bytes(data)


@contextmanager
def https_connection(
    *,
    proxy_port: int,
    host: str,
    port: int,
    cacert: Path,
    timeout: float = 10.0,
) -> Iterator[http.client.HTTPSConnection]:
    """A persistent HTTP/1.1 connection to ``https://host:port`` tunnelled through the proxy.

    Requests on it reuse one TLS connection (keep-alive), so a test can check what happens to an
    open connection across a configuration reload. ``cacert`` is the only CA trusted.
    """
    ctx = client_context(cacert, alpn=("http/1.1",))
    conn = http.client.HTTPSConnection(LISTEN_HOST, proxy_port, timeout=timeout, context=ctx)
    conn.set_tunnel(host, port)
    try:
        yield conn
    finally:
        conn.close()


def get_json(
    conn: http.client.HTTPConnection, path: str = "/", headers: Sequence[tuple[str, str]] = ()
) -> tuple[int, dict[str, Any]]:
    """Send ``GET path`` on ``conn`` with ``headers`` as given; return (status, JSON body)."""
    conn.putrequest("GET", path, skip_accept_encoding=True)
    for name, value in headers:
        conn.putheader(name, value)
    conn.endheaders()
    response = conn.getresponse()
    raw = response.read()
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise AssertionError(f"status {response.status}, non-JSON body {raw[:500]!r}") from exc
    if not isinstance(body, dict):
        raise AssertionError(f"status {response.status}, unexpected body {body!r}")
    return response.status, body


def header_values(body: dict[str, Any], name: str) -> list[str]:
    """Values of ``name`` (case-insensitive) in an echo server JSON body."""
    lname = name.lower()
    return [str(v) for n, v in body["headers"] if str(n).lower() == lname]


def header_names(body: dict[str, Any], name: str) -> list[str]:
    """Exact spellings of the fields named ``name`` (case-insensitive) in an echo JSON body."""
    lname = name.lower()
    return [str(n) for n, _ in body["headers"] if str(n).lower() == lname]


def tls_handshake_via_proxy(
    *, proxy_port: int, host: str, port: int, cacert: Path, timeout: float = 10.0
) -> ssl.SSLSocket:
    """CONNECT, then a TLS handshake trusting only ``cacert`` (``ssl.SSLError`` if untrusted)."""
    raw = open_tunnel(proxy_port, host, port, timeout)
    ctx = client_context(cacert, alpn=("http/1.1",))
    try:
        return ctx.wrap_socket(raw, server_hostname=host)
    except BaseException:
        raw.close()
        raise


def header_pairs(lines: Sequence[str]) -> list[tuple[str, str]]:
    """``["Name: value", ...]`` (curl's ``-H`` form) as ``[(name, value), ...]``."""
    pairs: list[tuple[str, str]] = []
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"not a header line: {line!r}")
        pairs.append((name, value.strip()))
    return pairs
