"""No option value and no broken install may leave mitmdump running without the addon."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.config import App, write_config
from tests.support.proxy import ADDON_SCRIPT, run_expect_failure


@pytest.fixture
def allowlist(tmp_path: Path) -> Path:
    return write_config(tmp_path / "config", [App("AppKey1")])


@pytest.mark.parametrize(
    ("extra_args", "message"),
    [
        (["--set", "chime_reload_interval=abc"], "chime_reload_interval must be seconds"),
        (["--set", "chime_reload_interval=0"], "between 0.05 and 5"),
        (["--set", "chime_websocket_relay=frames"], "chime_websocket_relay must be one of"),
        (["--ignore-hosts", "example"], "ignore_hosts: refused"),
        (["--allow-hosts", "example"], "allow_hosts: refused"),
    ],
    ids=["interval-text", "interval-zero", "relay", "ignore-hosts", "allow-hosts"],
)
def test_bad_option_values_stop_start_up(
    allowlist: Path, mitm_confdir: Path, tmp_path: Path, extra_args: list[str], message: str
) -> None:
    rc, output = run_expect_failure(
        confdir=mitm_confdir, allowlist=allowlist, extra_args=extra_args, cwd=tmp_path
    )
    assert rc is not None and rc != 0, f"mitmdump kept running:\n{output}"
    assert message in output, output


def test_addon_that_cannot_be_imported_stops_start_up(
    allowlist: Path, mitm_confdir: Path, tmp_path: Path
) -> None:
    """A broken package (a missing dependency, say) must not leave a proxy without the addon."""
    checkout = tmp_path / "checkout"
    (checkout / "addon").mkdir(parents=True)
    shutil.copy(ADDON_SCRIPT, checkout / "addon" / "chime_headers.py")
    package = checkout / "src" / "chime_egress"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "proxy").mkdir()
    (package / "proxy" / "__init__.py").write_text("")
    (package / "proxy" / "addon.py").write_text("import yaml_that_is_not_installed\n")
    rc, output = run_expect_failure(
        confdir=mitm_confdir,
        script=checkout / "addon" / "chime_headers.py",
        allowlist=allowlist,
        cwd=tmp_path,
    )
    assert rc is not None and rc != 0, f"mitmdump kept running:\n{output}"
    assert "chime_headers could not load" in output, output
    assert "yaml_that_is_not_installed" in output, output
