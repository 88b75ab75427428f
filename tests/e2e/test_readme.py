"""The README's quick start and offline recipe, run as a newcomer would, from the README's text.

The commands, the allowlist and the outputs shown are read from README.md, not copied here, so
the test fails when the README drifts from what the proxy does. Only what cannot be the same on
this machine is changed, and each change is named: the ports (8080, 8000: free ones instead), the
demo folder (a temporary one for /tmp/chime-demo), a throwaway confdir for the proxy's CA, and
curl's version in what the server received. Where the README shows `...`, any text may stand
(tests/support/docs.py). Everything runs on loopback.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.docs import printed_lines, shown_output_pattern
from tests.support.proxy import REPO_ROOT, MitmdumpProcess, clean_env
from tests.support.servers import free_port, wait_until

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
PROXY_PORT = "8080"
SERVER_PORT = "8000"
DEMO_FOLDER = "/tmp/chime-demo"
ACTIVATE = ". .venv/bin/activate"  # the test runs in the virtualenv already


def section(heading: str) -> str:
    start = README.index(f"\n## {heading}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end >= 0 else None]


def blocks(text: str) -> list[tuple[str, str]]:
    """(info string, content) of each fenced block, in order."""
    return re.findall(r"^```(\w*)\n(.*?)^```$", text, re.DOTALL | re.MULTILINE)


def code_spans(text: str) -> list[str]:
    """Inline code of the prose, a line break inside one read as a space (as Markdown renders)."""
    prose = re.sub(r"^```.*?^```$", "", text, flags=re.DOTALL | re.MULTILINE)
    return [re.sub(r"\s+", " ", span) for span in re.findall(r"`([^`]+)`", prose)]


def shown_as_regex(text: str) -> str:
    """A line the README shows, `...` standing for any text."""
    return ".*".join(re.escape(piece) for piece in text.split("..."))


def localized(command: str, ports: dict[str, int], demo: Path | None = None) -> str:
    for shown, port in ports.items():
        command = re.sub(rf"\b{shown}\b", str(port), command)
    return command.replace(DEMO_FOLDER, str(demo)) if demo is not None else command


def shell(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command],
        cwd=REPO_ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def start_proxy(command: str, confdir: Path, label: str) -> MitmdumpProcess:
    """The README's `chime-egress run` command, run by bash as typed, with a throwaway confdir."""
    assert command.startswith("chime-egress run "), command
    proxy = MitmdumpProcess(confdir=confdir, script=None, label=label)
    proxy.command = ["bash", "-c", f"exec {command} --set confdir={confdir}"]
    return proxy.start()


@pytest.fixture
def confdir(tmp_path: Path) -> Path:
    return tmp_path / "confdir"


# --- the quick start ---------------------------------------------------------------------


def test_the_quick_start_runs_safely_and_says_what_it_does(confdir: Path) -> None:
    quick = section("Quick start: a safe first run")
    (_, commands), (_, started), (_, check), (json_info, shown_json) = blocks(quick)[:4]
    lines = commands.strip().splitlines()
    assert lines[0] == ACTIVATE, lines
    assert "--listen-host 127.0.0.1" in lines[1], "the quick start must listen on loopback only"
    ports = {PROXY_PORT: free_port()}
    proxy = start_proxy(localized(lines[1], ports), confdir, "README quick start")
    try:
        for line in started.strip().splitlines():  # the start-up lines shown, after the time
            proxy.wait_for_log(r"\] " + re.escape(localized(line, ports)) + "\n", timeout=10)

        answer = shell(localized(check.strip(), ports))
        assert answer.returncode == 0, answer.stderr
        assert json_info == "json"
        document = printed_lines(answer.stdout)
        assert shown_output_pattern(shown_json.splitlines()).fullmatch(document), document
        # What the README says the elided part holds: the address, the load time, the CA.
        facts = json.loads(answer.stdout)
        assert facts["client"]["address"] == "127.0.0.1"
        assert facts["configuration"]["loaded_at"] and facts["ca_certificate"]["sha256"]

        # "Ctrl-C stops the proxy": SIGINT, as a terminal sends it, ends it with exit code 0.
        assert "Ctrl-C stops the proxy" in quick
        assert proxy.pid is not None
        signal_and_wait(proxy, proxy.pid)
    finally:
        proxy.stop()


