"""Configuration errors that point an admin at the exact file, line and field."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one field of one file."""

    path: str
    line: int | None
    field: str
    message: str
    # 1-based, in characters; given where the line alone does not show the spot (a tab, an
    # invisible character, a byte that is not UTF-8). `path:line:column:` is what editors jump to.
    column: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        if self.line is not None and self.column is not None:
            where += f":{self.column}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class ConfigError(Exception):
    """Raised with every problem found, so an admin can fix them all in one edit."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def plural(count: int, word: str, words: str | None = None) -> str:
    """`1 tenant`, `2 tenants`: messages count things, and `1 tenants` reads as a mistake."""
    return f"{count} {word if count == 1 else (words or word + 's')}"
