"""Reload watching: an edited allowlist or ranges file takes effect without a restart.

The files are compared by a cheap signature every interval; a change is loaded once the files
have held still for one interval (an editor or `ranges update` may still be writing), in a thread
so the event loop keeps serving. A reload that fails keeps the last good policy in force and is
not retried until the files change again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError
from ..policy.compiled import FilesSignature, Policy, files_signature, load_policy
from ..policy.diff import diff_policies, summary
from .current import CurrentPolicy
from .jsonlog import fields
from .metrics import Metrics

logger = logging.getLogger("chime_egress")

DEFAULT_RELOAD_INTERVAL = "1"


def parse_reload_interval(text: str) -> float:
    """Seconds between checks of the allowlist files; a str option so a typo cannot unload us."""
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"chime_reload_interval must be seconds, not {text!r}") from None
    if not 0.05 <= seconds <= 5:
        raise ValueError("chime_reload_interval must be between 0.05 and 5 seconds")
    return seconds


class ReloadWatcher:
    def __init__(
        self,
        current: CurrentPolicy,
        metrics: Metrics,
        publish: Callable[[Policy, str, str | None], None],
    ) -> None:
        self.current = current
        self.metrics = metrics
        self.publish = publish
        self.interval = float(DEFAULT_RELOAD_INTERVAL)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _watch(self) -> None:
        """Reload after an edit, once the files have held still for one interval."""
        seen: FilesSignature | None = None
        failed: FilesSignature | None = None
        while True:
            await asyncio.sleep(self.interval)
            if not self.current.loaded:
                continue
            policy = self.current.policy
            current = files_signature(policy.sources)
            if current in (policy.loaded_signature, failed):
                continue
            if current != seen:  # still being written, perhaps: look again next round
                seen = current
                continue
            failed = None if await self._reload(policy.allowlist.path) else current

    async def _reload(self, path: Path) -> bool:
        previous = self.current.policy
        try:
            policy, changes = await asyncio.to_thread(_load_and_compare, path, previous)
        except Exception as error:
            self.metrics.reloads.labels("failed").inc()
            self.metrics.config_file_invalid.set(1)
            facts = fields("reload_failed", file=str(path), error=str(error))
            if isinstance(error, ConfigError):
                logger.error(
                    f"chime: reload failed; keeping the last good configuration:\n{error}",
                    extra=facts,
                )
            else:
                logger.exception(
                    "chime: reload failed; keeping the last good configuration", extra=facts
                )
            return False
        self.metrics.reloads.labels("succeeded").inc()
        self.publish(policy, f"chime: allowlist reloaded from {path}: {policy.summary()}", changes)
        return True


def _load_and_compare(path: Path, previous: Policy) -> tuple[Policy, str | None]:
    """The new policy and what it changes, both worked out in the reload's thread: comparing a
    long allowlist switched to enforce takes tens of milliseconds, kept off the event loop."""
    policy = load_policy(path)
    try:
        changes: str | None = summary(diff_policies(previous, policy))
    except Exception:
        logger.exception("chime: cannot compare the new configuration with the last")
        changes = None
    return policy, changes
