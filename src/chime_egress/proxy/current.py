"""The one mutable thing the proxy holds: a reference to the policy in force.

A Policy is frozen and built completely before it is published (`chime_egress.policy.compiled`),
so swapping this one reference is the whole of a reload: every hook reads `current.policy` once
and sees one whole configuration, old or new, never a mix. The collaborators of the addon share
one CurrentPolicy; nothing else in the proxy is shared between connections.
"""

from __future__ import annotations

import time

from ..policy.compiled import Policy


class NoPolicyError(RuntimeError):
    """A hook ran before any policy was loaded: the caller must fail closed."""


class CurrentPolicy:
    def __init__(self) -> None:
        self._policy: Policy | None = None
        self.published_at: float | None = None  # time.time() of the last publish

    @property
    def loaded(self) -> bool:
        return self._policy is not None

    @property
    def policy(self) -> Policy:
        policy = self._policy
        if policy is None:
            raise NoPolicyError("no allowlist is loaded")
        return policy

    def publish(self, policy: Policy) -> None:
        self._policy = policy
        self.published_at = time.time()
