"""What the CSP addon's header plan costs per HTML response, with and without the merge cache.

    python bench/bench_csp.py [--responses N] [--repeats N]

plan_headers (csp/settings.py) runs once per HTML response of a configured host. The cases:
  repeated   the app sends the same policy on every page (the usual case): the rewrite is cached
             (and, for comparison, the same with the cache cleared before each response)
  nonce      the policy carries a fresh nonce on every page: every rewrite is a cache miss
  none       the app sends no policy: the default, built once at start-up, is used
Each figure is the median over --repeats of the mean over --responses calls, in microseconds.
mitmdump itself spends 2,000-3,000 µs of CPU per proxied request (BENCHMARKS.md, issue 2).
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from benchlib import print_provenance  # noqa: E402

from chime_egress.csp.settings import build_settings, plan_headers, rewritten_policy  # noqa: E402

APP_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.example; "
    "connect-src 'self' https://api.example; img-src 'self' data:; style-src 'self' 'unsafe-inline'"
)
OPTIONS = {
    "chime_csp_hosts": "app.example",
    "chime_csp_features": "meetings,voice-focus",
    "chime_csp_default_policy": "",
    "chime_csp_report_only": "false",
    "chime_csp_allow_unsafe_eval": "false",
    "chime_csp_report_path": "/chime-csp-reports",
    "chime_csp_report_file": "",
}


def mean_microseconds(call: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        call()
    return (time.perf_counter() - start) / count * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--responses", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    settings = build_settings(OPTIONS)

    def nonce_page() -> object:
        policy = f"script-src 'nonce-{secrets.token_hex(16)}'; {APP_POLICY}"
        return plan_headers([policy], [], settings)

    def uncached_page() -> object:
        rewritten_policy.cache_clear()
        return plan_headers([APP_POLICY], [], settings)

    cases: dict[str, Callable[[], object]] = {
        "repeated (cached)": lambda: plan_headers([APP_POLICY], [], settings),
        "repeated, cache cleared each time": uncached_page,
        "nonce (every rewrite a miss)": nonce_page,
        "none (default policy)": lambda: plan_headers([], [], settings),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, call in cases.items():  # interleaved: the machine's drift hits all alike
            rewritten_policy.cache_clear()
            call()  # warm: the first call of a case fills the cache
            results[name].append(mean_microseconds(call, args.responses))
    print_provenance(
        f"nproc {len(os.sched_getaffinity(0))}, {platform.machine()}, "
        f"Python {platform.python_version()}"
    )
    print(f"{args.repeats} repeats of {args.responses} responses; median µs per response:")
    medians = {name: statistics.median(values) for name, values in results.items()}
    for name, value in medians.items():
        print(f"  {name:36} {value:8.1f} µs")
    ratio = medians["repeated, cache cleared each time"] / medians["repeated (cached)"]
    print(f"  cache speed-up on a repeated policy: {ratio:.0f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
