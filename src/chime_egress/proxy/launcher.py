"""`chime-egress run`: mitmdump with the Chime addon built in, for production.

It takes mitmdump's own command line (`--listen-port`, `--mode`, `--set ...`, even `-s` for other
scripts) and starts mitmproxy's dump master with the addon registered directly: there is no
watched script that a reload, an edit or a missing file could unload, and nothing is read from a
checkout, so it works wherever the package is installed. The addon is added after every other
addon, so its request hook has the last word on the headers.

Start-up is mitmdump's (`mitmproxy.tools.main.run`), with two differences an admin sees: the
addon is configured, with every option, before mitmproxy starts listening, so an invalid
allowlist, an unknown chime_* option or a refused setting ends the process with the message
alone and exit code 1; and no proxy ever listens without the addon in force.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from mitmproxy import exceptions, hooks, optmanager
from mitmproxy.options import Options
from mitmproxy.tools import cmdline
from mitmproxy.tools.dump import DumpMaster
from mitmproxy.tools.main import process_options
from mitmproxy.utils import debug

from .addon import ChimeHeaders
from .options import unknown_options

PROG = "chime-egress run"


class ChimeEgressMaster(DumpMaster):
    """mitmdump's master; `add_chime` makes the Chime addon the last addon of the chain."""

    def __init__(self, options: Options) -> None:
        super().__init__(options)
        self.chime = ChimeHeaders()

    def add_chime(self) -> None:
        """Register the addon once the command line is in the options (its own still deferred).

        Added earlier, the addon would be configured by each partial update of the options,
        and a refused value would be rolled back to the default allowlist, which is configured
        in turn: the admin would read the error of a file they never named.
        """
        self.addons.add(self.chime)


def main(arguments: Sequence[str]) -> int:
    """Run the proxy until it is stopped; the process's exit code."""
    try:
        return asyncio.run(_run(list(arguments)))
    except KeyboardInterrupt:
        return 130


async def _run(arguments: list[str]) -> int:
    # As mitmdump does: mitmproxy's handlers filter; third-party chatter is kept down.
    logging.getLogger().setLevel(logging.DEBUG)
    for noisy in ("tornado", "asyncio", "hpack", "quic", "urwid"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    debug.register_info_dumpers()

    options = Options()
    master = ChimeEgressMaster(options)
    parser = cmdline.mitmdump(options)
    parser.prog = PROG
    args = parser.parse_args(arguments)  # a usage error exits 2 with argparse's message
    try:
        options.set(*args.setoptions, defer=True)
        optmanager.load_paths(
            options,
            os.path.join(options.confdir, "config.yaml"),
            os.path.join(options.confdir, "config.yml"),
        )
        process_options(parser, options, args)
        master.add_chime()  # applies the deferred chime_* options, configures nothing yet
        if args.options:
            optmanager.dump_defaults(options, sys.stdout)
            return 0
        if args.commands:
            master.commands.dump()
            return 0
        if args.filter_args:
            expression = " ".join(args.filter_args)
            options.update(
                save_stream_filter=expression, readfile_filter=expression, dumper_filter=expression
            )
        # Options of scripts given with -s are still deferred here; chime_* names are all ours.
        if problems := unknown_options(options.deferred, options.keys()):
            raise exceptions.OptionsError("\n".join(problems))
        # Every option, once, before anything listens: the allowlist is loaded (or refused) here.
        master.addons.invoke_addon_sync(master.chime, hooks.ConfigureHook(set(options.keys())))
    except exceptions.OptionsError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, master.shutdown)
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    await master.run()
    return 0
