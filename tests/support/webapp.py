"""A small web app for the CSP addon's tests, and a reverse proxy in front of it.

:class:`WebApp` is a threaded HTTP/1.1 server on a loopback address. It answers from a table of
routes (``app.route(path, body, headers=...)``) that tests may change at any time, records every
request it receives, and can stand in for two kinds of servers:

* the *app* behind the reverse proxy (plain HTTP): HTML pages with whatever
  ``Content-Security-Policy`` headers a test wants, the browser tests' probe script, and ``404``
  for anything else;
* the *Chime* servers a page talks to (TLS, ``cors=True``): every ``GET`` not in the table is
  answered ``200`` with CORS headers (so an allowed ``fetch`` resolves), ``*.js`` as JavaScript, and
  a WebSocket upgrade gets a real ``101`` and one text message, ``hello``.

:func:`start_reverse_proxy` runs the real ``mitmdump`` in reverse mode in front of an app.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .lifecycle import Service
from .proxy import LISTEN_HOST, MitmdumpProcess, ProxyLauncher

CSP_SCRIPT = Path(__file__).resolve().parents[2] / "addon" / "chime_csp.py"
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_BODY = 4 << 20


@dataclass(frozen=True)
class Route:
    """A canned answer: status, header fields (in order, duplicates kept) and body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True)
class AppRequest:
    """One request as the app received it."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        lname = name.lower()
        return next((v for n, v in self.headers if n.lower() == lname), None)


def html_page(title: str = "chime-csp test page", script: str | None = None) -> bytes:
    """A minimal HTML document (optionally loading one same-origin script)."""
    tag = f'<script src="{script}"></script>' if script else ""
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{title}</title>{tag}</head>"
        f"<body><p>{title}</p></body></html>"
    ).encode()


class WebApp(Service):
    """A loopback HTTP/1.1 server (plain, or TLS with ``cert``/``key``); a context manager."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        cert: tuple[Path, Path] | None = None,
        cors: bool = False,
        name: str = "webapp",
    ) -> None:
        self.host = host
        self.cors = cors
        self.name = name
        self._cert = cert
        self._routes: dict[str, Route] = {}
        self._requests: list[AppRequest] = []
        self._lock = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- routes and what was received ------------------------------------------------------

    def route(
        self,
        path: str,
        body: bytes | str = b"",
        *,
        status: int = 200,
        headers: Iterable[tuple[str, str]] = (),
        content_type: str | None = "text/html; charset=utf-8",
    ) -> str:
        """Answer ``GET``/``HEAD``/``POST`` for ``path`` (query ignored) so; returns ``path``."""
        fields = [(n, v) for n, v in headers]
        if content_type is not None:
            fields.insert(0, ("Content-Type", content_type))
        data = body.encode() if isinstance(body, str) else body
        with self._lock:
            self._routes[path] = Route(status, tuple(fields), data)
        return path

    def requests(self, path: str | None = None) -> list[AppRequest]:
        """Every request received (for ``path`` only, query ignored, when given)."""
        with self._lock:
            return [r for r in self._requests if path is None or r.path.split("?")[0] == path]

    def _lookup(self, path: str) -> Route | None:
        with self._lock:
            return self._routes.get(path.split("?")[0])

    def _record(self, request: AppRequest) -> None:
        with self._lock:
            self._requests.append(request)
            self._lock.notify_all()

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{self.name} not started")
        return int(self._server.server_address[1])

    @property
    def scheme(self) -> str:
        return "https" if self._cert else "http"

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self) -> WebApp:
        app = self

        class Handler(_Handler):
            webapp = app

        server = ThreadingHTTPServer((self.host, 0), Handler)
        server.daemon_threads = True
        if self._cert is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self._cert[0]), str(self._cert[1]))
            context.set_alpn_protocols(["http/1.1"])
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True, name=self.name
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None


class _Handler(BaseHTTPRequestHandler):
    webapp: WebApp
    protocol_version = "HTTP/1.1"
    server_version = "chime-csp-test-webapp"
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:  # the tests' output stays quiet
        pass

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionError, ssl.SSLError, TimeoutError):
            self.close_connection = True

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            raise ValueError("request body too large for the test app")
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        body = self._read_body()
        request = AppRequest(
            method=self.command,
            path=self.path,
            headers=tuple((n, v) for n, v in self.headers.items()),
            body=body,
        )
        self.webapp._record(request)
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self._websocket()
            return
        route = self.webapp._lookup(self.path)
        if route is None and self.webapp.cors:
            route = _cors_answer(self.path)
        if route is None:
            route = Route(404, (("Content-Type", "text/plain"),), b"not found\n")
        self.send_response(route.status)
        for name, value in route.headers:
            self.send_header(name, value)
        if self.webapp.cors:
            self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Content-Length", str(len(route.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(route.body)

    do_GET = do_POST = do_HEAD = do_PUT = _serve

    def do_OPTIONS(self) -> None:  # CORS preflight, should a browser send one
        self.webapp._record(AppRequest("OPTIONS", self.path, tuple(self.headers.items()), b""))
        self.send_response(204)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Methods", "GET, POST")
        self.send_header("Access-Control-Allow-Headers", "*")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _websocket(self) -> None:
        key = self.headers.get("Sec-WebSocket-Key", "").encode()
        accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.write(b"\x81\x05hello")  # one unmasked, final text frame
        self.wfile.flush()
        self.close_connection = True
        # Hold the connection until the client closes it (or the test server stops).
        self.connection.settimeout(10)
        try:
            while self.connection.recv(4096):
                pass
        except OSError:
            pass


def _cors_answer(path: str) -> Route:
    bare = path.split("?")[0]
    if bare.endswith(".js"):
        return Route(200, (("Content-Type", "text/javascript"),), b"/* probe script */\n")
    payload = json.dumps({"path": path}).encode()
    return Route(200, (("Content-Type", "application/json"),), payload)


# --- mitmdump in reverse mode ----------------------------------------------------------------


@dataclass
class ReverseProxy:
    """A mitmdump reverse proxy in front of an app, listening on ``127.0.0.1:port``."""

    process: MitmdumpProcess
    port: int

    def url(self, path: str = "/", *, host: str = LISTEN_HOST, scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"


def start_reverse_proxy(
    launcher: ProxyLauncher,
    upstream: str,
    options: Sequence[str] = (),
    *,
    script: Path = CSP_SCRIPT,
    label: str | None = None,
) -> ReverseProxy:
    """``mitmdump -s addon/chime_csp.py --mode reverse:UPSTREAM`` with ``--set`` ``options``."""
    process = launcher.start(
        None, extra_args=reverse_proxy_args(upstream, options), script=script, label=label
    )
    return ReverseProxy(process=process, port=process.port)


def reverse_proxy_args(upstream: str, options: Sequence[str] = ()) -> list[str]:
    """The mitmdump arguments of :func:`start_reverse_proxy`, for ``run_expect_failure``."""
    args = ["--mode", f"reverse:{upstream}"]
    for option in options:
        args += ["--set", option]
    return args
