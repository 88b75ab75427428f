"""Where the proxy's Python memory goes: a mitmproxy script that snapshots tracemalloc.

Load it beside the proxy (`-s bench/tracemalloc_addon.py`, for example as a bench_participants
proxy command) and read TRACEMALLOC_OUT (default /tmp/tracemalloc-top.txt), rewritten every few
seconds: the traced total, the top files and lines, and the most numerous object types.

    python bench/bench_participants.py idle --participants 1000 --duration 40 --targets mem \\
        --proxy-command 'mem=chime-egress run --listen-host 127.0.0.1 --listen-port {port} \\
        --set confdir={confdir} --set chime_allowlist={allowlist} \\
        --set ssl_verify_upstream_trusted_ca={upstream_ca} \\
        --set chime_local_destinations={chime}/32 -s bench/tracemalloc_addon.py'

Tracing slows the proxy several times over: read its figures for where memory goes, never for
how much or how fast.
"""

from __future__ import annotations

import collections
import gc
import os
import threading
import time
import tracemalloc
from pathlib import Path

OUT = Path(os.environ.get("TRACEMALLOC_OUT", "/tmp/tracemalloc-top.txt"))
EVERY_SECONDS = 4.0


def _report() -> str:
    gc.collect()
    snapshot = tracemalloc.take_snapshot()
    by_file = snapshot.statistics("filename")
    lines = [f"total traced {sum(s.size for s in by_file) / 2**20:.1f} MiB", ""]
    lines += [
        f"{s.size / 1024:10.0f} KiB {s.count:8d} {s.traceback[0].filename}" for s in by_file[:25]
    ]
    lines.append("")
    for stat in snapshot.statistics("lineno")[:40]:
        frame = stat.traceback[0]
        lines.append(
            f"{stat.size / 1024:10.0f} KiB {stat.count:8d} {frame.filename}:{frame.lineno}"
        )
    lines.append("")
    counts = collections.Counter(type(o).__name__ for o in gc.get_objects())
    lines += [f"{count:8d} {name}" for name, count in counts.most_common(40)]
    return "\n".join(lines) + "\n"


def _loop() -> None:
    tracemalloc.start(3)
    while True:
        time.sleep(EVERY_SECONDS)
        partial = OUT.with_suffix(".partial")
        partial.write_text(_report(), encoding="utf-8")
        partial.replace(OUT)  # whole reports only, even when read mid-write


threading.Thread(target=_loop, name="tracemalloc report", daemon=True).start()
