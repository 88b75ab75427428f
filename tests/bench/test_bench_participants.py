"""bench/bench_participants.py run for real at the smallest scale: its checks hold on the real
proxy and catch a proxy that adds no headers.

Only what the benchmark checks is asserted (headers seen by the server, media passed through,
everyone joined and answered), never a speed: speed is the benchmark's output, not a test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.proxy import clean_env

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "bench_participants.py"
SMALL = ["--duration", "1", "--warmup", "0.5", "--grace", "2", "--join-timeout", "20"]
# A plain mitmdump: a proxy that intercepts but adds no Chime headers.
BARE = (
    "bare=mitmdump --listen-host 127.0.0.1 --listen-port {port} --set confdir={confdir} "
    "--set ssl_verify_upstream_trusted_ca={upstream_ca}"
)


def bench(tmp_path: Path, *arguments: str) -> tuple[int, str, dict[str, Any]]:
    """(exit code, output, the --json document) of one run."""
    result_file = tmp_path / "result.json"
    pythonpath = os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))
    run = subprocess.run(
        [sys.executable, str(BENCH), *arguments, *SMALL, "--json", str(result_file)],
        cwd=tmp_path,  # another folder than the checkout: the run must not depend on it
        env=clean_env({"PYTHONPATH": pythonpath}),
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = run.stdout + run.stderr
    document = json.loads(result_file.read_text()) if result_file.exists() else {}
    return run.returncode, output, document


def by_target(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {outcome["target"]: outcome for outcome in document["outcomes"]}


def test_signaling_through_direct_floor_and_proxy_passes_and_a_bare_mitmdump_fails(
    tmp_path: Path,
) -> None:
    code, output, document = bench(
        tmp_path,
        "signaling",
        "--participants",
        "4",
        "--rate",
        "4",
        "--targets",
        "direct,floor,proxy,bare",
        "--proxy-command",
        BARE,
    )
    outcomes = by_target(document)
    for name in ("direct", "floor", "proxy"):
        outcome = outcomes[name]
        assert outcome["checks"] == [], output
        assert outcome["joined"] == 4 and outcome["alive"] == 4, output
        assert outcome["counts"]["echoed"] > 0 and outcome["errors"] == {}, output
    assert outcomes["proxy"]["proxy_rss_joined"] > 0
    # The bare mitmdump intercepts but adds nothing: the server says so on every upgrade, and
    # the run fails with that reason.
    assert code == 1, output
    assert any("headers" in check for check in outcomes["bare"]["checks"]), output
    assert "CHECK FAILED bare" in output
    assert "| proxy |" in output and "chime_egress from" in output


def test_audio_video_is_passed_through_by_the_proxy(tmp_path: Path) -> None:
    code, output, document = bench(
        tmp_path, "audio", "--participants", "3", "--video-kbps", "64", "--targets", "proxy"
    )
    outcome = by_target(document)["proxy"]
    assert code == 0, output
    assert outcome["media_passed_through"] >= 3, output
    assert outcome["counts"]["stream_received"] > 0, output
    assert outcome["counts"]["video_bytes_received"] > 0, output


def test_the_scale_out_path_is_a_target_haproxy_in_front_of_two_replicas(tmp_path: Path) -> None:
    through_haproxy = (
        "ha2=python bench/participants_haproxy.py --replicas 2 --port {port} -- chime-egress run "
        "--listen-host 127.0.0.1 --set confdir={confdir} --set chime_allowlist={allowlist} "
        "--set ssl_verify_upstream_trusted_ca={upstream_ca} "
        "--set chime_local_destinations={chime}/32"
    )
    code, output, document = bench(
        tmp_path,
        "audio",
        "--participants",
        "4",
        "--video-kbps",
        "64",
        "--targets",
        "ha2",
        "--proxy-command",
        through_haproxy,
    )
    outcome = by_target(document)["ha2"]
    assert code == 0, output
    assert outcome["checks"] == [], output  # every upgrade carried exactly the headers
    assert outcome["joined"] == 4 and outcome["alive"] == 4, output
    # Both replicas' logs reach the target's log: each video connection passed through once.
    assert outcome["media_passed_through"] >= 4, output
