"""Policies as the CSP3 parser sees them: parse a header value, and serialize it back.

https://w3c.github.io/webappsec-csp/#parse-serialized-policy and #parse-serialized-policy-list.
Nothing is validated while parsing (directive names, source expressions): the browser keeps
whatever it is given and unknown directives or malformed sources simply have no effect, so the
parser must keep them too for the checker to say what went wrong (lint.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

Disposition = Literal["enforce", "report"]

# Infra's ASCII whitespace: TAB, LF, FF, CR, SPACE (not VT, unlike str.split()).
ASCII_WHITESPACE = "\t\n\f\r "


@dataclass(frozen=True)
class Directive:
    name: str
    """ASCII-lowercased, as the parser stores it."""
    value: tuple[str, ...]
    """The source list (or other value) as tokens, letter case kept."""

    def __str__(self) -> str:
        return " ".join((self.name, *self.value))


@dataclass(frozen=True)
class Policy:
    """One policy: the directives in force, first occurrence of each name, in order."""

    directives: tuple[Directive, ...]
    disposition: Disposition = "enforce"
    ignored: tuple[Directive, ...] = field(default=(), compare=False)
    """Later duplicates the parser skipped (first wins): for lint only, so not part of
    equality: two policies that a browser enforces alike compare equal."""
    vertical_tab_reading: Policy | None = field(default=None, compare=False)
    """When the text holds a vertical tab: the policy as Chromium reads it, VT taken as
    whitespace (the spec does not). Requests are judged under both readings (matching.py)."""

    def __post_init__(self) -> None:
        names = [directive.name for directive in self.directives]
        if len(set(names)) != len(names):
            raise ValueError(f"a policy holds each directive once: {names}")

    def get(self, name: str) -> Directive | None:
        for directive in self.directives:
            if directive.name == name:
                return directive
        return None

    def __contains__(self, name: object) -> bool:
        return any(directive.name == name for directive in self.directives)

    def __iter__(self) -> Iterator[Directive]:
        return iter(self.directives)

    def __str__(self) -> str:
        return serialize_policy(self)


def split_ascii_whitespace(text: str) -> list[str]:
    """Infra's "split a string on ASCII whitespace"."""
    tokens: list[str] = []
    current: list[str] = []
    for char in text:
        if char in ASCII_WHITESPACE:
            if current:
                tokens.append("".join(current))
                current = []
        else:
            current.append(char)
    if current:
        tokens.append("".join(current))
    return tokens


def parse_policy(serialized: str, disposition: Disposition = "enforce") -> Policy:
    """#parse-serialized-policy: one policy (no comma handling: see parse_policy_list)."""
    directives: dict[str, Directive] = {}
    ignored: list[Directive] = []
    for raw in serialized.split(";"):
        token = raw.strip(ASCII_WHITESPACE)
        if not token or not token.isascii():
            continue
        name, *value = split_ascii_whitespace(token)
        directive = Directive(name.lower(), tuple(value))
        if directive.name in directives:
            # The spec skips it and suggests a console warning; lint reports it.
            ignored.append(directive)
            continue
        directives[directive.name] = directive
    other = (
        parse_policy(serialized.replace("\x0b", " "), disposition) if "\x0b" in serialized else None
    )
    return Policy(tuple(directives.values()), disposition, tuple(ignored), other)


def parse_policy_list(serialized: str, disposition: Disposition = "enforce") -> tuple[Policy, ...]:
    """#parse-serialized-policy-list: a header value, where each comma starts another policy."""
    policies = (parse_policy(token, disposition) for token in serialized.split(","))
    return tuple(policy for policy in policies if policy.directives)


def parse_headers(
    values: Iterable[str], disposition: Disposition = "enforce"
) -> tuple[Policy, ...]:
    """Every policy of several header values (several headers, or header and <meta>)."""
    return tuple(policy for value in values for policy in parse_policy_list(value, disposition))


def serialize_policy(policy: Policy) -> str:
    """The policy as header text; parse_policy gives it back (ignored duplicates are dropped)."""
    return "; ".join(str(directive) for directive in policy.directives)


def serialize_policy_list(policies: Iterable[Policy]) -> str:
    return ", ".join(serialize_policy(policy) for policy in policies)
