"""A real Squid as the authenticating parent proxy that chains to mitmdump, for the identity tests.

Clients authenticate to Squid with Basic credentials (``basic_ncsa_auth`` over an htpasswd file
of apr1 hashes made by ``openssl passwd``); Squid forwards every request, CONNECT included, to
mitmdump as its only ``cache_peer``, from the source address ``OUTGOING`` (so mitmdump can tell
the parent from other clients on loopback), adding ``X-Authenticated-User: <user>`` and, for
members listed in ``groups``, ``X-Authenticated-Groups``. ``request_header_access ... deny all``
first removes any copy the client sent: ``request_header_add`` alone appends to it.

Squid drops its privileges to the ``proxy`` user, so its folder is a world-readable temporary
folder (pytest's are private to root), removed on stop.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from .lifecycle import Service
from .servers import free_port

SQUID = Path("/usr/sbin/squid")
OUTGOING = "127.0.0.5"
USER_HEADER = "X-Authenticated-User"
GROUPS_HEADER = "X-Authenticated-Groups"


def apr1(password: str) -> str:
    """An apr1 (Apache MD5) hash, which Squid's basic_ncsa_auth checks."""
    result = subprocess.run(
        ["openssl", "passwd", "-apr1", "-stdin"],
        input=password,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout.strip()


class Squid(Service):
    def __init__(
        self,
        *,
        peer_port: int,
        passwords: Mapping[str, str],
        groups: Mapping[str, str] | None = None,
    ) -> None:
        self.peer_port = peer_port
        self.passwords = dict(passwords)
        self.groups = dict(groups or {})  # user -> the groups header value Squid adds
        self.port = free_port()
        self.workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Squid:
        if not SQUID.exists():
            raise RuntimeError("squid is not installed (Debian package squid)")
        workdir = Path(tempfile.mkdtemp(prefix="squid-parent-"))
        workdir.chmod(0o755)
        self.workdir = workdir
        passwd = workdir / "passwd"
        passwd.write_text(
            "".join(f"{user}:{apr1(pw)}\n" for user, pw in self.passwords.items()),
            encoding="utf-8",
        )
        passwd.chmod(0o644)
        group_lines = []
        for index, (user, value) in enumerate(self.groups.items()):
            group_lines.append(f"acl user{index} proxy_auth {user}")
            group_lines.append(f'request_header_add {GROUPS_HEADER} "{value}" user{index}')
        config = workdir / "squid.conf"
        config.write_text(
            "\n".join(
                [
                    f"http_port 127.0.0.1:{self.port}",
                    f"pid_filename {workdir / 'squid.pid'}",
                    f"cache_log {workdir / 'cache.log'}",
                    f"access_log stdio:{workdir / 'access.log'}",
                    f"coredump_dir {workdir}",
                    "cache deny all",
                    "cache_mem 8 MB",
                    "shutdown_lifetime 0 seconds",
                    "dns_nameservers 127.0.0.1",
                    f"auth_param basic program /usr/lib/squid/basic_ncsa_auth {passwd}",
                    "auth_param basic children 2 startup=1",
                    "auth_param basic realm parent",
                    "acl authenticated proxy_auth REQUIRED",
                    "http_access deny !authenticated",
                    "http_access allow authenticated",
                    "http_access deny all",
                    f"cache_peer 127.0.0.1 parent {self.peer_port} 0 no-query no-digest default",
                    "never_direct allow all",
                    f"tcp_outgoing_address {OUTGOING}",
                    f"request_header_access {USER_HEADER} deny all",
                    f"request_header_access {GROUPS_HEADER} deny all",
                    f'request_header_add {USER_HEADER} "%ul" authenticated',
                    *group_lines,
                    "",
                ]
            ),
            encoding="utf-8",
        )
        config.chmod(0o644)
        for name in ("cache.log", "access.log"):
            (workdir / name).touch()
        shutil.chown(workdir, user="proxy")
        for path in workdir.iterdir():
            shutil.chown(path, user="proxy")
        self._proc = subprocess.Popen(
            [str(SQUID), "-N", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=(workdir / "squid.out").open("ab"),
            stderr=subprocess.STDOUT,
        )
        self._wait_until_listening()
        return self

    def _wait_until_listening(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"squid exited with {self._proc.returncode}:\n{self.describe()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"squid is not listening:\n{self.describe()}") from None
                time.sleep(0.05)

    def describe(self) -> str:
        if self.workdir is None:
            return "(not started)"
        parts = []
        for name in ("squid.out", "cache.log", "access.log"):
            path = self.workdir / name
            if path.exists():
                parts.append(f"--- {name} ---\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
