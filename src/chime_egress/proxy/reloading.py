"""Reload watching: an edited allowlist or ranges file takes effect without a restart.

The files are compared by a cheap signature every interval; a change is loaded once the files
have held still for one interval (an editor or `ranges update` may still be writing). Both the
signature and the load run in a thread with a deadline (`reading.Deadline`), so neither a hung
network mount nor anything else on the files can stall the event loop or shutdown. A reload that
fails keeps the last good policy in force; an invalid file is not retried until it changes
again, a read that timed out is tried again at the next interval.
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
from .options import DEFAULT_RELOAD_INTERVAL
from .reading import Deadline, ReadTimeout

logger = logging.getLogger("chime_egress")


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
        self.interval = float(DEFAULT_RELOAD_INTERVAL)  # the addon sets chime_reload_interval's
        self.deadline = Deadline()
        self._task: asyncio.Task[None] | None = None
        self._unreadable: str | None = None  # the last failure to check the files, logged once

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
            current = await self._signature(policy)
            if current is None or current in (policy.loaded_signature, failed):
                continue
            if current != seen:  # still being written, perhaps: look again next round
                seen = current
                continue
            outcome = await self._reload(policy.allowlist.path)
            failed = current if outcome is False else None

    async def _signature(self, policy: Policy) -> FilesSignature | None:
        sources = policy.sources
        try:
            signature = await self.deadline.run(lambda: files_signature(sources))
        except ReadTimeout as error:
            problem = f"cannot check {', '.join(map(str, sources))} for edits: {error}"
            if problem != self._unreadable:
                logger.error(f"chime: {problem}; keeping the configuration in force")
                self._unreadable = problem
            return None
        if self._unreadable is not None:
            logger.info("chime: the allowlist files can be checked for edits again")
            self._unreadable = None
        return signature

    async def _reload(self, path: Path) -> bool | None:
        """True: published; False: the files are invalid; None: not read in time, try again."""
        previous = self.current.policy
        try:
            policy, changes = await self.deadline.run(lambda: _load_and_compare(path, previous))
        except Exception as error:
            self.metrics.reloads.labels("failed").inc()
            self.metrics.config_file_invalid.set(1)
            facts = fields("reload_failed", file=str(path), error=str(error))
            if isinstance(error, ConfigError):
                logger.error(
                    f"chime: reload failed; keeping the last good configuration:\n{error}",
                    extra=facts,
                )
            elif isinstance(error, ReadTimeout):
                logger.error(
                    f"chime: reload failed: {path}: {error}; keeping the last good "
                    "configuration and trying again",
                    extra=facts,
                )
                return None
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
    return policy, describe_changes(previous, policy)


def describe_changes(previous: Policy, policy: Policy) -> str | None:
    """What `policy` changes from `previous`, in a line for the log; None when the comparison
    itself fails (logged): a reload never fails for want of its description."""
    try:
        return summary(diff_policies(previous, policy))
    except Exception:
        logger.exception("chime: cannot compare the new configuration with the last")
        return None
