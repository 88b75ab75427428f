"""What the request check of issue 12 costs per request (`policy.fields.request_problem`).

    python bench/bench_fields.py [--calls N] [--repeats N]
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python bench/bench_fields.py --calls N --only HEADERS     # instructions, see BENCHMARKS.md

Every Chime-bound request the proxy forwards is checked for what a server behind it could read
otherwise (policy/fields.py). Timed here in-process on two header sets: the three headers of
bench_hooks.py's request, and the fifteen of a browser's WebSocket upgrade to Chime. Timing on a
shared machine is noisy; the instruction count (run twice under callgrind with two --calls values
and subtract) is not.
"""

from __future__ import annotations

import argparse
import platform
import sys
import timeit
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import print_provenance  # noqa: E402

from chime_egress.policy.fields import request_problem  # noqa: E402

HEADER_SETS: dict[str, tuple[tuple[bytes, bytes], ...]] = {
    "3": (
        (b"Host", b"99.77.130.1:443"),
        (b"User-Agent", b"chime-egress-bench"),
        (b"Accept", b"*/*"),
    ),
    "15": (
        (b"Host", b"signal.m1.ue1.app.chime.aws"),
        (b"Connection", b"Upgrade"),
        (b"Pragma", b"no-cache"),
        (b"Cache-Control", b"no-cache"),
        (
            b"User-Agent",
            b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            b"Chrome/120.0.0.0 Safari/537.36",
        ),
        (b"Upgrade", b"websocket"),
        (b"Origin", b"https://app.example.com"),
        (b"Sec-WebSocket-Version", b"13"),
        (b"Accept-Encoding", b"gzip, deflate, br"),
        (b"Accept-Language", b"en-US,en;q=0.9"),
        (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        (b"Sec-WebSocket-Extensions", b"permessage-deflate; client_max_window_bits"),
        (b"Cookie", b"a=b; c=d; e=f"),
        (b"Accept", b"*/*"),
        (b"Sec-Fetch-Mode", b"websocket"),
    ),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", choices=sorted(HEADER_SETS), help="run one set, untimed")
    args = parser.parse_args()
    if args.only:  # for callgrind: just the calls, no timing around them
        fields = HEADER_SETS[args.only]
        for _ in range(args.calls):
            request_problem(b"GET", b"/control/abc?x=1", b"", fields)
        return 0
    print_provenance(f"nproc 2, Python {platform.python_version()}")
    for name, fields in HEADER_SETS.items():
        assert request_problem(b"GET", b"/", b"", fields) is None
        runs = timeit.repeat(
            lambda f=fields: request_problem(b"GET", b"/control/abc?x=1", b"", f),  # type: ignore[misc]
            number=args.calls,
            repeat=args.repeats,
        )
        print(f"{name:>3} headers: {min(runs) / args.calls * 1e6:.2f} us per request (best run)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
