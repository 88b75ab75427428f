"""Capacity: how many meeting participants one proxy replica carries (issue 14).

Simulated participants hold WebSockets to a local TLS server on 127.0.0.2 (a Chime address by the
allowlist's `destinations.cidrs`) and exchange stamped messages; every target of one invocation
is measured in the same run, in turn, so their figures are comparable on a noisy shared machine.

Scenarios
  signaling  each participant: CONNECT, TLS, the WebSocket upgrade (the server answers whether it
             got exactly the Chime headers, and every join is checked), then --rate round trips
             a second of --size bytes (default 1/s, 120 B)
  audio      the Chime SDK when UDP is blocked: audio over a WebSocket, --rate (50) messages of
             --size (160) bytes a second from each participant, echoed, while the server sends
             its own --rate stream to each (the other participants' audio); plus video over
             TURN/TLS at --video-kbps each way, to a TLS server whose name (SNI
             ice.bench.chime.aws) matches the allowlist's media_hosts: the proxy must pass it
             through undecrypted (the client trusts only the server's own CA, and the proxy log
             must say "passing media through" for each)
  idle       participants join and hold idle WebSockets for --duration s; the figure is the
             proxy's memory per participant: (RSS after the joins - RSS before) / participants
  join       a join storm: everyone joins as fast as --join-concurrency allows

Targets (--targets, in this order each round; --rounds N rotates the order)
  direct     no proxy: the generator and server alone, the baseline of every latency
  floor      a bare asyncio CONNECT relay in participants_roles.py that terminates TLS with the
             proxy's CA, adds the headers to the upgrade and copies bytes: what Python allows
  proxy      the real proxy: `chime-egress run` with the allowlist, as production runs it
  NAME       --proxy-command NAME='COMMAND' (repeatable) adds a target started by COMMAND, with
             {port} {confdir} {allowlist} {upstream_ca} {metrics_port} {chime} {bin} {repo}
             filled in ({chime}: the "Chime" server's address, which a proxy must be told to
             reach: loopback destinations are refused by default);
             a first word without a slash that exists in {bin} (this Python's bin folder) is
             taken from there. It must listen on 127.0.0.1:{port}, use {confdir}'s CA (a
             throwaway one the script writes there) and trust {upstream_ca} upstream.

Commands (run from the repository root; PYTHONPATH must be absolute so the proxy, started from
another folder, imports this checkout: the script prints which chime_egress the proxy imports):

    export PYTHONPATH=$PWD/src
    python bench/bench_participants.py signaling --participants 250
    python bench/bench_participants.py signaling --participants 1000 --generator-processes 2
    python bench/bench_participants.py signaling --participants 2000 --generator-processes 2 \\
        --server-processes 2
    python bench/bench_participants.py audio --participants 200 --generator-processes 2 \\
        --server-processes 2
    python bench/bench_participants.py idle --participants 10000 --targets proxy \\
        --generator-processes 2 --server-processes 2 --join-concurrency 200
    python bench/bench_participants.py join --participants 2000 --join-concurrency 200 \\
        --generator-processes 2
    python bench/bench_participants.py signaling --participants 1000 --targets direct,proxy,w2 \\
        --proxy-command 'w2=chime-egress run --workers 2 --listen-host 127.0.0.1 \\
        --listen-port {port} --set confdir={confdir} --set chime_allowlist={allowlist} \\
        --set ssl_verify_upstream_trusted_ca={upstream_ca} \\
        --set chime_local_destinations={chime}/32'
    python bench/bench_participants.py signaling --participants 2000 --targets direct,proxy,ha2 \\
        --proxy-command 'ha2=python bench/participants_haproxy.py --replicas 2 --port {port} \\
        -- chime-egress run --listen-host 127.0.0.1 --set confdir={confdir} \\
        --set chime_allowlist={allowlist} --set ssl_verify_upstream_trusted_ca={upstream_ca} \\
        --set chime_local_destinations={chime}/32'
    python bench/bench_participants.py signaling --targets direct,proxy,bare \\
        --without-headers bare --proxy-command 'bare=mitmdump --listen-host 127.0.0.1 \\
        --listen-port {port} --set confdir={confdir} \\
        --set ssl_verify_upstream_trusted_ca={upstream_ca}'
    python bench/bench_participants.py signaling --rounds 3 --json /tmp/participants.json

The generator and server run on uvloop when it is installed (--loop; it is a test dependency),
the floor on plain asyncio (--floor-loop). The exit code is 1 when a check failed.

How to read the numbers
  - Round trips/s is what came back from messages sent in the measured window, against what
    the participants were asked to send; a proxy that cannot keep up shows it here first. A
    message is only sent while fewer than 5 s of messages are unanswered on its WebSocket
    (else it is counted as skipped), so an overloaded proxy is not buried in a growing queue.
  - Latency is measured from the stamp in each message (CLOCK_MONOTONIC, shared by all
    processes) to its arrival. "added" is a target's percentile minus direct's, in the same run.
  - Cores are CPU seconds per wall second in the measured window, from /proc: "proxy" is the
    whole process tree (and session) of the target's command; "gen" the generator processes,
    with the busiest one in brackets. A process near 1.0 core is saturated: when a generator
    or server process passes 0.9 the run says so, and its latencies include its own queueing.
    "lag" is how late the generator's pacing ran (p99): a growing lag is a saturated generator.
    "others" is the rest of the machine (other people's work): noise. "proxy CPU wait" is the
    time the proxy's threads were ready to run but waited for a CPU (/proc/PID/schedstat), in
    seconds per second: well above zero, the machine is short of cores and the proxy's latency
    shows that rather than the proxy's own cost.
  - RSS is the sum over the proxy's processes (PSS beside it, which counts shared pages once:
    the figure for several worker processes). Per participant: (after joins - before) / joined,
    after a few warm-up joins, so one-time costs are left out. "RSS growth" is what the proxy's
    RSS grew in the measured window, per message relayed (both ways): memory kept per message.
  - File descriptors: one proxy process needs two per WebSocket (client and upstream), three per
    participant with video; the limit on these machines is 20,000 per process, which the run
    checks before starting (and raises the soft limit to the hard one).

Everything runs on loopback: the server on 127.0.0.2, proxies on 127.0.0.1, and (with
--source-addresses N) participants connecting from 127.0.1.1-N. Nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.util
import json
import math
import os
import platform
import shlex
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))  # tests.support: the test suite's throwaway CA and clean env

from benchlib import display_command, print_provenance  # noqa: E402
from participants_processes import (  # noqa: E402
    PROXY_HOST,
    Child,
    ask_all,
    free_port,
    listening,
    stop_session,
    stop_target,
    tail,
)
from participants_report import Outcome, report  # noqa: E402
from participants_wire import raise_fd_limit  # noqa: E402
from procstats import Group, Usage, memory, snapshot  # noqa: E402

from tests.support.config import Allowlist, App  # noqa: E402
from tests.support.proxy import clean_env  # noqa: E402
from tests.support.tls import TestCA  # noqa: E402

CHIME_HOST = "127.0.0.2"
MEDIA_SNI = "ice.bench.chime.aws"
ALLOWLIST = Allowlist(
    apps=[
        App("BenchAppKey1", tenants=["benchTenantA", "benchTenantB"]),
        App("BenchAppKey2", tenants=["benchTenantC"]),
    ],
    cidrs=[f"{CHIME_HOST}/32"],
    extra_destination_lines=['  media_hosts: ["ice.*.chime.aws"]'],
)
# The headers it makes (the grammar in chime_egress/policy/headers.py), written out here rather
# than computed by the code under test: the server checks every upgrade against them.
APP_KEYS = "BenchAppKey1,BenchAppKey2"
TENANTS = "BenchAppKey1:benchTenantA,benchTenantB;BenchAppKey2:benchTenantC"
PROXY_COMMAND = (
    "chime-egress run --listen-host 127.0.0.1 --listen-port {port} --set confdir={confdir} "
    "--set chime_allowlist={allowlist} --set ssl_verify_upstream_trusted_ca={upstream_ca} "
    "--set chime_metrics=127.0.0.1:{metrics_port} --set chime_local_destinations={chime}/32"
)
PRIMER = 3  # joins before the memory baseline: certificates, caches and code paths warmed up
VIDEO_PACKETS = 25  # video chunks a second per participant (TURN relays packets, not a stream)


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str  # WebSocket request target
    rate: float  # messages a second per participant
    size: int
    video_rate: float  # video chunks a second per participant
    video_size: int


@dataclass
class Target:
    name: str
    command: list[str] | None  # None: direct, or the floor relay
    expect_headers: bool = True
    log: Path | None = None


# ---------------------------------------------------------------------------------------------
# The run


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        upstream = TestCA.create(workdir / "upstream-ca", common_name="bench upstream CA")
        self.upstream_ca = upstream.cert_path
        self.server_cert = upstream.issue([CHIME_HOST, MEDIA_SNI], stem="server")
        # The proxy's CA, written where mitmproxy looks for it, so that the floor relay, the real
        # proxy and any --proxy-command present certificates of the same CA.
        proxy = TestCA.create(workdir / "proxy-ca", common_name="bench proxy CA")
        self.confdir = workdir / "confdir"
        self.confdir.mkdir()
        (self.confdir / "mitmproxy-ca.pem").write_bytes(
            (proxy.directory / "ca-key.pem").read_bytes() + proxy.cert_path.read_bytes()
        )
        (self.confdir / "mitmproxy-ca-cert.pem").write_bytes(proxy.cert_path.read_bytes())
        self.proxy_ca = proxy.cert_path
        self.floor_cert = proxy.issue([CHIME_HOST], stem="floor")
        self.allowlist = ALLOWLIST.write(workdir)
        self.servers: list[Child] = []
        self.ports: dict[str, int] = {}
        self.scenario = scenario(args)

    async def start_servers(self) -> None:
        settings = {
            "host": CHIME_HOST,
            "ws_port": 0,
            "media_port": 0,
            "cert": str(self.server_cert.cert_path),
            "key": str(self.server_cert.key_path),
            "app_keys": APP_KEYS,
            "tenants": TENANTS,
        }
        first = await Child.start("server", settings, self.args.loop)
        self.servers.append(first)
        self.ports = await first.receive(30)
        for _ in range(self.args.server_processes - 1):
            self.servers.append(
                await Child.start("server", {**settings, **self.ports}, self.args.loop)
            )
            await self.servers[-1].receive(30)

    async def server_counts(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for counts in await ask_all(self.servers, {"cmd": "stats"}, 30):
            for key, value in counts.items():
                total[key] = total.get(key, 0) + value
        return total

    def targets(self) -> list[Target]:
        commands = dict(self.args.proxy_command)
        chosen = []
        for name in self.args.targets.split(","):
            if name == "direct":
                chosen.append(Target(name, None, expect_headers=False))
            elif name == "floor":
                chosen.append(Target(name, None))
            elif name == "proxy":
                chosen.append(Target(name, self.command(PROXY_COMMAND)))
            elif name in commands:
                headers = name not in self.args.without_headers.split(",")
                chosen.append(Target(name, self.command(commands[name]), expect_headers=headers))
            else:
                raise SystemExit(f"--targets: no target {name!r} (define it with --proxy-command)")
        return chosen

    def command(self, template: str) -> list[str]:
        """The command line with the run's placeholders in; {port} and {metrics_port} stay."""
        bin_dir = Path(sys.executable).parent
        values = {
            "confdir": str(self.confdir),
            "allowlist": str(self.allowlist),
            "upstream_ca": str(self.upstream_ca),
            "bin": str(bin_dir),
            "repo": str(REPO),
            "chime": CHIME_HOST,
            "port": "{port}",
            "metrics_port": "{metrics_port}",
        }
        # A command pasted over several lines keeps its backslash-newlines inside the quotes.
        words = [word.format(**values) for word in shlex.split(template.replace("\\\n", " "))]
        if "/" not in words[0] and (bin_dir / words[0]).exists():
            words[0] = str(bin_dir / words[0])
        return words

    async def start_target(self, target: Target, label: str) -> tuple[Group | None, Any, int]:
        """(the proxy's process group or None for direct, a handle to stop it, its port)."""
        if target.name == "direct":
            return None, None, 0
        if target.command is None:  # the floor relay
            floor = await Child.start(
                "floor",
                {
                    "listen_host": PROXY_HOST,
                    "cert": str(self.floor_cert.cert_path),
                    "key": str(self.floor_cert.key_path),
                    "upstream_ca": str(self.upstream_ca),
                    "media_port": self.ports["media_port"],
                    "app_keys": APP_KEYS,
                    "tenants": TENANTS,
                },
                self.args.floor_loop,
            )
            port = (await floor.receive(30))["port"]
            return Group("proxy", [floor.pid]), floor, port
        port, metrics = free_port(), free_port()
        argv = [word.format(port=port, metrics_port=metrics) for word in target.command]
        target.log = self.workdir / f"{label}.log"
        with target.log.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                cwd=REPO,
                env=clean_env(),
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while not await listening(port):
            if process.returncode is not None or time.monotonic() > deadline:
                await stop_session(process)
                raise RuntimeError(
                    f"{target.name} did not listen on {PROXY_HOST}:{port}: "
                    f"$ {display_command(argv)}\n{tail(target.log)}"
                )
            await asyncio.sleep(0.1)
        await asyncio.sleep(self.args.proxy_settle)
        return Group("proxy", [process.pid], sessions=True), process, port

    def generator_settings(self, target: Target, port: int) -> dict[str, Any]:
        s = self.scenario
        return {
            "proxy": None if target.name == "direct" else [PROXY_HOST, port],
            "host": CHIME_HOST,
            "ws_port": self.ports["ws_port"],
            "media_port": self.ports["media_port"],
            "path": s.path,
            "rate": s.rate,
            "size": s.size,
            "video_rate": s.video_rate,
            "video_size": s.video_size,
            "cafile": str(self.upstream_ca if target.name == "direct" else self.proxy_ca),
            "media_cafile": str(self.upstream_ca),
            "media_sni": MEDIA_SNI,
            "expect_headers": target.expect_headers,
            "join_timeout": self.args.join_timeout,
            "source_addresses": self.args.source_addresses,
            "grace": self.args.grace,
        }

    async def generators(self, settings: dict[str, Any], total: int, processes: int) -> list[Child]:
        concurrency = max(1, math.ceil(self.args.join_concurrency / processes))
        children, first = [], 0
        for index in range(processes):
            count = total // processes + (1 if index < total % processes else 0)
            children.append(
                await Child.start(
                    "generate",
                    {**settings, "first": first, "count": count, "join_concurrency": concurrency},
                    self.args.loop,
                )
            )
            first += count
        for child in children:
            await child.receive(60)  # ready
        return children

    async def prime(self, settings: dict[str, Any]) -> dict[str, Any]:
        """A few joins and round trips before anything is measured: a broken target fails here,
        and one-time costs (the proxy's certificate for the host, caches) are paid."""
        [child] = await self.generators({**settings, "video_rate": 0}, PRIMER, 1)
        try:
            joined = await child.ask({"cmd": "join", "at": 0}, self.args.join_timeout + 30)
            alive = await child.ask({"cmd": "ping", "timeout": 10}, 30)
            await child.ask({"cmd": "close"}, 30)
        finally:
            await child.stop()
        return {**joined, **alive}

    async def measure(self, target: Target, round_number: int) -> Outcome:
        """One target, one round: start it, warm it up, join, run, check, stop it."""
        args = self.args
        outcome = Outcome(target=target.name, round=round_number, scenario=self.scenario.name)
        outcome.participants = args.participants
        proxy, handle, port = await self.start_target(target, f"{target.name}-{round_number}")
        generators: list[Child] = []
        watcher: asyncio.Task[None] | None = None
        try:
            settings = self.generator_settings(target, port)
            counts_before = await self.server_counts()
            primed = await self.prime(settings)
            if primed["joined"] < PRIMER or primed["alive"] < PRIMER:
                outcome.checks.append(f"warm-up joins failed: {primed}")
                return outcome
            await asyncio.sleep(0.5)
            if proxy is not None:
                outcome.proxy_rss_before = memory(proxy)[0]
                watcher = asyncio.create_task(watch_memory(proxy, outcome))
            generators = await self.generators(
                settings, args.participants, args.generator_processes
            )
            groups = [
                Group("generator", [child.pid for child in generators]),
                Group("server", [child.pid for child in self.servers]),
                Group("orchestrator", [os.getpid()]),
                *([proxy] if proxy else []),
            ]
            await self.join(outcome, generators, groups)
            if args.duration > 0:
                await self.run(outcome, generators, groups)
            pinged = await ask_all(
                generators, {"cmd": "ping", "timeout": args.grace}, args.grace + 60
            )
            outcome.alive = sum(p["alive"] for p in pinged)
            await ask_all(generators, {"cmd": "close"}, 60)
            self.check(target, outcome, primed, counts_before, await self.server_counts())
        finally:
            if watcher is not None:
                watcher.cancel()
            for child in generators:
                await child.stop()
            await stop_target(handle)
        return outcome

    async def join(self, outcome: Outcome, generators: list[Child], groups: list[Group]) -> None:
        """Everyone joins, from a common start; then the memory after the joins."""
        at = time.monotonic() + 0.3
        for child in generators:
            child.send({"cmd": "join", "at": at})
        await asyncio.sleep(at - time.monotonic())
        before = snapshot(groups, time.monotonic())
        budget = join_budget(self.args)
        joined = await asyncio.gather(*(child.receive(budget) for child in generators))
        outcome.record_joins(joined, at, before, snapshot(groups, time.monotonic()))
        await asyncio.sleep(1.0)  # let the proxy finish each join's work before measuring
        for group in groups:
            if group.name == "proxy":
                rss, pss, files, count = memory(group)
                outcome.proxy_rss_joined, outcome.proxy_pss_joined = rss, pss
                outcome.proxy_files, outcome.proxy_processes = files, count
            elif group.name in ("generator", "server"):
                outcome.harness_rss += memory(group)[0]

    async def run(self, outcome: Outcome, generators: list[Child], groups: list[Group]) -> None:
        """Traffic from a common start: warm-up, then the measured window (CPU taken at its
        edges), then the generators' results once the last answers are in."""
        args, s = self.args, self.scenario
        at = time.monotonic() + 0.5
        for child in generators:
            child.send({"cmd": "run", "at": at, "warmup": args.warmup, "duration": args.duration})
        await asyncio.sleep(at + args.warmup - time.monotonic())
        start = snapshot(groups, time.monotonic())
        await asyncio.sleep(at + args.warmup + args.duration - time.monotonic())
        end = snapshot(groups, time.monotonic())
        usage = Usage.between(start, end)
        # What the proxy kept of the traffic: RSS at the end of the window minus at its start
        # (mitmproxy keeps every message of a relayed flow for the connection's life).
        outcome.proxy_rss_growth = end.rss.get("proxy", 0) - start.rss.get("proxy", 0)
        ran = await asyncio.gather(*(c.receive(args.grace + 60) for c in generators))
        stream_rate = s.rate if s.name == "audio" else 0.0
        outcome.record_run(ran, args.duration, s.rate, stream_rate, usage)

    def check(
        self,
        target: Target,
        outcome: Outcome,
        primed: dict[str, Any],
        before: dict[str, int],
        after: dict[str, int],
    ) -> None:
        """What the server saw must match what the participants were told (each join already
        checked its own upgrade): the headers on every upgrade through a proxy, none direct,
        and the media passed through by the proxy."""
        seen = {key: after.get(key, 0) - before.get(key, 0) for key in after}
        upgrades = outcome.joined + primed["joined"]
        good = "upgrades_headers_ok" if target.expect_headers else "upgrades_headers_none"
        if seen.get(good, 0) < upgrades:
            outcome.checks.append(
                f"server saw {seen.get(good, 0)} of {upgrades} upgrades as {good}"
            )
        for bad in {"upgrades_headers_ok", "upgrades_headers_none", "upgrades_headers_wrong"} - {
            good
        }:
            if seen.get(bad):
                outcome.checks.append(f"server saw {seen[bad]} upgrades as {bad}")
        if self.scenario.video_rate and target.log is not None:
            passed = target.log.read_text(errors="replace").count("passing media through")
            outcome.media_passed_through = passed
            if passed < outcome.joined:
                outcome.checks.append(
                    f"the proxy log says 'passing media through' {passed} times for "
                    f"{outcome.joined} video connections"
                )
        if target.log is not None:
            problems = [
                line
                for line in target.log.read_text(errors="replace").splitlines()
                if "Traceback" in line or " error" in line.lower()
            ]
            outcome.proxy_log_errors = len(problems)
            if problems:
                outcome.notes.append(f"proxy log: {len(problems)} error lines, e.g. {problems[0]}")
        if outcome.alive < outcome.joined:
            outcome.add_errors(
                {"unanswered": outcome.joined - outcome.alive},
                {"unanswered": "a joined WebSocket did not answer one last message"},
                "end",
            )


