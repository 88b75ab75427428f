"""What the CSP addon's check for a <meta> policy costs per page (issue 16).

    python bench/bench_csp_meta.py [--repeats N]

The addon checks each page (host and path) once, the last 1,000 remembered: this is a cost per
new page, not per response. `declares_meta_policy` parses the page with the standard library's
HTML tokenizer up to `<body>`; the check it replaced searched the first 64 KiB with a regular
expression (shown for comparison, though it missed character references, later metas and UTF-16).
Each figure is the median over --repeats of one scan, in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from benchlib import print_provenance  # noqa: E402

from chime_egress.csp.meta import declares_meta_policy  # noqa: E402

_OLD = re.compile(rb"<meta[^>]+http-equiv\s*=\s*[\"']?content-security-policy", re.IGNORECASE)
HEAD = b"<meta charset=utf-8><title>Meeting</title>" + b'<link rel=stylesheet href="/a.css">' * 20
BODY = b"<div class=row><span>x</span><a href='/p'>link</a></div>\n"
LINK = b'<link rel=stylesheet href="/a.css">'
PAGES = {
    "6 KB page, head and body": b"<html><head>" + HEAD + b"</head><body>" + BODY * 80,
    "200 KB inline script in the head": b"<html><head><script>"
    + b"var a = 1; /* code */\n" * 9000
    + b"</script></head><body>"
    + BODY * 80,
    "2 MB of markup, no <body> tag": b"<html>" + HEAD + BODY * 36000,
    "512 KiB head of <link> tags": b"<html><head>" + LINK * (512 * 1024 // len(LINK)),
}


def milliseconds(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    rows = []
    for name, page in PAGES.items():
        new = [milliseconds(partial(declares_meta_policy, page)) for _ in range(args.repeats)]
        old = [milliseconds(partial(_OLD.search, page[:65536])) for _ in range(args.repeats)]
        rows.append((name, statistics.median(new), statistics.median(old)))
    print_provenance(
        f"nproc {len(os.sched_getaffinity(0))}, {platform.machine()}, "
        f"Python {platform.python_version()}"
    )
    print(f"median of {args.repeats} scans, ms per page (once per new page):")
    print(f"  {'page':36} {'HTML parser':>12} {'old regex':>10}")
    for name, new_ms, old_ms in rows:
        print(f"  {name:36} {new_ms:12.2f} {old_ms:10.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
