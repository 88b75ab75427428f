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

Two options of its own come before mitmdump's: `--workers N` runs N such proxies behind the one
port (`workers.py`), `--event-loop uvloop` runs on uvloop instead of asyncio's own loop.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from mitmproxy import exceptions, optmanager
from mitmproxy.options import Options
from mitmproxy.tools import cmdline
from mitmproxy.tools.dump import DumpMaster
from mitmproxy.tools.main import process_options
from mitmproxy.utils import debug

from .addon import ChimeHeaders
from .resident import configure_now

PROG = "chime-egress run"
EVENT_LOOPS = ("asyncio", "uvloop")
# Set by the supervisor of `--workers` for each worker it starts (workers.py).
WORKER_ENV = "CHIME_EGRESS_WORKER"


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


@dataclass(frozen=True)
class LaunchOptions:
    workers: int
    event_loop: str
    mitmdump: list[str]  # the rest of the command line, mitmdump's


def parse_launch_options(arguments: Sequence[str]) -> LaunchOptions:
    """`--workers N` and `--event-loop NAME` (anywhere before mitmdump's own options)."""
    parser = argparse.ArgumentParser(prog=PROG, add_help=False)
    parser.add_argument("--workers", type=_workers, default=1)
    parser.add_argument("--event-loop", choices=EVENT_LOOPS, default="asyncio")
    known, rest = parser.parse_known_args(list(arguments))
    return LaunchOptions(known.workers, known.event_loop, rest)


def _describe_launch_options(parser: argparse.ArgumentParser) -> None:
    """The launcher's own options in `--help` (parse_launch_options has taken them already)."""
    own = parser.add_argument_group(PROG, "the launcher's own options, before mitmdump's")
    own.add_argument(
        "--workers",
        metavar="N",
        help="run N proxy processes behind the one port (SO_REUSEPORT), one per core to use; "
        "metrics and probes of all of them on the chime_metrics port (default 1)",
    )
    own.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        help="asyncio's own loop (default) or uvloop (installed separately)",
    )


def _workers(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"--workers must be 1 to 64, not {text!r}")
    return int(text)


def main(arguments: Sequence[str]) -> int:
    """Run the proxy (or, with --workers, its workers) until stopped; the exit code."""
    launch = parse_launch_options(arguments)
    if launch.workers > 1 and os.environ.get(WORKER_ENV) is None:
        from .workers import supervise

        return run_loop(launch.event_loop, lambda: supervise(launch))
    return run_loop(launch.event_loop, lambda: _run(launch.mitmdump))


def run_loop(event_loop: str, make: Callable[[], Coroutine[Any, Any, int]]) -> int:
    try:
        if event_loop == "uvloop":
            try:
                import uvloop
            except ImportError:
                print(f"{PROG}: --event-loop uvloop: uvloop is not installed", file=sys.stderr)
                return 1
            return int(uvloop.run(make()))
        return asyncio.run(make())
    except KeyboardInterrupt:
        return 130


async def prepare(arguments: list[str]) -> ChimeEgressMaster | int:
    """The master with every option applied and the addon configured, or an exit code.

    Nothing listens yet. A usage error exits 2 (argparse); an options error prints the message
    alone and gives 1; --options and --commands print and give 0.
    """
    # As mitmdump does: mitmproxy's handlers filter; third-party chatter is kept down.
    logging.getLogger().setLevel(logging.DEBUG)
    for noisy in ("tornado", "asyncio", "hpack", "quic", "urwid"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    debug.register_info_dumpers()

    options = Options()
    master = ChimeEgressMaster(options)
    parser = cmdline.mitmdump(options)
    parser.prog = PROG
    _describe_launch_options(parser)
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
        # Every option, once, before anything listens: the allowlist is loaded (or refused) here.
        configure_now(master, master.chime)
    except exceptions.OptionsError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    return master


async def _run(arguments: list[str]) -> int:
    master = await prepare(arguments)
    if isinstance(master, int):
        return master
    if os.environ.get(WORKER_ENV) is not None:
        _listen_with_reuse_port()
    # The drain takes SIGTERM and SIGINT from the start (under mitmdump -s, from `running`).
    master.chime.drain.install(master)
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    await master.run()
    return 0


def _listen_with_reuse_port() -> None:
    """Make mitmproxy's TCP listeners share their port with the other workers (SO_REUSEPORT).

    mitmproxy opens them with `asyncio.start_server`, looked up when called: wrapping it here,
    in a worker process of its own, gives every worker a socket on the same port, and the
    kernel spreads new connections over them.
    """
    original = asyncio.start_server

    async def start_server(*args: Any, **kwargs: Any) -> asyncio.Server:
        kwargs.setdefault("reuse_port", True)
        return await original(*args, **kwargs)

    asyncio.start_server = start_server
