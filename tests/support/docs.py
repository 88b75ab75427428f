"""Reading the documentation's samples: what a page shows, as a pattern the real output must fit.

In a shown output, a line `...` stands for any number of lines, and `...` inside a line for any
text: the pages elide what differs per machine or does not matter to the reader.
"""

from __future__ import annotations

import re


def shown_output_pattern(shown: tuple[str, ...] | list[str]) -> re.Pattern[str]:
    """The shown output as a regex for `fullmatch` against the real one (lines right-stripped)."""
    parts: list[str] = []
    for number, line in enumerate(shown):
        if line.strip() == "...":
            parts.append(r"(?:\n(?s:.*?))?" if number else r"(?s:.*?)")
            continue
        text = ".*".join(re.escape(piece) for piece in line.rstrip().split("..."))
        parts.append(("\n" if number else "") + text)
    return re.compile("".join(parts))


def printed_lines(text: str) -> str:
    """Output as compared with a shown one: lines right-stripped, no trailing blank lines."""
    return "\n".join(line.rstrip() for line in text.rstrip("\n").split("\n"))
