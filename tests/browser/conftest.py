"""Headless Chromium for the browser tests, and the local servers it talks to.

Addresses (loopback only; the browser resolves nothing else: ``MAP * ~NOTFOUND``):
  127.0.0.1  the reverse proxies (mitmdump), as ``app.test`` and ``raw.test``
  127.0.0.5  the stand-in for every Chime and AWS host (TLS, CORS, WebSocket)
  127.0.0.6  the app behind the reverse proxies (plain HTTP)

Host names are mapped with ``--host-resolver-rules``, ports included, so the pages use the real
``https://*.chime.aws`` URLs on the default port, exactly what a policy is checked against, while
the connections go to the local stand-in. Certificates are not checked by the browser
(``--ignore-certificate-errors``): the test CA would have to be installed in an NSS database, and
no verdict here depends on certificates.

Chromium and chromedriver come from the Debian packages ``chromium`` and ``chromium-driver``
(``.ci/run`` installs them). Without them the tests fail: a skipped browser check would pass
silently in CI.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.support.proxy import clean_env
from tests.support.tls import TestCA
from tests.support.webapp import WebApp

CHROMIUM = Path(os.environ.get("CHIME_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CHIME_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
STAND_IN_IP = "127.0.0.5"
APP_IP = "127.0.0.6"
PAGE_HOSTS = ("app.test", "raw.test")
"""Names of the reverse proxy: app.test is a configured host of the addon, raw.test is not."""
REMOTE_PATTERNS = ("*.chime.aws", "chime.aws", "*.amazonaws.com", "*.example")
PROBE_SCRIPT = Path(__file__).with_name("probe.js")


def chromium_flags(stand_in_port: int, user_data_dir: Path) -> list[str]:
    rules = [f"MAP {pattern} {STAND_IN_IP}:{stand_in_port}" for pattern in REMOTE_PATTERNS]
    rules += [f"MAP {host} 127.0.0.1" for host in PAGE_HOSTS]
    rules.append("MAP * ~NOTFOUND")  # nothing else resolves: no address off this machine
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-proxy-server",
        "--ignore-certificate-errors",
        # Reporting API deliveries go out at once, not after the usual minute of batching.
        "--short-reporting-delay",
        f"--user-data-dir={user_data_dir}",
        f"--host-resolver-rules={', '.join(rules)}",
    ]


@pytest.fixture(scope="module")
def stand_in(test_ca: TestCA) -> Iterator[WebApp]:
    """Every Chime/AWS host name of the pages: answers fetches (CORS), scripts and WebSockets."""
    cert = test_ca.issue([STAND_IN_IP, "*.chime.aws", "*.sdkassets.chime.aws"], stem="stand-in")
    with WebApp(
        STAND_IN_IP, cert=(cert.cert_path, cert.key_path), cors=True, name="stand-in"
    ) as app:
        yield app


@pytest.fixture(scope="module")
def page_app() -> Iterator[WebApp]:
    """The app behind the reverse proxies; it serves the probe script at /probe.js."""
    with WebApp(APP_IP, name="page-app") as app:
        app.route("/probe.js", PROBE_SCRIPT.read_bytes(), content_type="text/javascript")
        yield app


def start_chromium(flags: list[str]) -> webdriver.Chrome:
    """Headless Chromium with these flags (chromium_flags' and more), its console log kept."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(
            f"the browser tests need {' and '.join(missing)}: install the Debian packages "
            "chromium and chromium-driver (.ci/run does), or point CHIME_TEST_CHROMIUM and "
            "CHIME_TEST_CHROMEDRIVER at another build"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for flag in flags:
        options.add_argument(flag)
    service = Service(executable_path=str(CHROMEDRIVER), env=clean_env())
    return webdriver.Chrome(options=options, service=service)


@pytest.fixture(scope="module")
def browser(stand_in: WebApp) -> Iterator[webdriver.Chrome]:
    """One headless Chromium for the whole module (a fresh profile)."""
    profile = Path(tempfile.mkdtemp(prefix="chime-csp-chromium-"))
    driver = start_chromium(chromium_flags(stand_in.port, profile))
    driver.set_script_timeout(120)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def run_probes(driver: webdriver.Chrome, url: str, probes: list[dict[str, str]]) -> Any:
    """Load ``url`` (a page that loads /probe.js) and run the probes in it, one at a time."""
    driver.get(url)
    # chromedriver sometimes hands the page back while it still waits for /probe.js (state
    # "loading"): start once the load event has fired.
    return driver.execute_async_script(
        """
        const [probes, done] = arguments;
        const go = () => {
          if (!window.chimeProbe) {
            done({error: "probe.js did not run", url: location.href, state: document.readyState,
                  html: document.documentElement.outerHTML});
            return;
          }
          window.chimeProbe.run(probes).then(done, (e) => done({error: String(e)}));
        };
        if (document.readyState === "complete") go();
        else window.addEventListener("load", go);
        """,
        probes,
    )


def console_log(driver: webdriver.Chrome) -> list[Any]:
    """The browser console's messages since the last call (for failure messages)."""
    entries: list[Any] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return entries[-30:]
