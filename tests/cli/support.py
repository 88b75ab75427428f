"""Running the installed `chime-egress` command as an admin would, and files for it to read."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.data import unpacked_dir

ROOT = Path(__file__).resolve().parents[2]
DATA = unpacked_dir()  # the unpacked files, in the layout of tests/data
SHIPPED_ALLOWLIST = ROOT / "config" / "allowlist.yaml"
SHIPPED_RANGES = ROOT / "config" / "chime-ip-ranges.json"

# A minimal valid allowlist whose Chime destination is AWS's CHIME_MEETINGS IPv4 range.
ONE_APP_ONE_CIDR = "apps: [{app_key: AppKey1}]\ndestinations: {cidrs: [99.77.128.0/18]}\n"

# The console script of the environment running the tests: the command a user would type.
COMMAND = Path(sys.executable).parent / "chime-egress"

# A proxy set in the environment must not see the loopback URL tests (nor break them).
_PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def run(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARIABLES}
    return subprocess.run(
        [str(COMMAND), *(str(arg) for arg in args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def write_allowlist(folder: Path, text: str, name: str = "allowlist.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def assert_refused(result: subprocess.CompletedProcess[str], code: int, message: str) -> None:
    """The command failed with exit `code`, said `message` on stderr and printed nothing."""
    assert result.returncode == code
    assert message in result.stderr
    assert result.stdout == ""


@contextmanager
def serving(server: http.server.HTTPServer, scheme: str = "http") -> Iterator[str]:
    """`server`, bound to 127.0.0.1, answering on a thread for the duration; yields its base URL
    (`scheme` "https" when its socket was wrapped in TLS)."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
