"""Range lookups per second, and the time to load a ranges file, on AWS's whole ip-ranges.json.

Every prefix of the file counts as Chime (`services=None`), which is the worst case for the
table: about 10,700 IPv4 and 6,200 IPv6 prefixes instead of the few hundred CHIME_MEETINGS ones.

    python bench/bench_ranges.py [--ranges PATH] [--seconds N] [--repeats N] [--loads N]
                                 [--no-collect] [--profile]

Figures (all with time.perf_counter, medians over repetitions, no timed asserts):
  repeated  the same 64 addresses (inside and outside prefixes, IPv4 and IPv6) cycled: the cache
            path, which is what a proxy sees (a handful of Chime front ends).
  distinct  addresses never looked up before (each one a cache miss, parse + table walk).
  load      load_aws_ranges(path, services=None) + PrefixTable(prefixes), from the file on disk,
            each load after a gc.collect() (so no load pays for collecting the previous one).
Goals (issue 2): repeated >= 1,000,000 lookups/s; load < 200 ms.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import ipaddress
import json
import os
import platform
import pstats
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from benchlib import print_provenance  # noqa: E402

sys.path.insert(0, str(REPO))
from chime_egress.policy.ranges import PrefixTable, load_aws_ranges, parse_aws_ranges  # noqa: E402
from tests.support.data import data_file  # noqa: E402

DEFAULT_RANGES = data_file("aws-ip-ranges.json")
GOAL_REPEATED = 1_000_000
GOAL_LOAD_MS = 200.0


def load_table(path: Path) -> PrefixTable:
    return PrefixTable(load_aws_ranges(path, services=None).prefixes)


def sample_addresses(table: PrefixTable, count: int, seed: int) -> list[str]:
    """Half inside prefixes (random hosts of random prefixes), half outside; IPv4 and IPv6."""
    rng = random.Random(seed)
    prefixes = list(table.prefixes)
    inside: list[str] = []
    while len(inside) < count // 2:
        network = rng.choice(prefixes).network
        host = int(network.network_address) + rng.randrange(network.num_addresses)
        inside.append(str(ipaddress.ip_address(host)))
    outside: list[str] = []
    attempts = 0
    while len(outside) < count - count // 2 and attempts < 1_000_000:
        attempts += 1
        if rng.random() < 0.75:
            address: str = str(ipaddress.IPv4Address(rng.getrandbits(32)))
        else:
            address = str(ipaddress.IPv6Address((0x2 << 124) | rng.getrandbits(124)))
        if table.lookup_ip(ipaddress.ip_address(address)) is None:
            outside.append(address)
    addresses = inside + outside
    rng.shuffle(addresses)
    return addresses


def rate(lookup: Callable[[str], object], addresses: Sequence[str], seconds: float) -> float:
    """Lookups per second over one pass of batches of `addresses`, for about `seconds`."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    now = start
    while now < deadline and done < 200_000_000:
        for address in addresses:
            lookup(address)
        done += len(addresses)
        now = time.perf_counter()
    return done / (now - start)


def distinct_rate(path: Path, count: int, repeats: int) -> list[float]:
    """Each repetition: a fresh table (empty cache), `count` addresses never seen before."""
    results = []
    for repeat in range(repeats):
        table = load_table(path)
        addresses = sample_addresses(table, count, seed=1000 + repeat)
        if len(set(addresses)) != len(addresses):
            addresses = list(dict.fromkeys(addresses))
        start = time.perf_counter()
        for address in addresses:
            table.lookup(address)
        results.append(len(addresses) / (time.perf_counter() - start))
    return results


