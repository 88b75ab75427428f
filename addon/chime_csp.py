"""Entry script: `mitmdump --mode reverse:https://app.internal -s addon/chime_csp.py --set ...`.

A thin shim on purpose: mitmproxy never registers `-s` scripts in sys.modules, which breaks
dataclasses defined in them, so the real code lives in the `chime_egress` package.
If that package cannot be imported, the proxy must not run on without it (it would serve the app's
pages without the configured policy and pass violation reports to the app), so a stand-in addon
stops start-up and refuses every request.
"""

import logging
import sys
from pathlib import Path

from mitmproxy import exceptions, http

_SOURCE = Path(__file__).resolve().parent.parent / "src"
if (_SOURCE / "chime_egress").is_dir() and str(_SOURCE) not in sys.path:
    sys.path.insert(0, str(_SOURCE))


class FailClosed:
    """Stands in for the addon when it cannot be imported: no start-up, no forwarded request."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def configure(self, updated: set[str]) -> None:
        raise exceptions.OptionsError(self.reason)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        flow.response = http.Response.make(502, f"chime-csp: {self.reason}\n".encode())


try:
    from chime_egress.csp.addon import ChimeCsp
except Exception as import_error:  # any failure here must fail closed
    logging.getLogger("chime_egress").critical("chime-csp: cannot load the addon: %r", import_error)
    addons: list[object] = [FailClosed(f"chime_csp could not load: {import_error!r}")]
else:
    addons = [ChimeCsp()]
