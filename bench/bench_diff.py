"""The cost of comparing two policies, which the proxy does on its event loop at every reload.

    python bench/bench_diff.py [--repeats N]

For allowlists of 10, 100 and 550 apps (each with one tenant; 550 is near the 8,192-byte header
line limit) and three networks (one with its own apps, one observed), two edits: one adds an app
with a tenant (the usual edit), the other switches the top level from observe to enforce (every
app's sessions change verdict: the worst case). The figure is the median time of
`summary(diff_policies(old, new))`, the reload log's line, over the repeats (time.perf_counter;
no timed asserts). Goal: well under the reload's own
cost (loading the files), a few milliseconds at most for a real allowlist.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from benchlib import print_provenance  # noqa: E402

from chime_egress.policy.compiled import Policy, load_policy  # noqa: E402
from chime_egress.policy.diff import diff_policies, summary  # noqa: E402


def allowlist(apps: int, extra: bool, mode: str = "enforce") -> str:
    lines = [f"mode: {mode}", "apps:"]
    lines += [f"  - app_key: K{n:04d}\n    tenants: [org{n}a]" for n in range(apps)]
    if extra:
        lines += ["  - app_key: NewKey", "    tenants: [newOrg]"]
    lines += [
        "destinations: {cidrs: [192.0.2.0/24]}",
        "networks:",
        "  - {name: pilot, clients: [10.1.0.0/16], mode: enforce, apps: [{app_key: P1}]}",
        "  - {name: labs, clients: [10.2.0.0/16], mode: observe}",
        "  - {name: sales, clients: [10.3.0.0/16], mode: enforce}",
    ]
    return "\n".join(lines) + "\n"


def policy(folder: Path, name: str, text: str) -> Policy:
    path = folder / name
    path.write_text(text)
    return load_policy(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    print_provenance(f"{os.cpu_count()} cores, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as folder:
        for apps in (10, 100, 550):
            old = policy(Path(folder), f"old{apps}.yaml", allowlist(apps, False))
            edits = {
                "add an app": allowlist(apps, True),
                "observe -> enforce": allowlist(apps, False),
            }
            observed = policy(Path(folder), f"obs{apps}.yaml", allowlist(apps, False, "observe"))
            for edit, text in edits.items():
                before = observed if edit == "observe -> enforce" else old
                new = policy(Path(folder), f"new{apps}.yaml", text)
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    line = summary(diff_policies(before, new))
                    times.append(time.perf_counter() - start)
                median = statistics.median(times) * 1000
                print(f"{apps:>4} apps, {edit:<18}: median {median:7.2f} ms  ({line[:70]})")


if __name__ == "__main__":
    main()