def profile(call: Callable[[], object], title: str, limit: int = 14) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    call()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(limit)
    print(f"\n--- cProfile: {title} (sorted by own time) ---")
    print(out.getvalue().split("\n\n", 1)[-1].rstrip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranges", type=Path, default=DEFAULT_RANGES)
    parser.add_argument("--seconds", type=float, default=1.0, help="per repetition of a rate")
    parser.add_argument("--repeats", type=int, default=5, help="repetitions of each rate")
    parser.add_argument("--loads", type=int, default=7, help="timed loads of the file")
    parser.add_argument("--profile", action="store_true", help="cProfile each figure too")
    parser.add_argument(
        "--no-collect",
        action="store_true",
        help="no gc.collect() before each load: each load then also pays for collecting the "
        "garbage of the loads before it",
    )
    args = parser.parse_args()

    import mitmproxy.version

    print_provenance(
        f"nproc {len(os.sched_getaffinity(0))}, Python {platform.python_version()}, "
        f"mitmproxy {mitmproxy.version.VERSION}, {platform.platform()}"
    )
    print(f"file: {args.ranges} ({args.ranges.stat().st_size:,} bytes)")

    load_times = []
    table = None
    for _ in range(args.loads):
        table = None
        if not args.no_collect:
            gc.collect()  # every load starts from the same heap, not the previous load's garbage
        start = time.perf_counter()
        table = load_table(args.ranges)
        load_times.append((time.perf_counter() - start) * 1000)
    assert table is not None
    # Where the load time goes: the same work in phases, each the median of --loads runs.
    phases: dict[str, list[float]] = {"read": [], "json": [], "entries": [], "table": []}
    for _ in range(args.loads):
        table = None  # the same live objects as before each load above
        if not args.no_collect:
            gc.collect()
        t0 = time.perf_counter()
        text = args.ranges.read_text(encoding="utf-8")
        t1 = time.perf_counter()
        json.loads(text)
        t2 = time.perf_counter()
        snapshot = parse_aws_ranges(text, str(args.ranges), services=None)
        t3 = time.perf_counter()
        table = PrefixTable(snapshot.prefixes)
        t4 = time.perf_counter()
        del snapshot, text
        phases["read"].append(t1 - t0)
        phases["json"].append(t2 - t1)
        phases["entries"].append((t3 - t2) - (t2 - t1))  # parse_aws_ranges minus its json.loads
        phases["table"].append(t4 - t3)

    v4 = sum(1 for p in table.prefixes if p.network.version == 4)
    print(f"prefixes: {len(table)} ({v4} IPv4, {len(table) - v4} IPv6), services=None")

    addresses = sample_addresses(table, 64, seed=64)
    inside = sum(1 for a in addresses if table.lookup(a) is not None)
    print(f"repeated set: {len(addresses)} addresses, {inside} inside a prefix")
    table.lookup(addresses[0])  # warm
    repeated = [rate(table.lookup, addresses, args.seconds) for _ in range(args.repeats)]
    distinct = distinct_rate(args.ranges, 20_000, args.repeats)

    median_load = statistics.median(load_times)
    median_repeated = statistics.median(repeated)
    print()
    print(
        f"repeated addresses: median {median_repeated:,.0f} lookups/s "
        f"(runs: {', '.join(f'{r:,.0f}' for r in repeated)}); goal >= {GOAL_REPEATED:,}: "
        f"{'met' if median_repeated >= GOAL_REPEATED else 'NOT met'}"
    )
    print(
        f"distinct addresses (cache misses, 20,000 per run): median "
        f"{statistics.median(distinct):,.0f} lookups/s "
        f"(runs: {', '.join(f'{r:,.0f}' for r in distinct)}); no goal"
    )
    print(
        f"load file into PrefixTable: median {median_load:.1f} ms "
        f"(min {min(load_times):.1f}, max {max(load_times):.1f}, {len(load_times)} loads); "
        f"goal < {GOAL_LOAD_MS:.0f} ms: {'met' if median_load < GOAL_LOAD_MS else 'NOT met'}"
    )

    print(
        "  phases (medians): "
        + ", ".join(f"{name} {statistics.median(v) * 1000:.1f} ms" for name, v in phases.items())
        + "  (entries: checking each entry, building its network and Prefix object; "
        "table: PrefixTable indexing)"
    )

    if args.profile:
        profile(lambda: load_table(args.ranges), "one load")
        fresh = load_table(args.ranges)
        misses = sample_addresses(fresh, 20_000, seed=7)
        profile(lambda: [fresh.lookup(a) for a in misses], "20,000 distinct lookups")
        profile(
            lambda: [table.lookup(a) for _ in range(20_000) for a in addresses],
            "1,280,000 repeated lookups",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
