"""A context manager for the harness's background services: `with Service(...) as s:`."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Service:
    """Starts on entry and stops on exit; subclasses define start() (returning self) and stop()."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> object:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
