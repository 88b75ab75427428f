"""A real OpenLDAP ``slapd`` on loopback with a throwaway directory, for the identity tests.

The server runs in the foreground (``-d 0``) as the current user, from a generated
``slapd.conf`` (mdb database, the ``memberof`` overlay so users carry ``memberOf``), listening
only on ``ldap://127.0.0.1:PORT/``. Entries are added online (the overlay maintains
``memberOf`` only for entries added through the server, not by ``slapadd``).

People (uid, password): alice (sales), bob (contractors), carol (no group), dave (sales and
contractors). ``pause()``/``resume()`` freeze the process (it accepts connections but answers
nothing: a slow directory); ``stop()`` takes it down and ``start()`` brings it back.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import ldap3
from ldap3.core.exceptions import LDAPException

from .lifecycle import Service
from .servers import free_port

SLAPD = Path("/usr/sbin/slapd")
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")
SUFFIX = "dc=example,dc=org"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "directory-admin-secret"
SERVICE_DN = f"cn=chime-egress,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "service-bind-secret"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
PASSWORDS = {
    "alice": "alice-pw:with-colon",
    "bob": "bob-pw",
    "carol": "carol-pw",
    "dave": "dave-pw",
}
MEMBERSHIPS = {"sales": ("alice", "dave"), "contractors": ("bob", "dave")}


def user_dn(uid: str) -> str:
    return f"uid={uid},{PEOPLE}"


def group_dn(name: str) -> str:
    return f"cn={name},{GROUPS}"


class Slapd(Service):
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._loaded = False

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    def start(self) -> Slapd:
        if SLAPD.exists() is False:
            raise RuntimeError("slapd is not installed (Debian package slapd)")
        (self.workdir / "db").mkdir(parents=True, exist_ok=True)
        config = self.workdir / "slapd.conf"
        includes = "".join(f"include /etc/ldap/schema/{name}.schema\n" for name in SCHEMAS)
        config.write_text(
            f"{includes}"
            f"pidfile {self.workdir / 'slapd.pid'}\n"
            "modulepath /usr/lib/ldap\n"
            "moduleload back_mdb\n"
            "moduleload memberof\n"
            "database mdb\n"
            "maxsize 10485760\n"
            f'suffix "{SUFFIX}"\n'
            f'rootdn "{ADMIN_DN}"\n'
            f"rootpw {ADMIN_PASSWORD}\n"
            f"directory {self.workdir / 'db'}\n"
            "overlay memberof\n",
            encoding="utf-8",
        )
        self._proc = subprocess.Popen(
            [str(SLAPD), "-f", str(config), "-h", f"{self.url}/", "-d", "0"],
            stdin=subprocess.DEVNULL,
            stdout=(self.workdir / "slapd.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        self._wait_until_answering()
        if not self._loaded:
            self._load()
            self._loaded = True
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)  # a paused slapd cannot act on SIGTERM
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def pause(self) -> None:
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGCONT)

    def _wait_until_answering(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                log = (self.workdir / "slapd.log").read_text(errors="replace")
                raise RuntimeError(f"slapd exited with {self._proc.returncode}:\n{log[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                with self.admin():
                    return
            except (OSError, LDAPException):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def admin(self) -> ldap3.Connection:
        """A connection bound as the directory's administrator (use it in a with block)."""
        server = ldap3.Server(self.url, get_info=ldap3.NONE, connect_timeout=5)
        return ldap3.Connection(
            server, ADMIN_DN, ADMIN_PASSWORD, auto_bind=True, receive_timeout=10
        )

    def _load(self) -> None:
        with self.admin() as conn:
            _add(conn, SUFFIX, ["dcObject", "organization"], {"o": "Example", "dc": "example"})
            for unit in ("people", "groups", "services"):
                _add(conn, f"ou={unit},{SUFFIX}", ["organizationalUnit"], {"ou": unit})
            _add(
                conn,
                SERVICE_DN,
                ["organizationalRole", "simpleSecurityObject"],
                {"cn": "chime-egress", "userPassword": SERVICE_PASSWORD},
            )
            for uid, password in PASSWORDS.items():
                _add(
                    conn,
                    user_dn(uid),
                    ["inetOrgPerson"],
                    {"uid": uid, "cn": uid.title(), "sn": uid, "userPassword": password},
                )
            for name, members in MEMBERSHIPS.items():
                _add(
                    conn,
                    group_dn(name),
                    ["groupOfNames"],
                    {"cn": name, "member": [user_dn(uid) for uid in members]},
                )

    def set_members(self, group: str, members: list[str]) -> None:
        """Replace a group's members (memberOf of the users follows, by the overlay)."""
        with self.admin() as conn:
            # groupOfNames needs at least one member: the service account stands in.
            values = [user_dn(uid) for uid in members] or [SERVICE_DN]
            ok = conn.modify(group_dn(group), {"member": [(ldap3.MODIFY_REPLACE, values)]})
            assert ok, conn.result

    def add_user(self, uid: str, password: str, *, under: str = PEOPLE) -> None:
        with self.admin() as conn:
            _add(
                conn,
                f"uid={uid},{under}",
                ["inetOrgPerson"],
                {"uid": uid, "cn": uid, "sn": uid, "userPassword": password},
            )


def _add(
    conn: ldap3.Connection, dn: str, classes: list[str], attributes: dict[str, object]
) -> None:
    ok = conn.add(dn, classes, attributes)
    assert ok, f"adding {dn}: {conn.result}"


def slapd_available() -> bool:
    return SLAPD.exists() and shutil.which("slapd", path="/usr/sbin") is not None
