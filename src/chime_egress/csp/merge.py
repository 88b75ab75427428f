"""Add what Chime SDK features need to existing policies without loosening anything else.

The rules (docs/csp.md): a chain with no directive at all restricts nothing, so nothing is added
for it (adding would tighten); a missing directive whose fallback exists is created from the
fallback's sources, then extended, and the fallback itself is never touched (extending it would
loosen everything else it governs); every policy is changed and none are joined; 'none' is
replaced, not extended; 'unsafe-inline' is never added.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from .features import needed_sources
from .keywords import effective_in
from .matching import COMPILE_KINDS, FALLBACKS, KIND_DIRECTIVES
from .policy import Directive, Policy, parse_policy_list, serialize_policy_list

# Directives that are some request's effective directive are extended before the intermediate
# fallbacks (child-src, script-src) they would otherwise inherit a change from.
MERGE_ORDER: tuple[str, ...] = (
    "script-src-elem",
    "worker-src",
    "frame-src",
    "connect-src",
    "img-src",
    "child-src",
    "script-src",
)
# Effective directives that read a URL; the -attr ones only read inline keywords and hashes,
# which a created directive copies unchanged, so they never need pinning.
_URL_DIRECTIVES: tuple[str, ...] = (
    *dict.fromkeys(
        directive for kind, directive in KIND_DIRECTIVES.items() if kind not in COMPILE_KINDS
    ),
    "manifest-src",
    "object-src",
)


def _seed(value: Sequence[str], name: str) -> tuple[str, ...]:
    # Keywords the new directive never reads are left out (lint would flag them there); an
    # empty list would mean 'none' anyway, which is spelt out.
    kept = tuple(token for token in value if effective_in(token, name))
    return kept or ("'none'",)


def _extend(value: Sequence[str], sources: Sequence[str]) -> tuple[str, ...]:
    present = {token.lower() for token in value}
    missing = [source for source in sources if source.lower() not in present]
    if not missing:
        return tuple(value)
    # 'none' alone matches nothing and beside other sources it is ignored (#match-url-to-
    # source-list), so dropping it changes nothing but what the list would say to a reader.
    kept = [token for token in value if token.lower() != "'none'"]
    return (*kept, *missing)


def _first_present(directives: Mapping[str, tuple[str, ...]], chain: Sequence[str]) -> str | None:
    return next((name for name in chain if name in directives), None)


def _pin_dependents(directives: dict[str, tuple[str, ...]], target: str) -> None:
    """Before `target` changes, give every directive that would inherit the change its own copy
    of what governs it now, so its requests are decided as before."""
    for name in _URL_DIRECTIVES:
        chain = FALLBACKS[name]
        if name == target or name in directives or target not in chain:
            continue
        current = _first_present(directives, chain)
        if current is not None and chain.index(current) >= chain.index(target):
            directives[name] = _seed(directives[current], name)


def merge_policy(policy: Policy, needs: Mapping[str, Sequence[str]], *, pin: bool = True) -> Policy:
    """`policy` with `needs` (directive -> sources) added by the merging rules.

    pin=False skips protecting dependents (generate_policy, where there is nothing to keep)."""
    unknown = set(needs) - set(MERGE_ORDER)
    if unknown:
        raise ValueError(f"cannot merge into {sorted(unknown)}")
    directives = {directive.name: directive.value for directive in policy.directives}
    for name in MERGE_ORDER:
        if name not in needs:
            continue
        fallback = _first_present(directives, FALLBACKS[name])
        if fallback is None:
            continue  # nothing restricts these requests: adding a directive would tighten
        current = directives[name] if name in directives else _seed(directives[fallback], name)
        extended = _extend(current, needs[name])
        if name in directives and extended == directives[name]:
            continue
        if pin:
            _pin_dependents(directives, name)
        directives[name] = extended
    return Policy(
        tuple(Directive(name, value) for name, value in directives.items()),
        policy.disposition,
        policy.ignored,
    )


def merge_policies(
    header_value: str, features: Sequence[str], *, allow_unsafe_eval: bool = False
) -> str:
    """The header value with every policy in it extended for `features`.

    Each comma-separated policy is merged on its own, so the count stays the same. The value is
    returned normalised (directive names lowercased, whitespace collapsed, ignored duplicate
    directives dropped): a browser enforces it exactly as the original. A value holding no
    policy is returned unchanged."""
    policies = parse_policy_list(header_value)
    if not policies:
        return header_value
    return merge_policy_list(policies, features, allow_unsafe_eval=allow_unsafe_eval)


def merge_policy_list(
    policies: Iterable[Policy], features: Sequence[str], *, allow_unsafe_eval: bool = False
) -> str:
    """merge_policies for a value already parsed (the addon parses it to see whether it holds a
    policy at all), serialized as a header value."""
    needs = needed_sources(features, allow_unsafe_eval=allow_unsafe_eval)
    return serialize_policy_list(merge_policy(policy, needs) for policy in policies)
