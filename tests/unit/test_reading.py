"""Reading with a deadline (proxy/reading.py) and reading only regular files (policy/files.py)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from chime_egress.errors import ConfigError
from chime_egress.policy.files import read_text_file
from chime_egress.proxy.reading import Deadline, ReadTimeout


def hang_until(release: threading.Event) -> str:
    release.wait(30)  # stands for a read on a mount that stopped answering
    return "late"


def test_work_that_finishes_in_time_returns_its_result() -> None:
    assert Deadline(5).call(lambda: "read") == "read"


def test_errors_reach_the_caller() -> None:
    def fail() -> str:
        raise ConfigError([])

    with pytest.raises(ConfigError):
        Deadline(5).call(fail)


def test_work_that_hangs_is_a_timeout_and_later_calls_fail_at_once() -> None:
    release = threading.Event()
    deadline = Deadline(0.2)
    try:
        with pytest.raises(ReadTimeout, match=r"did not finish within 0\.2 s"):
            deadline.call(lambda: hang_until(release))
        started = time.monotonic()
        with pytest.raises(ReadTimeout, match="an earlier read has not finished"):
            deadline.call(lambda: "never started")
        assert time.monotonic() - started < 0.2  # refused without waiting again
    finally:
        release.set()
    time.sleep(0.1)
    assert deadline.call(lambda: "again") == "again"  # once the stuck read returns


async def test_the_event_loop_is_not_held_while_work_hangs() -> None:
    release = threading.Event()
    deadline = Deadline(0.3)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await __import__("asyncio").sleep(0.01)

    import asyncio

    ticker = asyncio.get_running_loop().create_task(tick())
    try:
        with pytest.raises(ReadTimeout):
            await deadline.run(lambda: hang_until(release))
    finally:
        release.set()
        ticker.cancel()
    assert ticks > 5  # the loop ran while the work hung


def test_the_stuck_thread_does_not_hold_the_process(tmp_path: Path) -> None:
    """A process whose read hangs still exits at once when it is done."""
    import subprocess
    import sys

    code = (
        "import threading\n"
        "from chime_egress.proxy.reading import Deadline, ReadTimeout\n"
        "try:\n"
        "    Deadline(0.1).call(lambda: threading.Event().wait())\n"
        "except ReadTimeout:\n"
        "    print('timed out')\n"
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.stdout == "timed out\n", result.stderr
    assert result.returncode == 0
    assert time.monotonic() - started < 20


# Regular files only


def test_a_regular_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("apps: []\n", encoding="utf-8")
    assert read_text_file(path, "allowlist", 100) == "apps: []\n"


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "fifo.yaml"
    os.mkfifo(path)
    with pytest.raises(ConfigError, match="not a regular file"):
        read_text_file(path, "allowlist", 100)


def test_a_device_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        read_text_file(Path("/dev/zero"), "ranges", 100)


def test_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder"):
        read_text_file(tmp_path, "allowlist", 100)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="allowlist file not found"):
        read_text_file(tmp_path / "absent.yaml", "allowlist", 100)


def test_a_file_over_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_bytes(b"x" * 101)
    with pytest.raises(ConfigError, match="is 101 bytes; a ranges file is at most 100 bytes"):
        read_text_file(path, "ranges", 100)


def test_bytes_that_are_not_utf8_are_placed_by_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"apps:\n  - name: caf\xe9\n")
    with pytest.raises(ConfigError) as raised:
        read_text_file(path, "allowlist", 1000)
    [problem] = raised.value.problems
    assert problem.line == 2
    assert problem.column == 14
    assert problem.message.startswith("byte 0xe9 ('é' in Windows-1252/Latin-1) is not UTF-8")