def scenario(args: argparse.Namespace) -> Scenario:
    name = args.scenario
    rate = {"signaling": 1.0, "audio": 50.0}.get(name, 0.0) if args.rate is None else args.rate
    size = (160 if name == "audio" else 120) if args.size is None else args.size
    path = f"/audio?rate={rate:g}&size={size}" if name == "audio" else "/signaling"
    video_rate = VIDEO_PACKETS if name == "audio" and args.video_kbps > 0 else 0
    video_size = round(args.video_kbps * 1000 / 8 / VIDEO_PACKETS) if video_rate else 0
    if name in ("idle", "join"):
        rate = 0.0
    return Scenario(name, path, rate, size, video_rate, video_size)


def join_budget(args: argparse.Namespace) -> float:
    """Seconds the joins may take at worst: every round of concurrent joins timing out."""
    per_process = math.ceil(args.participants / args.generator_processes)
    concurrency = max(1, math.ceil(args.join_concurrency / args.generator_processes))
    return float(math.ceil(per_process / concurrency) * args.join_timeout + 60)


async def watch_memory(group: Group, outcome: Outcome) -> None:
    """The proxy's peak RSS and open files, sampled each second."""
    while True:
        rss, _, files, _ = await asyncio.to_thread(memory, group)
        outcome.proxy_rss_peak = max(outcome.proxy_rss_peak, rss)
        outcome.proxy_files_peak = max(outcome.proxy_files_peak, files)
        await asyncio.sleep(1)


