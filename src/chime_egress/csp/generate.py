"""A new policy for the chosen features."""

from __future__ import annotations

from collections.abc import Sequence

from .features import needed_sources
from .merge import merge_policy
from .policy import ASCII_WHITESPACE, Directive, Policy, serialize_policy

# default-src 'self' is the base: it keeps the app's own scripts, styles, images and XHR working,
# and every directive created for a feature starts from it, so the app's own resources stay
# allowed there too ('self' in connect-src, script-src...). Without a default-src, the policy
# would leave everything the features do not mention unrestricted.
BASE_POLICY = Policy((Directive("default-src", ("'self'",)),))
_ORDER = (
    "default-src",
    "connect-src",
    "script-src",
    "script-src-elem",
    "worker-src",
    "child-src",
    "img-src",
)


def generate_policy(
    features: Sequence[str], *, allow_unsafe_eval: bool = False, report_uri: str | None = None
) -> str:
    """The smallest policy on default-src 'self' that allows `features`.

    WebAssembly gets 'wasm-unsafe-eval'; allow_unsafe_eval gives 'unsafe-eval' instead (which
    also allows eval(): only for the Voice Focus modes and old browsers that need it)."""
    needs = needed_sources(features, allow_unsafe_eval=allow_unsafe_eval)
    merged = merge_policy(BASE_POLICY, needs, pin=False)
    directives = sorted(merged.directives, key=lambda directive: _ORDER.index(directive.name))
    if report_uri is not None:
        if not report_uri or any(char in report_uri for char in ASCII_WHITESPACE + ";,"):
            raise ValueError(
                f"report URI {report_uri!r} must be non-empty, without whitespace, ';' or ','"
            )
        directives.append(Directive("report-uri", (report_uri,)))
    return serialize_policy(Policy(tuple(directives)))
