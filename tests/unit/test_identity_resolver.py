"""The identity resolver's caches: a rejected password is remembered briefly, within bounds.

Real bcrypt checks on a real htpasswd file (cheap rounds); what is counted comes from the same
metrics the proxy serves.
"""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import bcrypt
import pytest

from chime_egress.policy.allowlist import parse_allowlist
from chime_egress.proxy import identity as identity_module
from chime_egress.proxy.identity import Resolver
from chime_egress.proxy.metrics import Metrics


def resolver(folder: Path, failure_cache_seconds: float = 30) -> Resolver:
    hashed = bcrypt.hashpw(b"alice-pw", bcrypt.gensalt(rounds=4)).decode()
    (folder / "users.htpasswd").write_text(f"alice:{hashed}\n")
    path = folder / "allowlist.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            apps: [{{app_key: CorpKey}}]
            identity:
              proxy_auth: htpasswd
              htpasswd: users.htpasswd
              failure_cache_seconds: {failure_cache_seconds:g}
            destinations: {{cidrs: [99.77.128.0/18]}}
            """
        )
    )
    settings = parse_allowlist(path.read_text(), path).identity
    assert settings is not None
    return Resolver(settings, Metrics())


def lookups(found: Resolver) -> dict[str, int]:
    counted = found.metrics.snapshot().get("identity_lookups_total", {})
    return {key.split("result=")[1].split(",")[0]: value for key, value in counted.items()}


def test_a_rejected_password_is_answered_from_the_failure_cache(tmp_path: Path) -> None:
    found = resolver(tmp_path)
    try:
        answers = [asyncio.run(found.authenticate("alice", "wrong")) for _ in range(3)]
        assert answers == [False, False, False]
        assert asyncio.run(found.authenticate("alice", "alice-pw")) is True
        assert asyncio.run(found.authenticate("alice", "alice-pw")) is True
    finally:
        found.close()
    assert lookups(found) == {"rejected": 1, "cached_failure": 2, "accepted": 1, "cached": 1}


def test_without_a_failure_cache_every_attempt_is_checked(tmp_path: Path) -> None:
    found = resolver(tmp_path, failure_cache_seconds=0)
    try:
        for _ in range(3):
            assert asyncio.run(found.authenticate("alice", "wrong")) is False
    finally:
        found.close()
    assert lookups(found) == {"rejected": 3}


def test_the_failure_cache_stays_within_its_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Many distinct wrong passwords (a guessing client) must not grow the cache without end.
    monkeypatch.setattr(identity_module, "CACHED_FAILURES", 20)  # the bound, made small to test
    found = resolver(tmp_path)

    async def guess_many() -> None:
        await asyncio.gather(*(found.authenticate("alice", f"guess{n}") for n in range(60)))

    try:
        asyncio.run(guess_many())
        # The oldest are gone: the first guess is checked again, not answered from the cache.
        assert asyncio.run(found.authenticate("alice", "guess0")) is False
    finally:
        found.close()
    assert lookups(found) == {"rejected": 61}
