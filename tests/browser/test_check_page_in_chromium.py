"""The check page as a person sees it: headless Chromium using the real mitmdump as its proxy
opens http://chime-egress.invalid/, reads it, and takes a screenshot.

The browser resolves no name itself (every name maps to NOTFOUND): the page can only come from
the proxy, which answers the check host without forwarding anything.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.browser.conftest import chromium_flags, start_chromium
from tests.support.proxy import LISTEN_HOST, MitmdumpProcess, ProxyLauncher

WIDTH, HEIGHT = 1000, 900
MARKUP_KEY = "<script>alert(1)</script>"
ALLOWLIST = f"""\
apps:
  - app_key: "{MARKUP_KEY}"
  - app_key: CorpKey
    tenants: [corpOrg]
destinations:
  cidrs: [127.0.0.2/32]
"""


@pytest.fixture(scope="module")
def proxy(
    module_proxy_launcher: ProxyLauncher, tmp_path_factory: pytest.TempPathFactory
) -> MitmdumpProcess:
    allowlist = tmp_path_factory.mktemp("check-page-browser") / "allowlist.yaml"
    allowlist.write_text(ALLOWLIST)
    return module_proxy_launcher.start(allowlist, label="check page (browser)")


@pytest.fixture(scope="module")
def browser(proxy: MitmdumpProcess) -> Iterator[webdriver.Chrome]:
    profile = Path(tempfile.mkdtemp(prefix="chime-check-chromium-"))
    # The suite's flags, but through the proxy, and resolving no name but the proxy's address.
    flags = [
        flag
        for flag in chromium_flags(1, profile)
        if flag != "--no-proxy-server" and not flag.startswith("--host-resolver-rules=")
    ]
    flags += [
        f"--proxy-server=http://{LISTEN_HOST}:{proxy.port}",
        f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {LISTEN_HOST}",
        f"--window-size={WIDTH},{HEIGHT}",
        "--force-device-scale-factor=1",
    ]
    driver = start_chromium(flags)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def page(browser: webdriver.Chrome) -> webdriver.Chrome:
    browser.get("http://chime-egress.invalid/")
    return browser


def test_the_page_says_what_this_browser_gets(page: webdriver.Chrome) -> None:
    assert page.title == "chime-egress: what this proxy does for you"
    facts = {
        row.find_element(By.TAG_NAME, "th").text: row.find_element(By.TAG_NAME, "td").text
        for row in page.find_elements(By.CSS_SELECTOR, "#facts tr")
    }
    assert facts["Your address, as the proxy sees it"] == "127.0.0.1"
    assert facts["Network"] == "default (the proxy's default settings)"
    assert facts["Mode"] == "enforce"
    # The text a person reads (and copies) is the exact header lines, markup and all.
    shown = page.find_element(By.ID, "headers").text
    assert shown == (
        f"X-Amzn-Chime-App-Keys: {MARKUP_KEY},CorpKey\nX-Amzn-Chime-Tenants: CorpKey:corpOrg"
    )


def test_nothing_runs_and_the_policy_lets_the_style_apply(page: webdriver.Chrome) -> None:
    assert page.execute_script("return document.scripts.length") == 0
    color = page.execute_script("return getComputedStyle(document.querySelector('.mode')).color")
    assert color == "rgb(10, 93, 0)"  # the page's own style, allowed by its hash
    log = page.get_log("browser")  # type: ignore[no-untyped-call]
    assert [entry for entry in log if "Content Security Policy" in entry["message"]] == []


def test_screenshot(page: webdriver.Chrome, tmp_path: Path) -> None:
    png = page.get_screenshot_as_png()
    (tmp_path / "check-page.png").write_bytes(png)  # kept with the test's files for a look
    image = Image.open(io.BytesIO(png)).convert("RGB")
    width, height = page.execute_script("return [window.innerWidth, window.innerHeight]")
    assert image.size == (width, height)
    # Not blank: text on white, and the mode word drawn in the page's green.
    pixels = _pixels(image)
    assert len(set(pixels)) > 20
    assert sum(1 for r, g, b in pixels if r + g + b < 200) > 1000
    mode = page.find_element(By.CSS_SELECTOR, ".mode").rect
    box = (mode["x"], mode["y"], mode["x"] + mode["width"], mode["y"] + mode["height"])
    region = _pixels(image.crop(box))
    assert any(g > r + 40 and g > b + 40 for r, g, b in region), region[:10]


def _pixels(image: Image.Image) -> list[tuple[int, int, int]]:
    data = image.convert("RGB").tobytes()
    return list(zip(data[0::3], data[1::3], data[2::3], strict=True))
