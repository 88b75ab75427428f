"""Reading the proxy's Prometheus metrics page as the tests compare it."""

from __future__ import annotations

import urllib.error
import urllib.request


def scrape(url: str) -> dict[str, float]:
    """Every sample of the page at `url`: {'name{label="value",...}': value}."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def probe_status(port: int, path: str, timeout: float = 10) -> int:
    """The HTTP status of GET `path` (/ready, /live) on a metrics port of 127.0.0.1; 0 when
    nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0
