"""Who is asking: established at the CONNECT (for its whole tunnel) or per plain-HTTP request.

Sources, as the allowlist's `identity:` section chooses them (`chime_egress.policy.identity`):
- a trusted header (`X-Authenticated-User`, optionally a groups header) set by an authenticating
  parent proxy on its CONNECTs and plain-HTTP requests, believed only from the parent's listed
  addresses; from anyone else it is ignored. It is removed from those requests either way, so
  it is never forwarded;
- Basic proxy credentials (`Proxy-Authorization`), checked against the htpasswd file or the
  LDAP directory, off the event loop and cached; missing or wrong ones are answered 407, and
  they are removed from the request before it goes on;
- groups from the group file and the directory, added to those the header gave.

Failing closed: credentials that cannot be checked (the directory does not answer) are answered
502, for every destination, since the proxy cannot know who is asking. An identity whose groups
cannot be read is "unavailable": its connections go on, but `client_policy` raises for them, so
a Chime connection is refused (`routing.py`, `injection.py`) rather than given the policy of
someone with fewer restrictions. Only HTTP proxy clients (regular and upstream mode) are asked
for credentials; in other modes there is nobody to ask and the client's address decides.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from cachetools import TTLCache
from mitmproxy import connection, http
from mitmproxy.addons.proxyauth import is_http_proxy, make_auth_required_response

from ..policy.client_policy import ClientPolicy
from ..policy.identity import Identity, IdentitySettings, fold
from ..untrusted import printable
from .current import CurrentPolicy
from .directory import Directory, DirectoryUnavailable
from .jsonlog import fields
from .metrics import Metrics
from .peers import client_address, client_peer

logger = logging.getLogger("chime_egress")

PROXY_AUTHORIZATION = "Proxy-Authorization"
# Bounds of the caches: a password-guessing client must not grow them without limit.
CACHED_ANSWERS = 10_000
CACHED_FAILURES = 2_000
HTPASSWD_WORKERS = 2


class IdentityUnavailable(Exception):
    """Who is asking cannot be known now (the directory does not answer): refuse Chime."""


@dataclass(frozen=True)
class IdentityState:
    identity: Identity | None  # None: nobody known (no source applies, or none was presented)
    unavailable: str | None = None  # why who is asking cannot be known


ANONYMOUS = IdentityState(None)


def parse_basic(value: str | None) -> tuple[str, str] | None:
    """(user, password) of a `Basic` credentials value, else None. The password may hold ':'."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user, separator, password = decoded.partition(":")
    if not separator or not user:
        return None
    return user, password


class Resolver:
    """Checks credentials and finds groups for one IdentitySettings, with bounded caches."""

    def __init__(self, settings: IdentitySettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.directory = Directory(settings.ldap) if settings.ldap is not None else None
        self._answers: TTLCache[tuple[str, ...], Any] = TTLCache(
            CACHED_ANSWERS, settings.cache_seconds
        )
        self._failures: TTLCache[tuple[str, ...], bool] = TTLCache(
            CACHED_FAILURES, settings.failure_cache_seconds
        )
        # Cached credentials are keyed by an HMAC under a key of this process only: no
        # password, nor a hash that could be tried offline, is ever kept.
        self._secret = os.urandom(32)
        self._pool: ThreadPoolExecutor | None = None
        if settings.htpasswd is not None:  # bcrypt is slow on purpose: never on the loop
            self._pool = ThreadPoolExecutor(HTPASSWD_WORKERS, thread_name_prefix="chime-htpasswd")

    def close(self) -> None:
        if self.directory is not None:
            self.directory.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)  # checks under way finish for their askers

    def _count(self, source: str, result: str) -> None:
        self.metrics.child(self.metrics.identity_lookups, source, result).inc()

    async def authenticate(self, user: str, password: str) -> bool:
        """Whether the password is the user's; raises DirectoryUnavailable when unknowable."""
        source = self.settings.proxy_auth or "none"
        digest = hmac.new(self._secret, password.encode(), hashlib.sha256).hexdigest()
        key = ("auth", user, digest)
        if key in self._answers:
            self._count(source, "cached")
            return True
        if key in self._failures:
            self._count(source, "cached_failure")
            return False
        try:
            ok = await self._check(user, password, digest)
        except DirectoryUnavailable:
            self._count(source, "unavailable")
            raise
        self._count(source, "accepted" if ok else "rejected")
        if ok:
            self._answers[key] = True
        else:
            self._failures[key] = True
        return ok

    async def _check(self, user: str, password: str, digest: str) -> bool:
        htpasswd = self.settings.htpasswd
        if htpasswd is not None and self._pool is not None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, htpasswd.check, user, password)
        if self.directory is None or not password:
            return False
        entry = await self.directory.find_user(user)
        if entry is None:
            return False
        self._answers[("groups", fold(user))] = entry.groups  # the same search told them
        return await self.directory.check_password(entry.dn, password, digest)

    async def groups(self, user: str | None) -> frozenset[str]:
        """The user's groups from the group file and the directory (folded names)."""
        settings = self.settings
        groups = settings.group_file.groups_of(user) if settings.group_file else frozenset()
        if user is None or self.directory is None or not settings.ldap_groups:
            return groups
        key = ("groups", fold(user))
        found: frozenset[str] | None = self._answers.get(key)
        if found is not None:
            self._count("ldap_groups", "cached")
            return groups | found
        try:
            entry = await self.directory.find_user(user)
        except DirectoryUnavailable:
            self._count("ldap_groups", "unavailable")
            raise
        self._count("ldap_groups", "answered")
        found = entry.groups if entry is not None else frozenset()
        self._answers[key] = found
        return groups | found