def proxy_code() -> str:
    """Which chime_egress and mitmproxy a proxy command started from here would import."""
    probe = "import chime_egress, mitmproxy.version as v; print(chime_egress.__file__, v.VERSION)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=clean_env(), cwd="/"
    ).stdout.split()
    if len(result) != 2:
        return "unknown"
    where = Path(result[0]).parent.parent
    warning = (
        "" if where == REPO / "src" else f" (NOT this checkout's src: set PYTHONPATH={REPO}/src)"
    )
    return f"chime_egress from {where}{warning}, mitmproxy {result[1]}"


def fd_budget(args: argparse.Namespace, s: Scenario, limit: int) -> list[str]:
    """Warnings for processes that would need more file descriptors than the limit."""
    per_participant = 2 if s.video_rate else 1
    needs = {
        "each generator process": math.ceil(args.participants / args.generator_processes)
        * per_participant,
        "each server process (if connections spread evenly)": math.ceil(
            args.participants / args.server_processes
        )
        * per_participant,
        "one proxy process": 2 * args.participants * per_participant,
    }
    return [
        f"file descriptors: {who} needs about {need + 64:,}, above the limit of {limit:,}: "
        "expect refused connections (more processes, or fewer participants)"
        for who, need in needs.items()
        if need + 64 > limit
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scenario", choices=["signaling", "audio", "idle", "join"])
    parser.add_argument(
        "--participants", type=int, help="default 250 (audio 50, idle 1000, join 500)"
    )
    parser.add_argument(
        "--rate", type=float, help="messages a second per participant (1; audio 50)"
    )
    parser.add_argument("--size", type=int, help="message bytes, 9 or more (120; audio 160)")
    parser.add_argument(
        "--video-kbps", type=float, default=250, help="audio: video each way (250; 0 none)"
    )
    parser.add_argument("--duration", type=float, help="seconds measured (30; idle 10; join 0)")
    parser.add_argument("--warmup", type=float, default=5, help="seconds of traffic before (5)")
    parser.add_argument(
        "--grace", type=float, default=5, help="seconds to wait for the last answers (5)"
    )
    parser.add_argument(
        "--join-concurrency", type=int, help="joins in progress at once (50; join 200)"
    )
    parser.add_argument("--join-timeout", type=float, default=30, help="seconds per join (30)")
    parser.add_argument("--targets", default="direct,floor,proxy", help="comma-separated, in order")
    parser.add_argument(
        "--proxy-command",
        action="append",
        default=[],
        type=lambda text: tuple(text.split("=", 1)),
        metavar="NAME=COMMAND",
        help="another target, started by COMMAND (placeholders in the description)",
    )
    parser.add_argument(
        "--without-headers",
        default="",
        metavar="NAMES",
        help="--proxy-command targets expected to add no headers (a bare mitmdump, say)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="rounds of all targets, order rotated"
    )
    parser.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="event loop of the generator and server processes (auto: uvloop if installed)",
    )
    parser.add_argument(
        "--floor-loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="event loop of the floor relay (asyncio: what plain Python allows)",
    )
    parser.add_argument("--generator-processes", type=int, default=1)
    parser.add_argument("--server-processes", type=int, default=1)
    parser.add_argument("--source-addresses", type=int, default=0, help="connect from 127.0.1.1-N")
    parser.add_argument("--proxy-settle", type=float, default=1.0, help="seconds after it listens")
    parser.add_argument("--json", type=Path, help="also write every outcome to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, CAs)")
    args = parser.parse_args(argv)
    defaults = {
        "signaling": (250, 30, 50),
        "audio": (50, 30, 50),
        "idle": (1000, 10, 50),
        "join": (500, 0, 200),
    }
    participants, duration, concurrency = defaults[args.scenario]
    args.participants = args.participants or participants
    args.duration = duration if args.duration is None else args.duration
    args.join_concurrency = args.join_concurrency or concurrency
    if args.scenario == "join":
        args.duration = 0
    if args.scenario == "idle":
        args.warmup = 0
    if args.loop == "auto":
        args.loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    if args.size is not None and args.size < 9:
        parser.error("--size must be at least 9 bytes (the stamp)")
    for item in args.proxy_command:
        if len(item) != 2 or not item[0] or item[0] in ("direct", "floor", "proxy"):
            parser.error(
                f"--proxy-command wants NAME=COMMAND with a new NAME, not {'='.join(item)!r}"
            )
    return args


