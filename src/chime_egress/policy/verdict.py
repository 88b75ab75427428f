"""Chime's documented decision on a meeting connection, given the two headers it carries.

The rules are those of the AWS guide "Using AppKeys and TenantIDs" (quoted in each Rule), one set
per header; both headers must accept. Header values are parsed by the grammar the proxy emits
(see headers.py):

    X-Amzn-Chime-App-Keys = appkey *( "," appkey )
    X-Amzn-Chime-Tenants  = entry *( ";" entry ),  entry = appkey ":" tenantid *( "," tenantid )

A value outside that grammar is reported, never judged: the guide says nothing about how Chime
reads one, and a guessed "accept" is exactly the answer an admin must not rely on.

Identifiers are compared exactly, as the proxy sends them: the guide says TenantIDs are case
sensitive and gives AppKeys no text form at all.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from .headers import APP_KEYS_HEADER, TENANTS_HEADER
from .identifiers import app_key_problem, tenant_id_problem

# CreateMeeting's TenantIds holds 1 to 5 items; a meeting created without it has none.
MAX_SESSION_TENANT_IDS = 5

# Optional whitespace around a field value is not part of it (RFC 9110, section 5.5), so a value
# copied with its leading space from a capture means the same thing to Chime.
_OWS = " \t"

BOTH_MUST_ACCEPT = "Both headers must accept the connection; a 403 from either one refuses it."


class Decision(enum.Enum):
    ACCEPT = "accept"
    REJECT = "403"


@dataclass(frozen=True)
class Rule:
    """One documented rule: which header, what it decides, and the guide's own words."""

    code: str  # stable name for scripts and tests
    header: str
    decision: Decision
    wording: str  # quoted from the AWS guide


APP_KEYS_LISTED = Rule(
    "app-keys-listed",
    APP_KEYS_HEADER,
    Decision.ACCEPT,
    "If the X-Amzn-Chime-App-Keys header is present and includes the session's AppKey, "
    "accept the connection.",
)
APP_KEYS_NOT_LISTED = Rule(
    "app-keys-not-listed",
    APP_KEYS_HEADER,
    Decision.REJECT,
    "If the X-Amzn-Chime-App-Keys header is present but does not include the session's AppKey, "
    "reject the connection with a 403 error.",
)
APP_KEYS_ABSENT = Rule(
    "app-keys-absent",
    APP_KEYS_HEADER,
    Decision.ACCEPT,
    "If the X-Amzn-Chime-App-Keys header is not present, accept the connection. If users can "
    "access the application from outside the organization's network, they can also access the "
    "session.",
)
TENANTS_LISTED = Rule(
    "tenants-listed",
    TENANTS_HEADER,
    Decision.ACCEPT,
    "If the header includes the session's AppKey:tenantId, accept the connection.",
)
TENANTS_OTHER_TENANTS = Rule(
    "tenants-other-tenants",
    TENANTS_HEADER,
    Decision.REJECT,
    "If the header includes the session's AppKey but no matching tenantId, reject the connection "
    "with a 403 error.",
)
TENANTS_APP_NOT_LISTED = Rule(
    "tenants-app-not-listed",
    TENANTS_HEADER,
    Decision.ACCEPT,
    "If the header does not include the session's AppKey, accept the connection.",
)
TENANTS_SESSION_WITHOUT_TENANTS = Rule(
    "tenants-session-without-tenants",
    TENANTS_HEADER,
    Decision.REJECT,
    "If the header includes the session's AppKey, but the session doesn't have at least one "
    "allowed tenantId, reject the connection with a 403 error. This may be a developer bug.",
)
TENANTS_ABSENT = Rule(
    "tenants-absent",
    TENANTS_HEADER,
    Decision.ACCEPT,
    "If the header is not present, accept the connection. If users can access the application "
    "from outside the organization's network, they can also access all sessions.",
)

RULES: tuple[Rule, ...] = (
    APP_KEYS_LISTED,
    APP_KEYS_NOT_LISTED,
    APP_KEYS_ABSENT,
    TENANTS_LISTED,
    TENANTS_OTHER_TENANTS,
    TENANTS_APP_NOT_LISTED,
    TENANTS_SESSION_WITHOUT_TENANTS,
    TENANTS_ABSENT,
)


