"""The LDAP directory, asked without ever blocking the event loop.

mitmproxy's own LDAP check searches and binds synchronously inside the event loop, so one slow
directory stalls every connection of the proxy. Here each question runs in a small thread pool
(ldap3 is synchronous; no kept asyncio LDAP library installs without a C build: bonsai needs
libldap headers), and every question has a deadline:
- a question waits at most `timeout_seconds` for its answer, then fails as "unavailable";
- ldap3's own connect and receive timeouts stop the thread that asked it, soon after;
- a question still queued when its deadline passes is dropped without being sent;
- at most MAX_PENDING distinct questions wait at once (more fail at once as unavailable), and
  the same question asked twice while the first is pending waits for the first one's answer.
Caching the answers is the caller's business (`identity.py`); this module only asks.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from ..policy.identity import (
    LDAP_GROUPS_MEMBER_OF,
    LDAP_GROUPS_SEARCH,
    LdapSettings,
    fold,
)

WORKERS = 4
MAX_PENDING = 256
T = TypeVar("T")


class DirectoryUnavailable(Exception):
    """The directory did not answer in time, or answered with an error."""


@dataclass(frozen=True)
class UserEntry:
    dn: str
    groups: frozenset[str]  # folded group names (each group DN's first value, e.g. its cn)


def group_name(dn: str) -> str:
    """`cn=Sales,ou=groups,dc=example,dc=org` -> "sales": what allowlist entries name."""
    try:
        return fold(str(parse_dn(dn)[0][1]))
    except (LDAPException, IndexError, ValueError):
        return fold(dn)


class Directory:
    """Asks one LDAP directory for users, their groups, and whether a password is theirs."""

    def __init__(self, settings: LdapSettings) -> None:
        self.settings = settings
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="chime-ldap")
        self._local = threading.local()  # each worker keeps its own service connection
        self._pending: dict[tuple[str, ...], asyncio.Future[Any]] = {}
        receive = max(1, math.ceil(settings.timeout_seconds))  # ldap3 needs whole seconds
        self._receive_timeout = receive

    def close(self) -> None:
        # Queued questions still run (or are dropped at their deadline), so no asker sees a
        # cancelled future; the threads end when the queue is empty.
        self._pool.shutdown(wait=False)

    async def find_user(self, user: str) -> UserEntry | None:
        """The user's entry and groups; None when the directory has no such user."""
        return await self._ask(("user", fold(user)), lambda: self._find_user(user))

    async def check_password(self, dn: str, password: str, digest: str) -> bool:
        """Whether a simple bind as `dn` with `password` succeeds; `digest` is the password's
        keyed fingerprint (the resolver's), which identifies the same question in flight."""
        if not password:  # an empty password is an anonymous bind: it would "succeed"
            return False
        key = ("bind", dn, digest)
        return await self._ask(key, lambda: self._bind_as(dn, password))

    async def _ask(self, key: tuple[str, ...], work: Callable[[], T]) -> T:
        pending = self._pending.get(key)
        if pending is None:
            if len(self._pending) >= MAX_PENDING:
                raise DirectoryUnavailable(f"{MAX_PENDING} directory questions already waiting")
            deadline = time.monotonic() + self.settings.timeout_seconds
            loop = asyncio.get_running_loop()
            pending = loop.run_in_executor(self._pool, self._before_deadline, deadline, work)
            self._pending[key] = pending
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        try:
            result: T = await asyncio.wait_for(
                asyncio.shield(pending), self.settings.timeout_seconds
            )
        except TimeoutError:
            raise DirectoryUnavailable(
                f"no answer from {self.settings.url} within {self.settings.timeout_seconds:g}s"
            ) from None
        return result

    @staticmethod
    def _before_deadline(deadline: float, work: Callable[[], T]) -> T:
        if time.monotonic() > deadline:  # its asker has given up: don't load the directory
            raise DirectoryUnavailable("dropped: waited past its deadline for a worker")
        return work()

    # In the worker threads

    def _connection(self, dn: str, password: str) -> ldap3.Connection:
        # A Server object of its own for each connection: ldap3's remembers a failed address
        # for five seconds, and is not meant to be shared between threads.
        url = self.settings.url
        # ldap3 checks no certificate unless told to; ldaps:// uses the system's CAs.
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED) if url.startswith("ldaps:") else None
        server = ldap3.Server(
            url, connect_timeout=self.settings.timeout_seconds, get_info=ldap3.NONE, tls=tls
        )
        return ldap3.Connection(
            server,
            user=dn,
            password=password,
            receive_timeout=self._receive_timeout,
            raise_exceptions=False,
            read_only=True,
        )

    def _service(self) -> ldap3.Connection:
        conn: ldap3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or not conn.bound:
            conn = self._connection(self.settings.bind_dn, self.settings.bind_password)
            try:
                bound = conn.bind()
            except LDAPException as error:
                raise DirectoryUnavailable(f"{self.settings.url}: {error}") from None
            if not bound:
                raise DirectoryUnavailable(
                    f"{self.settings.url}: the service bind as {self.settings.bind_dn} failed: "
                    f"{conn.result.get('description')}"
                )
            self._local.conn = conn
        return conn

    def _search(self, base: str, query: str, attributes: list[str]) -> list[dict[str, Any]]:
        reused = getattr(self._local, "conn", None) is not None
        try:
            return self._search_once(base, query, attributes)
        except DirectoryUnavailable:
            self._local.conn = None
            if not reused:
                raise
        # The kept connection may be one the directory has dropped (a restart): once more.
        return self._search_once(base, query, attributes)

    def _search_once(self, base: str, query: str, attributes: list[str]) -> list[dict[str, Any]]:
        conn = self._service()
        try:
            ok = conn.search(base, query, attributes=attributes)
        except LDAPException as error:
            raise DirectoryUnavailable(f"{self.settings.url}: {error}") from None
        result = conn.result or {}
        if not ok and result.get("description") not in ("success", "noSuchObject"):
            raise DirectoryUnavailable(
                f"{self.settings.url}: search failed: {result.get('description')}"
            )
        return [entry for entry in conn.response or () if entry.get("type") == "searchResEntry"]

    def _find_user(self, user: str) -> UserEntry | None:
        settings = self.settings
        member_of = settings.groups == LDAP_GROUPS_MEMBER_OF
        query = f"({settings.user_attribute}={escape_filter_chars(user)})"
        entries = self._search(settings.user_base, query, ["memberOf"] if member_of else [])
        if not entries:
            return None
        if len(entries) > 1:
            # Two people answer to one name: which one asks cannot be known. Refuse both.
            raise DirectoryUnavailable(
                f"{len(entries)} entries under {settings.user_base} have "
                f"{settings.user_attribute}={user}"
            )
        dn = str(entries[0]["dn"])
        groups: frozenset[str] = frozenset()
        if member_of:
            values = entries[0].get("attributes", {}).get("memberOf") or []
            groups = frozenset(group_name(str(value)) for value in values)
        elif settings.groups == LDAP_GROUPS_SEARCH and settings.group_base:
            escaped = escape_filter_chars(dn)
            query = f"(|(member={escaped})(uniqueMember={escaped}))"
            groups = frozenset(
                group_name(str(entry["dn"]))
                for entry in self._search(settings.group_base, query, [])
            )
        return UserEntry(dn, groups)

    def _bind_as(self, dn: str, password: str) -> bool:
        conn = self._connection(dn, password)
        try:
            bound = bool(conn.bind())
        except LDAPException as error:
            raise DirectoryUnavailable(f"{self.settings.url}: {error}") from None
        finally:
            conn.unbind()
        if bound:
            return True
        description = (conn.result or {}).get("description")
        if description in ("invalidCredentials", "invalidDNSyntax", "inappropriateAuthentication"):
            return False
        raise DirectoryUnavailable(f"{self.settings.url}: bind failed: {description}")