def machine() -> str:
    import mitmproxy.version

    return (
        f"nproc {len(os.sched_getaffinity(0))}, Python {platform.python_version()}, "
        f"mitmproxy {mitmproxy.version.VERSION}, OpenSSL {ssl.OPENSSL_VERSION.split()[1]}, "
        f"{platform.platform()}"
    )


async def run(args: argparse.Namespace) -> int:
    """The whole run; the work folder (CAs, allowlist, proxy logs) goes unless --keep."""
    started = datetime.datetime.now().astimezone()
    print_provenance(machine(), started)
    workdir = Path(tempfile.mkdtemp(prefix="chime-participants-"))
    try:
        return await run_in(args, workdir, started)
    finally:
        if args.keep:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


async def run_in(args: argparse.Namespace, workdir: Path, started: datetime.datetime) -> int:
    limit = raise_fd_limit()
    bench = Bench(args, workdir)
    targets = bench.targets()
    print(f"proxy code: {proxy_code()}")
    for target in targets:
        if target.command is not None:
            print(f"target {target.name}: $ {display_command(target.command)}")
    s = bench.scenario
    print(
        f"scenario {s.name}: {args.participants} participants, {s.rate:g} messages/s of {s.size} B "
        f"each"
        + (f", video {args.video_kbps:g} kbit/s each way" if s.video_rate else "")
        + f"; warm-up {args.warmup:g} s, measured {args.duration:g} s; "
        f"joins {args.join_concurrency} at a time; {args.generator_processes} generator and "
        f"{args.server_processes} server processes ({args.loop}); {args.rounds} round(s)"
    )
    for warning in fd_budget(args, s, limit):
        print(f"WARNING {warning}")
    outcomes: list[Outcome] = []
    try:
        await bench.start_servers()
        for round_number in range(1, args.rounds + 1):
            shift = (round_number - 1) % len(targets)
            for target in targets[shift:] + targets[:shift]:
                print(f"\n... round {round_number}: {target.name}", flush=True)
                try:
                    outcome = await bench.measure(target, round_number)
                except Exception as exc:
                    outcome = Outcome(target=target.name, round=round_number, scenario=s.name)
                    outcome.checks.append(f"failed: {exc}")
                outcomes.append(outcome)
                print(outcome.one_line(), flush=True)
    finally:
        for server in bench.servers:
            await server.stop()
    report(outcomes, args, targets)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "started": started.isoformat(timespec="seconds"),
                    "command": display_command([Path(sys.executable).name, *sys.argv]),
                    "machine": machine(),
                    "arguments": {k: str(v) for k, v in vars(args).items()},
                    "scenario": asdict(s),
                    "outcomes": [outcome.to_json() for outcome in outcomes],
                },
                indent=2,
            )
            + "\n"
        )
    return 1 if any(outcome.checks for outcome in outcomes) else 0


def main() -> int:
    return asyncio.run(run(parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