class Identities:
    """Establishes who is asking and chooses the client policy by it."""

    def __init__(self, current: CurrentPolicy, metrics: Metrics) -> None:
        self.current = current
        self.metrics = metrics
        self.resolver: Resolver | None = None
        # A CONNECT's identity holds for every request in its tunnel (as mitmproxy's proxyauth
        # does); a plain-HTTP request's holds for that request only, since a parent proxy
        # sends the requests of many users over one connection.
        self._tunnels: WeakKeyDictionary[connection.Client, IdentityState] = WeakKeyDictionary()
        self._requests: WeakKeyDictionary[http.HTTPFlow, IdentityState] = WeakKeyDictionary()

    def update(self, settings: IdentitySettings | None) -> None:
        """Follow a newly published policy; the caches survive unless the settings changed."""
        if self.resolver is not None and self.resolver.settings == settings:
            return
        old, self.resolver = self.resolver, None
        if settings is not None:
            self.resolver = Resolver(settings, self.metrics)
        if old is not None:
            old.close()

    def close(self) -> None:
        self.update(None)

    # Choosing the policy

    def state(self, client: connection.Client, flow: http.HTTPFlow | None = None) -> IdentityState:
        if flow is not None and (found := self._requests.get(flow)) is not None:
            return found
        return self._tunnels.get(client, ANONYMOUS)

    def client_policy(
        self, client: connection.Client, flow: http.HTTPFlow | None = None
    ) -> ClientPolicy:
        """The policy of who is asking, else of the client's address; raises when unknowable."""
        clients = self.current.policy.clients
        if self.resolver is None:  # no identity section: the address decides, as before
            return clients.for_client(client_address(client))
        state = self.state(client, flow)
        if state.unavailable is not None:
            raise IdentityUnavailable(state.unavailable)
        return clients.select(state.identity, client_address(client))

    def log_fields(
        self, client: connection.Client, flow: http.HTTPFlow | None = None
    ) -> dict[str, Any]:
        """The user name for log records, only where the admin enabled it (`log_users`)."""
        resolver = self.resolver
        if resolver is None or not resolver.settings.log_users:
            return {}
        identity = self.state(client, flow).identity
        return {"user": identity.user} if identity is not None else {}

    # Hooks

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        # Recorded even with nothing to ask: a request in this tunnel must never be taken for a
        # plain proxy request (and asked for credentials) after a reload adds proxy_auth.
        if flow.response is not None:  # answered by another addon already
            return
        state = await self._identify(flow)
        if state is not None:
            self._tunnels[flow.client_conn] = state

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        resolver = self.resolver
        if resolver is None or flow.response is not None:
            return
        if flow.client_conn in self._tunnels:
            # Inside a tunnel its CONNECT was identified (a parent adds its header to the
            # CONNECT). A copy in the request is the client's claim: never forwarded either.
            self._strip_trusted(flow, resolver.settings)
            return
        if not is_http_proxy(flow):  # transparent, reverse...: nobody to ask; nothing forwarded
            self._strip_trusted(flow, resolver.settings)
            return
        state = await self._identify(flow)
        if state is not None:
            self._requests[flow] = state

    @staticmethod
    def _strip_trusted(flow: http.HTTPFlow, settings: IdentitySettings) -> None:
        header = settings.trusted_header
        if header is not None:
            flow.request.headers.pop(header.user, None)
            if header.groups is not None:
                flow.request.headers.pop(header.groups, None)

    async def _identify(self, flow: http.HTTPFlow) -> IdentityState | None:
        """Who sent this CONNECT or plain request; None when it was answered (407 or 502)."""
        resolver = self.resolver
        if resolver is None:
            return ANONYMOUS
        settings = resolver.settings
        header = settings.trusted_header
        if header is not None:
            headers = flow.request.headers
            users = headers.get_all(header.user)
            groups = headers.get_all(header.groups) if header.groups is not None else []
            self._strip_trusted(flow, settings)
            if header.is_parent(client_address(flow.client_conn)):
                return await self._from_parent(flow, resolver, users, groups)
            if users or groups:
                self._ignored_header(flow, header.user if users else str(header.groups))
        if settings.proxy_auth is not None:
            return await self._authenticate(flow, resolver)
        return ANONYMOUS

    async def _from_parent(
        self, flow: http.HTTPFlow, resolver: Resolver, users: list[str], groups: list[str]
    ) -> IdentityState:
        if len(users) > 1:
            # A parent that appends its header to the client's copy (Squid's request_header_add
            # does, without request_header_access) makes the user the client's choice.
            why = f"the parent proxy sent {len(users)} user headers; it must send exactly one"
            self._log_unavailable(flow, why)
            return IdentityState(None, why)
        user = users[0].strip() or None if users else None
        named = frozenset(fold(g) for value in groups for g in value.split(",") if g.strip())
        if user is None and not named:
            return ANONYMOUS
        return await self._with_groups(flow, resolver, user, named, "trusted_header")

    async def _authenticate(self, flow: http.HTTPFlow, resolver: Resolver) -> IdentityState | None:
        headers = flow.request.headers
        credentials = parse_basic(headers.get(PROXY_AUTHORIZATION))
        headers.pop(PROXY_AUTHORIZATION, None)  # never forwarded, right or wrong
        if credentials is None:
            self._refuse(flow, "credentials_missing", make_auth_required_response(True))
            return None
        user, password = credentials
        try:
            ok = await resolver.authenticate(user, password)
        except DirectoryUnavailable as error:
            self._log_unavailable(flow, str(error), user)
            self._refuse(
                flow,
                "directory_unavailable",
                http.Response.make(
                    502,
                    b"chime-egress: your proxy credentials cannot be checked now (the directory "
                    b"does not answer); try again shortly\n",
                    {"Content-Type": "text/plain"},
                ),
            )
            return None
        if not ok:
            who = printable(user, 64) if resolver.settings.log_users else "a user"
            client = client_peer(flow.client_conn)
            logger.info(
                f"chime: proxy authentication failed for {who} from {client}",
                extra=fields(
                    "proxy_auth_failed",
                    client=client,
                    user=user if resolver.settings.log_users else None,
                ),
            )
            self._refuse(flow, "credentials_rejected", make_auth_required_response(True))
            return None
        return await self._with_groups(flow, resolver, user, frozenset(), "proxy_auth")

    async def _with_groups(
        self,
        flow: http.HTTPFlow,
        resolver: Resolver,
        user: str | None,
        named: frozenset[str],
        source: str,
    ) -> IdentityState:
        try:
            groups = named | await resolver.groups(user)
        except DirectoryUnavailable as error:
            why = f"the directory does not answer for the groups: {error}"
            self._log_unavailable(flow, why, user)
            return IdentityState(None, why)
        return IdentityState(Identity(user, groups, source))

    def _refuse(self, flow: http.HTTPFlow, reason: str, response: http.Response) -> None:
        self.metrics.child(self.metrics.identity_refused, reason).inc()
        flow.response = response

    def _ignored_header(self, flow: http.HTTPFlow, name: str) -> None:
        self.metrics.identity_headers_ignored.inc()
        client = client_peer(flow.client_conn)
        logger.warning(
            f"chime: ignored and removed {name} from {client}, which is not a listed parent "
            "proxy (identity.trusted_header.parents)",
            extra=fields("identity_header_ignored", client=client, header=name),
        )

    def _log_unavailable(self, flow: http.HTTPFlow, why: str, user: str | None = None) -> None:
        resolver = self.resolver
        # A user name is what the client sent: shown escaped, as every client-chosen text is.
        shown = (
            printable(user, 64)
            if user is not None and resolver is not None and resolver.settings.log_users
            else None
        )
        client = client_peer(flow.client_conn)
        logger.warning(
            f"chime: cannot tell who {client} is{f' ({shown})' if shown else ''}: "
            f"{printable(why)}; its Chime requests are refused",
            extra=fields(
                "identity_unavailable", client=client, user=user if shown else None, reason=why
            ),
        )
