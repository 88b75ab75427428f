"""Keeping the addon in force for the whole life of the process, whatever happens to `-s` scripts.

mitmproxy watches every `-s` script and unloads it when the file changes, breaks or disappears
(for good, in the last case); a proxy whose addon is unloaded goes on decrypting and forwarding
Chime traffic without the headers. So the entry script does not hold the addon: on its first load
it registers the addon with mitmproxy's master directly, where no script reload can reach it, and
keeps only a small watcher of its own that says in the log when mitmproxy unloads the script.
Loading the script again finds the addon in place and leaves it as it is (new code takes effect
at the next start, as Python's imports are cached anyway).

Registered this way the addon is also the last in mitmproxy's chain, so its request hook has the
last word on the headers (`injection.Injector.request`).

A start-up that cannot succeed (an invalid allowlist, an unknown chime_* option, a refused
mitmproxy setting) ends the process with the message alone and exit code 1, before mitmproxy
starts listening: an admin sees one clear error, not a traceback and a proxy that then exits.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, NoReturn, Protocol

from mitmproxy import ctx, exceptions, hooks

from .options import unknown_options

logger = logging.getLogger("chime_egress")


class _Addon(Protocol):
    name: str


def stop_start_up(message: str) -> NoReturn:
    """End the process before it serves anything: the message on stderr, then exit code 1.

    SystemExit is not an Exception: mitmproxy's script loader lets it through, and it ends the
    event loop, and the process, with that code.
    """
    print(f"chime-egress: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def install(script: str, make_addon: type[_Addon], label: str) -> list[object]:
    """The `addons` of an entry script: an anchor that registers the addon with the master once.

    The registration happens in the anchor's first `configure`, which mitmproxy calls right after
    loading the script: raised during the import itself, the SystemExit of a failed start-up
    would be swallowed by mitmproxy 11's script loader (a `return` in its `finally`).
    """
    return [ScriptAnchor(script, make_addon, label)]


class ScriptAnchor:
    """In the script's namespace: registers the addon once, and reports the script's unload."""

    def __init__(self, script: str, make_addon: type[_Addon], label: str) -> None:
        self.script = script
        self.make_addon = make_addon
        self.label = label
        self.anchored = False

    def configure(self, updated: set[str]) -> None:
        if self.anchored:
            return
        self.anchored = True
        master = ctx.master
        if master.addons.get(self.make_addon.name) is not None:
            logger.info(
                f"{self.label}: {self.script} loaded again; the addon loaded at start-up stays "
                "in force as it is (changes to its code take effect at the next start)"
            )
            return
        addon = self.make_addon()  # built only when it is to be registered
        try:
            master.addons.add(addon)  # its options are known from here on
            # mitmproxy configures a script's own addons after loading it; this one is not the
            # script's, so it is configured here, with every option, as at start-up.
            configure_now(master, addon)
        except exceptions.OptionsError as error:
            stop_start_up(str(error))
        loader = master.addons.get("scriptloader")
        if loader is not None and loader.is_running:
            # Loaded by a change of the scripts option at run time: mitmproxy runs already.
            master.addons.invoke_addon_sync(addon, hooks.RunningHook())
        close_connections_made_without(master, self.label)

    def done(self) -> None:
        master = getattr(ctx, "master", None)
        if master is None or master.should_exit.is_set():
            return  # the process is stopping: nothing to report
        logger.warning(
            f"{self.label}: mitmproxy unloaded {self.script} (edited, broken or removed); the "
            "addon loaded at start-up stays in force, unchanged, until the process restarts"
        )


def configure_now(master: Any, addon: object) -> None:
    """Configure a just-added addon with every option, once, as mitmproxy does at start-up;
    OptionsError for an option nobody defines (a typo) or one the addon refuses."""
    known = master.options.keys()
    if problems := unknown_options(master.options.deferred, known):
        raise exceptions.OptionsError("\n".join(problems))
    master.addons.invoke_addon_sync(addon, hooks.ConfigureHook(set(known)))


def close_all(server: Any) -> int:
    """Close every connection of mitmproxy's proxy server addon; how many there were."""
    handlers = list(getattr(server, "connections", {}).values())
    for handler in handlers:
        handler.close_connection(handler.client)
    return len(handlers)


def close_connections_made_without(master: Any, label: str) -> None:
    """Close the connections the proxy accepted before the addon was in force.

    They were routed, and may have been decrypted, without it: a long-lived one (a WebSocket,
    an HTTP/2 connection) would go on carrying requests without the headers. Closed, its client
    reconnects through the addon. At an ordinary start-up there are none.
    """
    if closed := close_all(master.addons.get("proxyserver")):
        logger.warning(
            f"{label}: closed {closed} connection(s) accepted before the addon was in "
            "force; their clients reconnect through it"
        )
