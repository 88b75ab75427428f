"""Entry script: `mitmdump -s addon/chime_headers.py` (production: `chime-egress run`).

A thin shim on purpose: mitmproxy never registers `-s` scripts in sys.modules, which breaks
dataclasses defined in them, so the real code lives in the `chime_egress` package. The addon is
registered with mitmproxy's master itself, not held by this script, so that no reload, breakage
or removal of this file can leave the proxy running without it (chime_egress/proxy/resident.py).
If the package cannot be imported at start-up, the proxy must not run without it (it would
forward Chime traffic without the headers): the process ends with the reason and exit code 1.
"""

import logging
import sys
from pathlib import Path

from mitmproxy import ctx

_SOURCE = Path(__file__).resolve().parent.parent / "src"
if (_SOURCE / "chime_egress").is_dir() and str(_SOURCE) not in sys.path:
    sys.path.insert(0, str(_SOURCE))


class CannotLoad:
    """Stands in when the package cannot be imported: at start-up the process ends."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def configure(self, updated: set[str]) -> None:
        if ctx.master.addons.get("chime_headers") is not None:
            # Loaded again while the addon registered at start-up is in force: it stays so.
            logging.getLogger("chime_egress").error(
                f"chime: {__file__} could not load again ({self.reason}); "
                "the addon loaded at start-up stays in force"
            )
            return
        print(f"chime-egress: chime_headers could not load: {self.reason}", file=sys.stderr)
        raise SystemExit(1)  # not an Exception: mitmproxy lets it end the process


try:
    from chime_egress.proxy.addon import ChimeHeaders
    from chime_egress.proxy.resident import install
except Exception as import_error:  # any failure here must fail closed
    addons: list[object] = [CannotLoad(repr(import_error))]
else:
    addons = install(__file__, ChimeHeaders, "chime")
