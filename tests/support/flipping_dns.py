"""A mitmdump script for the tests: host names whose DNS answer changes at every lookup.

`3-2.flip.test` answers 127.0.0.3, then 127.0.0.2, then 127.0.0.3 again..., like a name with a
zero TTL served by a resolver that rotates its answers (or by an attacker). Every lookup made in
mitmdump's event loop goes through it: mitmproxy's own, when it connects, and the addon's. Load it
with `-s` beside the addon; nothing else is changed.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

_SUFFIX = ".flip.test"
_answers: dict[str, Iterator[str]] = {}
_lookup = asyncio.base_events.BaseEventLoop.getaddrinfo


async def _flipping(self: asyncio.AbstractEventLoop, host: Any, *args: Any, **kwargs: Any) -> Any:
    if isinstance(host, str) and host.endswith(_SUFFIX):
        if host not in _answers:
            octets = host[: -len(_SUFFIX)].split("-")
            _answers[host] = itertools.cycle([f"127.0.0.{octet}" for octet in octets])
        host = next(_answers[host])
    return await _lookup(self, host, *args, **kwargs)  # type: ignore[arg-type]


asyncio.base_events.BaseEventLoop.getaddrinfo = _flipping  # type: ignore[method-assign]