class _Problems(ValueError):
    """Every problem found, one message each; str() is all of them, a line each."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__("\n".join(self.problems))


class InvalidSession(_Problems):
    """The session described cannot exist in Chime (an impossible AppKey or TenantIds)."""


class MalformedHeader(_Problems):
    """A header value outside the grammar; every problem is listed, naming the header."""


@dataclass(frozen=True)
class Session:
    """A meeting session as Chime sees it: the creating account's AppKey and its TenantIds."""

    app_key: str
    tenant_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if (why := app_key_problem(self.app_key)) is not None:
            problems.append(f"AppKey {self.app_key!r} {why}")
        if len(self.tenant_ids) > MAX_SESSION_TENANT_IDS:
            problems.append(
                f"{len(self.tenant_ids)} TenantIds given; a meeting has at most "
                f"{MAX_SESSION_TENANT_IDS} (CreateMeeting TenantIds)"
            )
        for tenant in self.tenant_ids:
            if (why := tenant_id_problem(tenant)) is not None:
                problems.append(f"TenantId {tenant!r} {why}")
        if problems:
            raise InvalidSession(problems)


@dataclass(frozen=True)
class AppliedRule:
    """A rule that applied, and what in the input made it apply."""

    rule: Rule
    detail: str

    @property
    def decision(self) -> Decision:
        return self.rule.decision


@dataclass(frozen=True)
class Verdict:
    session: Session
    app_keys: AppliedRule
    tenants: AppliedRule

    @property
    def rules(self) -> tuple[AppliedRule, AppliedRule]:
        return (self.app_keys, self.tenants)

    @property
    def decision(self) -> Decision:
        rejected = any(applied.decision is Decision.REJECT for applied in self.rules)
        return Decision.REJECT if rejected else Decision.ACCEPT

    @property
    def accepted(self) -> bool:
        return self.decision is Decision.ACCEPT

    @property
    def deciding(self) -> tuple[AppliedRule, ...]:
        """The rules that made the decision: those that refused, or both when none did."""
        return tuple(a for a in self.rules if a.decision is self.decision)


def parse_app_keys(value: str) -> tuple[str, ...]:
    """The AppKeys of an X-Amzn-Chime-App-Keys value; raises MalformedHeader."""
    text = value.strip(_OWS)
    if not text:
        raise MalformedHeader(
            [f"{APP_KEYS_HEADER}: is empty; the grammar needs at least one AppKey"]
        )
    problems: list[str] = []
    keys = text.split(",")
    for position, key in enumerate(keys, start=1):
        if (why := _key_problem(key, "a ',' at the start or end, or two in a row")) is not None:
            problems.append(f"{APP_KEYS_HEADER}: AppKey {position} {why}")
    if problems:
        raise MalformedHeader(problems)
    return tuple(keys)


