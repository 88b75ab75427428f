"""What bench_participants.py measured per target and round, and the tables it prints."""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from participants_wire import Histogram
from procstats import Snapshot, Usage

MIB = 1024 * 1024
SATURATED = 0.9  # cores: a process this busy is at its limit
NOISY = 0.3  # cores used by others during a window: the figures are noisy


@dataclass
class Outcome:
    target: str
    round: int
    scenario: str
    participants: int = 0
    joined: int = 0
    join_seconds: float = math.nan
    join: Histogram = field(default_factory=Histogram)
    join_usage: Usage | None = None
    proxy_cpu_join: float = math.nan  # CPU seconds the proxy spent on the joins
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    rate_target: float = 0.0
    stream_target: float = 0.0
    rtt: Histogram = field(default_factory=Histogram)
    stream: Histogram = field(default_factory=Histogram)
    lag: Histogram = field(default_factory=Histogram)
    usage: Usage | None = None
    alive: int = 0
    proxy_rss_before: int = 0
    proxy_rss_joined: int = 0
    proxy_pss_joined: int = 0
    proxy_rss_peak: int = 0
    proxy_files: int = 0
    proxy_files_peak: int = 0
    proxy_processes: int = 0
    harness_rss: int = 0  # generator and server processes, after the joins
    proxy_rss_growth: int = 0  # in the measured window
    proxy_log_errors: int = 0
    media_passed_through: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # "join connect", "run closed", ...
    examples: dict[str, str] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)  # failed checks: the run is not valid
    notes: list[str] = field(default_factory=list)

    def add_errors(self, errors: dict[str, int], examples: dict[str, str], phase: str) -> None:
        for kind, count in errors.items():
            key = f"{phase} {kind}"
            self.errors[key] = self.errors.get(key, 0) + count
            self.examples.setdefault(key, examples.get(kind, ""))

    def record_joins(
        self, joined: list[dict[str, Any]], at: float, before: Snapshot, after: Snapshot
    ) -> None:
        """The generators' answers to "join" (started at `at`), and the CPU used meanwhile."""
        self.joined = sum(j["joined"] for j in joined)
        self.join_seconds = max(j["ended"] for j in joined) - at
        self.join = Histogram.merged(Histogram.from_json(j["histogram"]) for j in joined)
        for j in joined:
            self.add_errors(j["errors"], j["examples"], "join")
        self.join_usage = Usage.between(before, after)
        self.proxy_cpu_join = self.join_usage.cores.get("proxy", 0.0) * self.join_usage.seconds

    def record_run(
        self,
        ran: list[dict[str, Any]],
        seconds: float,
        rate: float,
        stream_rate: float,
        usage: Usage,
    ) -> None:
        """The generators' answers to "run" (`seconds` measured), and the CPU used meanwhile."""
        for r in ran:
            for key, value in r["counts"].items():
                self.counts[key] = self.counts.get(key, 0) + value
            self.add_errors(r["errors"], r["examples"], "run")
        self.seconds = seconds
        self.rate_target = self.joined * rate
        self.stream_target = self.joined * stream_rate
        self.rtt = Histogram.merged(Histogram.from_json(r["rtt"]) for r in ran)
        self.stream = Histogram.merged(Histogram.from_json(r["stream"]) for r in ran)
        self.lag = Histogram.merged(Histogram.from_json(r["lag"]) for r in ran)
        self.usage = usage

    # --- derived figures ---------------------------------------------------------------------

    @property
    def round_trips(self) -> float:
        return self.counts.get("echoed", 0) / self.seconds if self.seconds else math.nan

    @property
    def timeouts(self) -> int:
        return max(0, self.counts.get("sent", 0) - self.counts.get("echoed", 0))

    @property
    def error_count(self) -> int:
        return sum(self.errors.values()) + self.timeouts

    @property
    def rss_per_participant(self) -> float:
        if not self.joined or not self.proxy_rss_joined:
            return math.nan
        return (self.proxy_rss_joined - self.proxy_rss_before) / self.joined

    @property
    def relayed(self) -> int:
        """WebSocket messages the proxy relayed in the measured window, both ways."""
        counts = self.counts
        return 2 * counts.get("echoed", 0) + counts.get("stream_received", 0)

    @property
    def growth_per_message(self) -> float:
        return self.proxy_rss_growth / self.relayed if self.relayed else math.nan

    @property
    def video_mbits(self) -> float:
        if not self.seconds:
            return math.nan
        return self.counts.get("video_bytes_received", 0) * 8 / self.seconds / 1e6

    def one_line(self) -> str:
        parts = [f"{self.target} round {self.round}: joined {self.joined}/{self.participants}"]
        parts.append(f"in {self.join_seconds:.1f} s")
        if self.seconds and self.rate_target:
            parts.append(
                f"round trips {self.round_trips:,.0f}/s of {self.rate_target:,.0f}, "
                f"p50 {ms(self.rtt.percentile(50))} p99 {ms(self.rtt.percentile(99))} ms"
            )
        if self.usage is not None and "proxy" in self.usage.cores:
            parts.append(f"proxy {self.usage.cores['proxy']:.2f} cores")
        if self.proxy_rss_joined:
            parts.append(f"RSS {self.proxy_rss_joined / MIB:.0f} MiB")
        parts.append(f"errors {self.error_count}")
        return ", ".join(parts) + "".join(f"\n    CHECK FAILED: {c}" for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for name, value in vars(self).items():
            if isinstance(value, Histogram):
                data[name] = summary(value)
            elif isinstance(value, Usage):
                data[name] = vars(value)
            else:
                data[name] = value
        data["round_trips_per_s"] = self.round_trips
        data["timeouts"] = self.timeouts
        data["rss_per_participant"] = self.rss_per_participant
        data["relayed"] = self.relayed
        data["growth_per_message"] = self.growth_per_message
        return data


def summary(histogram: Histogram) -> dict[str, float]:
    """Percentiles in µs."""
    return {
        "count": histogram.count,
        **{f"p{q:g}": histogram.percentile(q) for q in (50, 90, 99, 99.9)},
        "max": histogram.max,
    }


def ms(micros: float) -> str:
    if math.isnan(micros):
        return "-"
    return f"{micros / 1000:.1f}" if abs(micros) >= 10_000 else f"{micros / 1000:.2f}"


def num(value: float, spec: str) -> str:
    """`value` formatted, or "-" when there is none (NaN: nothing measured)."""
    return "-" if math.isnan(value) else format(value, spec)


def median(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return statistics.median(kept) if kept else math.nan


def cores(outcomes: list[Outcome], group: str, busiest: bool = False, joins: bool = False) -> float:
    """Median over the rounds of a group's cores (or its busiest process's) in the measured
    window, or during the joins."""
    usages = [o.join_usage if joins else o.usage for o in outcomes]
    return median(
        [
            (usage.busiest if busiest else usage.cores).get(group, math.nan)
            for usage in usages
            if usage is not None
        ]
    )


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def merged(outcomes: list[Outcome], histogram: Callable[[Outcome], Histogram]) -> Histogram:
    return Histogram.merged(histogram(o) for o in outcomes)


def report(outcomes: list[Outcome], args: argparse.Namespace, targets: Sequence[Any]) -> None:
    """The tables for BENCHMARKS.md (rounds merged: histograms summed, other figures medians),
    then the warnings and the failed checks."""
    by_target = {t.name: [o for o in outcomes if o.target == t.name] for t in targets}
    by_target = {name: group for name, group in by_target.items() if group}
    rounds = f" ({args.rounds} rounds merged)" if args.rounds > 1 else ""
    print(f"\n### {args.scenario}, {args.participants} participants{rounds}\n")
    if args.duration > 0 and args.scenario in ("signaling", "audio"):
        print(traffic_table(by_target, args.scenario == "audio") + "\n")
    print(join_table(by_target, args.participants) + "\n")
    for line in warnings(outcomes):
        print(line)


def traffic_table(by_target: dict[str, list[Outcome]], audio: bool) -> str:
    direct = by_target.get("direct")
    base = merged(direct, lambda o: o.rtt) if direct else None
    headers = ["target", "round trips/s (asked)", "p50 ms", "p90 ms", "p99 ms", "max ms"]
    headers += ["added p50", "added p99"]
    if audio:
        headers += ["server→client p50/p99 ms", "video Mbit/s in"]
    headers += ["errors", "proxy cores", "proxy CPU wait", "proxy RSS growth MiB (B/message)"]
    headers += ["gen cores (busiest)", "lag p99 ms", "server cores", "others"]
    rows = []
    for name, group in by_target.items():
        rtt = merged(group, lambda o: o.rtt)
        row = [
            name,
            f"{num(median([o.round_trips for o in group]), ',.0f')} "
            f"({num(median([o.rate_target for o in group]), ',.0f')})",
            *(ms(rtt.percentile(q)) for q in (50, 90, 99)),
            ms(rtt.max if rtt.count else math.nan),
        ]
        for q in (50, 99):
            added = math.nan
            if base is not None and name != "direct":
                added = rtt.percentile(q) - base.percentile(q)
            row.append(ms(added))
        if audio:
            stream = merged(group, lambda o: o.stream)
            row += [
                f"{ms(stream.percentile(50))} / {ms(stream.percentile(99))}",
                num(median([o.video_mbits for o in group]), ".1f"),
            ]
        row += [
            str(sum(o.error_count for o in group)),
            num(cores(group, "proxy"), ".2f") if name != "direct" else "-",
            num(median([o.usage.waiting.get("proxy", math.nan) for o in group if o.usage]), ".2f")
            if name != "direct"
            else "-",
            f"{num(median([o.proxy_rss_growth / MIB for o in group]), '.1f')} "
            f"({num(median([o.growth_per_message for o in group]), ',.0f')})"
            if name != "direct"
            else "-",
            f"{num(cores(group, 'generator'), '.2f')} "
            f"({num(cores(group, 'generator', True), '.2f')})",
            ms(merged(group, lambda o: o.lag).percentile(99)),
            num(cores(group, "server"), ".2f"),
            num(median([o.usage.others for o in group if o.usage]), ".2f"),
        ]
        rows.append(row)
    return table(headers, rows)


def join_table(by_target: dict[str, list[Outcome]], participants: int) -> str:
    headers = ["target", "joined", "join s", "joins/s", "join p50 ms", "join p99 ms"]
    headers += ["proxy cores", "proxy CPU ms/join", "gen cores (busiest)"]
    headers += ["proxy RSS MiB (PSS)", "RSS/participant KiB", "proxy fds", "alive at end"]
    headers += ["gen+server RSS MiB"]
    rows = []
    for name, group in by_target.items():
        join = merged(group, lambda o: o.join)
        joined = median([o.joined for o in group])
        seconds = median([o.join_seconds for o in group])
        row = [
            name,
            f"{joined:,.0f} of {participants:,}",
            num(seconds, ".1f"),
            num(joined / seconds if seconds else math.nan, ",.0f"),
            ms(join.percentile(50)),
            ms(join.percentile(99)),
        ]
        per_join = [o.proxy_cpu_join / o.joined * 1000 for o in group if o.joined]
        row += [
            num(cores(group, "proxy", joins=True), ".2f") if name != "direct" else "-",
            num(median(per_join), ".1f") if name != "direct" else "-",
            f"{num(cores(group, 'generator', joins=True), '.2f')} "
            f"({num(cores(group, 'generator', True, joins=True), '.2f')})",
        ]
        if name == "direct":
            row += ["-"] * 3
        else:
            row += [
                f"{num(median([o.proxy_rss_joined / MIB for o in group]), '.0f')} "
                f"({num(median([o.proxy_pss_joined / MIB for o in group]), '.0f')})",
                num(median([o.rss_per_participant / 1024 for o in group]), ".0f"),
                num(median([o.proxy_files_peak for o in group]), ",.0f"),
            ]
        row.append(f"{median([o.alive for o in group]):,.0f}")
        row.append(num(median([o.harness_rss / MIB for o in group]), ",.0f"))
        rows.append(row)
    return table(headers, rows)


def warnings(outcomes: list[Outcome]) -> list[str]:
    lines = []
    for o in outcomes:
        where = f"{o.target} round {o.round}"
        for usage, phase in ((o.join_usage, "joins"), (o.usage, "measured window")):
            if usage is None:
                continue
            for group in ("generator", "server"):
                if usage.busiest.get(group, 0) > SATURATED:
                    lines.append(
                        f"SATURATED {where}, {phase}: a {group} process used "
                        f"{usage.busiest[group]:.2f} core; its latencies include its own queueing "
                        f"(use more --{group}-processes, or fewer participants)"
                    )
            if usage.others > NOISY and usage.seconds >= 1:
                lines.append(f"NOISY {where}, {phase}: others used {usage.others:.2f} cores")
        for key, count in o.errors.items():
            lines.append(f"errors {where}: {count} x {key}, e.g. {o.examples.get(key, '')}")
        if o.timeouts:
            lines.append(f"errors {where}: {o.timeouts} messages unanswered (timeouts)")
        if o.counts.get("skipped"):
            lines.append(
                f"{where}: {o.counts['skipped']} messages not sent (5 s of messages unanswered "
                "or 256 KiB queued on their connection)"
            )
        lines += [f"note {where}: {note}" for note in o.notes]
        lines += [f"CHECK FAILED {where}: {check}" for check in o.checks]
    return lines
