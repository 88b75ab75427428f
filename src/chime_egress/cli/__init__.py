"""The `chime-egress` command: one module per command group, assembled by `main`."""

from .main import main

__all__ = ["main"]