def parse_tenants(value: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The (AppKey, TenantIds) entries of an X-Amzn-Chime-Tenants value; raises MalformedHeader."""
    text = value.strip(_OWS)
    if not text:
        raise MalformedHeader(
            [f"{TENANTS_HEADER}: is empty; the grammar needs at least one AppKey:tenantId entry"]
        )
    problems: list[str] = []
    entries: list[tuple[str, tuple[str, ...]]] = []
    first_entry: dict[str, int] = {}
    raw_entries = text.split(";")
    for position, raw in enumerate(raw_entries, start=1):
        where = f"{TENANTS_HEADER}: entry {position}"
        if ":" not in raw:
            # The guide's own prose example ("AppKey1;tenantId-1,...") fails here, on purpose:
            # which of its parts is an AppKey is exactly what cannot be known.
            reason = (
                "is empty (a ';' at the start or end, or two in a row)"
                if not raw
                else f"{raw!r} has no ':'; expected AppKey:tenantId[,tenantId...]"
            )
            problems.append(f"{where} {reason}")
            continue
        app_key, _, tenant_list = raw.partition(":")
        entry_problems: list[str] = []
        if (why := _key_problem(app_key, "nothing before ':'")) is not None:
            entry_problems.append(f"{where}: AppKey {why}")
        tenants = tenant_list.split(",")
        for index, tenant in enumerate(tenants, start=1):
            if not tenant:
                entry_problems.append(
                    f"{where}: TenantId {index} is empty (a ',' or ':' without a TenantId)"
                )
            elif (why := tenant_id_problem(tenant)) is not None:
                entry_problems.append(f"{where}: TenantId {index} {tenant!r} {why}")
        if not entry_problems and app_key in first_entry:
            # Merge, first wins or last wins: the guide does not say, so neither can this.
            entry_problems.append(
                f"{where}: AppKey {app_key!r} already has entry {first_entry[app_key]}; "
                "the guide does not say how Chime reads an AppKey listed twice"
            )
        if entry_problems:
            problems.extend(entry_problems)
            continue
        first_entry[app_key] = position
        entries.append((app_key, tuple(tenants)))
    if problems:
        raise MalformedHeader(problems)
    return tuple(entries)


def _key_problem(key: str, why_empty: str) -> str | None:
    if not key:
        return f"is empty ({why_empty})"
    why = app_key_problem(key)
    return f"{key!r} {why}" if why is not None else None


def judge(session: Session, app_keys_header: str | None, tenants_header: str | None) -> Verdict:
    """Chime's decision on a connection of `session` carrying these header values (None: absent).

    Raises MalformedHeader, listing the problems of both values, when either is outside the
    grammar.
    """
    problems: list[str] = []
    app_keys: tuple[str, ...] | None = None
    tenants: tuple[tuple[str, tuple[str, ...]], ...] | None = None
    if app_keys_header is not None:
        try:
            app_keys = parse_app_keys(app_keys_header)
        except MalformedHeader as error:
            problems.extend(error.problems)
    if tenants_header is not None:
        try:
            tenants = parse_tenants(tenants_header)
        except MalformedHeader as error:
            problems.extend(error.problems)
    if problems:
        raise MalformedHeader(problems)
    return judge_parsed(session, app_keys, None if tenants is None else dict(tenants))


def judge_parsed(
    session: Session,
    app_keys: Collection[str] | None,
    tenants: dict[str, tuple[str, ...]] | None,
) -> Verdict:
    """`judge` on values already parsed (parse_app_keys, parse_tenants), for judging many
    sessions against the same headers (a frozenset of AppKeys makes each lookup O(1))."""
    return Verdict(
        session=session,
        app_keys=_judge_app_keys(session, app_keys),
        tenants=_judge_tenants(session, tenants),
    )


def _judge_app_keys(session: Session, app_keys: Collection[str] | None) -> AppliedRule:
    if app_keys is None:
        return AppliedRule(APP_KEYS_ABSENT, f"{APP_KEYS_HEADER} is not sent")
    if session.app_key in app_keys:
        return AppliedRule(APP_KEYS_LISTED, f"{APP_KEYS_HEADER} lists {session.app_key}")
    return AppliedRule(APP_KEYS_NOT_LISTED, f"{APP_KEYS_HEADER} does not list {session.app_key}")


def _judge_tenants(session: Session, tenants: dict[str, tuple[str, ...]] | None) -> AppliedRule:
    if tenants is None:
        return AppliedRule(TENANTS_ABSENT, f"{TENANTS_HEADER} is not sent")
    key = session.app_key
    if key not in tenants:
        return AppliedRule(TENANTS_APP_NOT_LISTED, f"{TENANTS_HEADER} does not list {key}")
    allowed = tenants[key]
    listed = ",".join(allowed)
    if not session.tenant_ids:
        return AppliedRule(
            TENANTS_SESSION_WITHOUT_TENANTS,
            f"{TENANTS_HEADER} lists {key}:{listed} and the session has no TenantIds",
        )
    matching = [tenant for tenant in session.tenant_ids if tenant in allowed]
    if matching:
        return AppliedRule(TENANTS_LISTED, f"{TENANTS_HEADER} lists {key}:{matching[0]}")
    return AppliedRule(
        TENANTS_OTHER_TENANTS,
        f"{TENANTS_HEADER} lists {key}:{listed}, none of the session's TenantIds "
        f"({', '.join(session.tenant_ids)})",
    )