def signal_and_wait(proxy: MitmdumpProcess, pid: int) -> None:
    os.kill(pid, signal.SIGINT)
    wait_until(lambda: proxy.returncode is not None, timeout=30)
    assert proxy.returncode == 0, proxy.describe()
    proxy.wait_for_log(r"chime: drained in ", timeout=5)


# --- the offline recipe ------------------------------------------------------------------


@pytest.fixture
def demo_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "chime-demo"
    folder.mkdir()
    return folder


@pytest.fixture
def echo_server(demo_folder: Path) -> Iterator[tuple[str, int]]:
    """The README's header-echoing server, as typed, on 127.0.0.2 and a free port."""
    offline = section("Offline: watch the headers arrive")
    server_command = blocks(offline)[1][1].strip()
    port = free_port("127.0.0.2")
    command = localized(server_command, {SERVER_PORT: port})
    assert '"127.0.0.2"' in command
    with subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        cwd=demo_folder,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as process:
        try:
            wait_until(lambda: process.poll() is not None or listening("127.0.0.2", port), 20)
            assert process.poll() is None, "the README's server exited"
            yield command, port
        finally:
            process.terminate()  # http.server ends on SIGTERM; leaving `with` waits for it


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def test_the_offline_recipe_shows_the_headers_arriving(
    demo_folder: Path, echo_server: tuple[str, int], confdir: Path
) -> None:
    offline = section("Offline: watch the headers arrive")
    found = blocks(offline)
    (yaml_info, allowlist), _, (_, proxy_command), (_, request), (_, shown) = found[:5]
    assert yaml_info == "yaml"
    assert f"`{DEMO_FOLDER}/allowlist.yaml`" in offline  # where the README says to save it
    (demo_folder / "allowlist.yaml").write_text(allowlist, encoding="utf-8")
    ports = {PROXY_PORT: free_port(), SERVER_PORT: echo_server[1]}

    proxy = start_proxy(
        localized(proxy_command.strip(), ports, demo_folder), confdir, "README offline recipe"
    )
    try:
        command = localized(request.strip(), ports)
        answer = shell(command)
        assert answer.returncode == 0, answer.stderr
        assert received(answer.stdout) == received(localized(shown, ports))
        # The log line the README quotes.
        logged = next(s for s in code_spans(offline) if s.startswith("chime: intercepting"))
        proxy.wait_for_log(shown_as_regex(logged).replace("PORT", r"\d+"), timeout=10)

        # "change `mode: enforce` to `mode: observe` in the file and save": the proxy reloads,
        # and the same request gets nothing added and keeps the client's own header.
        assert "change `mode: enforce` to `mode: observe`" in re.sub(r"\s+", " ", offline)
        since = proxy.mark()
        path = demo_folder / "allowlist.yaml"
        path.write_text(allowlist.replace("mode: enforce\n", "mode: observe\n"), "utf-8")
        reloaded = next(s for s in code_spans(offline) if s.startswith("chime: allowlist reloaded"))
        proxy.wait_for_log(shown_as_regex(reloaded), timeout=30, since=since)
        observed = received(shell(command).stdout)
        assert "X-Amzn-Chime-App-Keys: SomeOtherApp" in observed
        assert not any(line.startswith("X-Amzn-Chime-Tenants") for line in observed)
        assert [line for line in observed if line.startswith("X-Amzn-Chime")] == [
            "X-Amzn-Chime-App-Keys: SomeOtherApp"
        ]
    finally:
        proxy.stop()


def received(text: str) -> list[str]:
    """The header lines the server echoed, curl's version (which differs per machine) left out."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return [re.sub(r"^User-Agent: curl/\S+$", "User-Agent: curl", line) for line in lines]
