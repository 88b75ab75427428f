"""Every `$ chime-egress ...` sample of the documentation is run, and its output must be the one
shown, so a page cannot drift from the command.

A sample is a fenced block whose first line is `$ chime-egress ...`; the lines after it are the
output as a terminal shows it (stdout and stderr in the order written). In the shown output, a
line `...` stands for any number of lines, and `...` inside a line for any text. A sample that
cannot run here (it needs a running proxy, or would rewrite a shipped file) says so in an HTML
comment on the line before its block, `<!-- not run: WHY -->`, naming the test that covers it.
(tests/support/docs.py reads the shown output.)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli.support import ROOT
from tests.support.docs import printed_lines, shown_output_pattern

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROMPT = "$ chime-egress "
_NOT_RUN = re.compile(r"<!-- not run: (.+?) -->")
_FENCE = re.compile(r"^```")


@dataclass(frozen=True)
class Sample:
    page: Path
    line: int
    command: str
    output: tuple[str, ...]
    not_run: str | None  # why, when the page says it cannot run here

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def samples(page: Path) -> list[Sample]:
    found: list[Sample] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        if not _FENCE.match(lines[index]):
            index += 1
            continue
        start = index
        index += 1
        block: list[str] = []
        while index < len(lines) and not _FENCE.match(lines[index]):
            block.append(lines[index])
            index += 1
        index += 1
        if block and block[0].startswith(PROMPT):
            before = lines[start - 1] if start else ""
            why = _NOT_RUN.fullmatch(before.strip())
            found.append(
                Sample(page, start + 2, block[0][2:], tuple(block[1:]), why and why.group(1))
            )
    return found


ALL = [sample for page in PAGES for sample in samples(page)]
RUN = [sample for sample in ALL if sample.not_run is None]


def run_sample(command: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"  # stdout and stderr in the order written, as in a terminal
    return subprocess.run(
        ["bash", "-c", command],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("sample", RUN, ids=lambda s: s.name)
def test_the_sample_prints_what_the_page_shows(sample: Sample) -> None:
    result = run_sample(sample.command)
    assert result.returncode in (0, 1, 3), f"{sample.command}: exit {result.returncode}"
    printed = printed_lines(result.stdout)
    pattern = shown_output_pattern(sample.output)
    assert pattern.fullmatch(printed), (
        f"{sample.name}: `{sample.command}` printed\n{printed}\n--- the page shows ---\n"
        + "\n".join(sample.output)
    )


def test_the_pages_have_samples_and_say_why_one_is_not_run() -> None:
    assert len(RUN) >= 15, [s.name for s in RUN]
    pages = {s.page.name for s in RUN}
    assert {"cli.md", "csp.md"} <= pages, pages
    for sample in ALL:
        if sample.not_run is not None:
            assert re.search(r"tests/\S+\.py|each proxy's own", sample.not_run), sample.name


def test_the_pattern_matches_only_what_is_shown() -> None:
    pattern = shown_output_pattern(("a: ...", "...", "z"))
    assert pattern.fullmatch("a: 1\nb\nc\nz")
    assert pattern.fullmatch("a: 1\nz")
    assert not pattern.fullmatch("a: 1\nb\nc\nzz")
    assert not pattern.fullmatch("b: 1\nz")
    assert shown_output_pattern(("x", "...")).fullmatch("x\ny\nz")
    assert not shown_output_pattern(("x", "y")).fullmatch("x\ny\nz")
