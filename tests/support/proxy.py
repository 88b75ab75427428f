"""Run the real ``mitmdump`` (from the test interpreter's own virtualenv) as a subprocess.

mitmdump prints ``HTTP(S) proxy listening at 127.0.0.1:PORT.`` with the port actually bound, also
for ``--listen-port 0`` (checked on mitmproxy 11.0.2 and 12.2.3), so the harness always asks for
port 0 and reads the real one from the log.

Note that mitmdump prints the "listening at" line even when start-up has failed: an error logged
during start-up (an ``OptionsError`` from an addon's ``configure``, say) makes it print
``Error logged during startup, exiting...`` and exit 1 right *after* that line. The harness
therefore waits briefly after the line before declaring the proxy up.
"""

from __future__ import annotations

import atexit
import os
import re
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, NamedTuple

from .lifecycle import Service

REPO_ROOT = Path(__file__).resolve().parents[2]
ADDON_SCRIPT = REPO_ROOT / "addon" / "chime_headers.py"
MITMDUMP = Path(sys.executable).parent / "mitmdump"
# `chime-egress run`: mitmdump with the addon built in (the production launcher).
CHIME_EGRESS = Path(sys.executable).parent / "chime-egress"
LAUNCHER = "launcher"
"""Pass as ``script=LAUNCHER`` to run ``chime-egress run`` instead of ``mitmdump -s SCRIPT``."""

LISTEN_HOST = "127.0.0.1"
# The test servers live on loopback, which the addon refuses by default: allow them (the tests
# of that refusal set the option back to empty). The proxy's own ports stay refused regardless.
TEST_LOCAL_DESTINATIONS = "127.0.0.0/8,::1"
# "HTTP(S) proxy listening at ...", or in reverse mode "Reverse proxy to URL listening at ...".
_LISTENING = re.compile(r"proxy (?:to \S+ )?listening at (?:\[?[0-9a-fA-F.:]+\]?):(\d+)")
_STARTUP_FAILED = "Error logged during startup"
_PROXY_ENV_VARS = {
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "ftp_proxy",
    "ws_proxy",
    "wss_proxy",
    "socks_proxy",
}


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The current environment without any proxy variables (any case), unbuffered Python output."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_ENV_VARS}
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("LC_ALL", "C.UTF-8")
    if extra:
        env.update(extra)
    return env


class MitmdumpStartError(RuntimeError):
    """mitmdump exited or never reported its listening port."""


def build_command(
    *,
    confdir: Path,
    script: Path | str | None = ADDON_SCRIPT,
    allowlist: Path | str | None = None,
    upstream_ca: Path | None = None,
    extra_args: Sequence[str] = (),
    listen_port: int = 0,
) -> list[str]:
    """The mitmdump command line used by :class:`MitmdumpProcess` and :func:`run_expect_failure`.

    ``script`` is the ``-s`` script, None for a bare mitmdump, or LAUNCHER for ``chime-egress run``.
    """
    if script == LAUNCHER:
        cmd = [str(CHIME_EGRESS), "run"]
    else:
        cmd = [str(MITMDUMP)]
        if script is not None:
            cmd += ["-s", str(script)]
    cmd += [
        "--listen-host",
        LISTEN_HOST,
        "--listen-port",
        str(listen_port),
        "--set",
        f"confdir={confdir}",
    ]
    if upstream_ca is not None:
        cmd += ["--set", f"ssl_verify_upstream_trusted_ca={upstream_ca}"]
    if allowlist is not None:
        cmd += ["--set", f"chime_allowlist={allowlist}"]
    # Wherever the headers addon may run (its entry script or a copy, the launcher, or the test
    # script that loads it later), and only when the test does not set it: two values for one
    # option are refused at start, and an option no loaded addon defines is refused too.
    if _runs_headers_addon(script) and not any(
        arg.startswith("chime_local_destinations=") for arg in extra_args
    ):
        cmd += ["--set", f"chime_local_destinations={TEST_LOCAL_DESTINATIONS}"]
    cmd += list(extra_args)
    return cmd


def _runs_headers_addon(script: Path | str | None) -> bool:
    if script is None:
        return False
    return script == LAUNCHER or Path(script).name in ("chime_headers.py", "control.py")


class MitmdumpProcess(Service):
    """A running mitmdump; a context manager that starts it and stops it (terminate, then kill).

    ``output()`` holds everything mitmdump wrote so far (stdout and stderr interleaved, as text).
    """

    active: ClassVar[weakref.WeakSet[MitmdumpProcess]] = weakref.WeakSet()
    """Running instances, so a failing test's report can show their logs."""

    def __init__(
        self,
        *,
        confdir: Path,
        script: Path | str | None = ADDON_SCRIPT,
        allowlist: Path | str | None = None,
        upstream_ca: Path | None = None,
        extra_args: Sequence[str] = (),
        cwd: Path | None = None,
        startup_timeout: float = 20.0,
        label: str = "mitmdump",
    ) -> None:
        self.confdir = confdir
        self.command = build_command(
            confdir=confdir,
            script=script,
            allowlist=allowlist,
            upstream_ca=upstream_ca,
            extra_args=extra_args,
        )
        self.cwd = cwd or REPO_ROOT
        self.startup_timeout = startup_timeout
        self.label = label
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._chunks: list[str] = []
        self._cond = threading.Condition()
        self._port: int | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> MitmdumpProcess:
        if self._proc is not None:
            raise RuntimeError("already started")
        self.confdir.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._pump, name=f"{self.label} log", daemon=True)
        self._reader.start()
        try:
            match = self.wait_for_log(_LISTENING, self.startup_timeout)
        except AssertionError as exc:
            self.stop()
            raise MitmdumpStartError(
                f"{self.label} did not report a listening port "
                f"(exit code {self.returncode}).\n{self.describe()}"
            ) from exc
        self._port = int(match.group(1))
        # A start-up error is reported just after the "listening at" line: give it a moment.
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            if self.returncode is not None or _STARTUP_FAILED in self.output():
                self.stop()
                raise MitmdumpStartError(
                    f"{self.label} exited during start-up (exit code {self.returncode}).\n"
                    f"{self.describe()}"
                )
            time.sleep(0.05)
        MitmdumpProcess.active.add(self)
        return self

    def stop(self, timeout: float = 5.0) -> int | None:
        """Terminate (then kill) mitmdump; return its exit code."""
        MitmdumpProcess.active.discard(self)
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode

    def _pump(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            with self._cond:
                if data:
                    self._chunks.append(data.decode("utf-8", "replace"))
                self._cond.notify_all()
            if not data:
                return

    # --- what tests use --------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("mitmdump not started")
        return self._port

    @property
    def proxy_url(self) -> str:
        return f"http://{LISTEN_HOST}:{self.port}"

    @property
    def ca_cert(self) -> Path:
        """mitmproxy's own CA (what clients of intercepted connections must trust)."""
        return self.confdir / "mitmproxy-ca-cert.pem"

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def output(self) -> str:
        """Everything mitmdump has written so far."""
        with self._cond:
            return "".join(self._chunks)

    def mark(self) -> int:
        """The current length of the output; pass it as ``since`` to look only at newer lines."""
        return len(self.output())

    def wait_for_log(
        self, pattern: str | re.Pattern[str], timeout: float = 5.0, since: int = 0
    ) -> re.Match[str]:
        """Wait until ``pattern`` (a regex) matches the output after offset ``since``."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                match = regex.search("".join(self._chunks), since)
                if match:
                    return match
                remaining = deadline - time.monotonic()
                exited = self._proc is not None and self._proc.poll() is not None
                if remaining <= 0 or (exited and not self._reader_alive()):
                    raise AssertionError(
                        f"{self.label}: no log line matching {regex.pattern!r} within {timeout}s"
                        f"{' (process exited)' if exited else ''}.\n{self.describe(since)}"
                    )
                self._cond.wait(min(remaining, 0.1))

    def _reader_alive(self) -> bool:
        return self._reader is not None and self._reader.is_alive()

    def log_lines(self, pattern: str | re.Pattern[str], since: int = 0) -> list[str]:
        """Every output line (after offset ``since``) that ``pattern`` matches."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        return [line for line in self.output()[since:].splitlines() if regex.search(line)]

    def describe(self, since: int = 0, limit: int = 6000) -> str:
        """The command line and (the tail of) the output, for assertion messages."""
        text = self.output()[since:]
        if len(text) > limit:
            text = "[...]\n" + text[-limit:]
        return f"$ {' '.join(self.command)}\n--- output ---\n{text}--- end ---"


@atexit.register
def _stop_running_mitmdumps() -> None:
    """Never leave a mitmdump behind when the test process exits (even after a crash)."""
    for proc in list(MitmdumpProcess.active):
        proc.stop(timeout=2)


class FailedStart(NamedTuple):
    """What :func:`run_expect_failure` observed: ``rc, output = run_expect_failure(...)``."""

    returncode: int | None
    """The exit code, or ``None`` when mitmdump kept running (it was then stopped)."""
    output: str
    """stdout and stderr, interleaved (without the command line, which names the files too)."""


def run_expect_failure(
    *,
    confdir: Path,
    script: Path | str | None = ADDON_SCRIPT,
    allowlist: Path | str | None = None,
    upstream_ca: Path | None = None,
    extra_args: Sequence[str] = (),
    cwd: Path | None = None,
    timeout: float = 20.0,
    grace_after_listening: float = 5.0,
) -> FailedStart:
    """Run mitmdump when it is expected to refuse to start.

    Waits for it to exit (at most ``timeout`` s). If it reports a listening port and is still
    running ``grace_after_listening`` seconds later without having announced that it is exiting,
    it is considered up: it is stopped, and the result has ``returncode=None``.
    """
    cmd = build_command(
        confdir=confdir,
        script=script,
        allowlist=allowlist,
        upstream_ca=upstream_ca,
        extra_args=extra_args,
    )
    confdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        cmd,
        cwd=cwd or REPO_ROOT,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    chunks: list[str] = []
    lock = threading.Lock()

    def pump() -> None:
        assert proc.stdout is not None
        while data := os.read(proc.stdout.fileno(), 65536):
            with lock:
                chunks.append(data.decode("utf-8", "replace"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    listening_since: float | None = None
    returncode: int | None = None
    while True:
        returncode = proc.poll()
        if returncode is not None:
            break
        now = time.monotonic()
        with lock:
            text = "".join(chunks)
        if listening_since is None and _LISTENING.search(text):
            listening_since = now
        # Once mitmdump has said it is exiting, wait for the exit itself (slow on a busy machine).
        exiting = _STARTUP_FAILED in text
        if now >= deadline or (
            not exiting
            and listening_since is not None
            and now - listening_since >= grace_after_listening
        ):
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            returncode = None
            break
        time.sleep(0.05)
    reader.join(5)
    assert proc.stdout is not None
    proc.stdout.close()
    with lock:
        output = "".join(chunks)
    return FailedStart(returncode=returncode, output=output)


def assert_clean_start_up_failure(output: str) -> None:
    """A refused start-up shows the reason alone: no traceback, and it never listened."""
    assert "Traceback" not in output, output
    assert not _LISTENING.search(output), f"it listened before refusing:\n{output}"
    assert _STARTUP_FAILED not in output, output


class ProxyLauncher:
    """Starts mitmdump processes (the addon by default) and stops them all at teardown."""

    def __init__(self, confdir: Path, upstream_ca: Path, workdir: Path) -> None:
        self.confdir = confdir
        self.upstream_ca = upstream_ca
        self.workdir = workdir
        self.processes: list[MitmdumpProcess] = []

    def start(
        self,
        allowlist: Path | str | None,
        *,
        extra_args: Sequence[str] = (),
        script: Path | str | None = ADDON_SCRIPT,
        cwd: Path | None = None,
        label: str | None = None,
    ) -> MitmdumpProcess:
        """Start the proxy and wait for it: ``mitmdump -s addon/chime_headers.py`` by default,
        a bare mitmdump for ``script=None``, ``chime-egress run`` for ``script=LAUNCHER``."""
        proc = MitmdumpProcess(
            confdir=self.confdir,
            script=script,
            allowlist=allowlist,
            upstream_ca=self.upstream_ca,
            extra_args=extra_args,
            cwd=cwd or self.workdir,
            label=label or f"mitmdump #{len(self.processes) + 1}",
        )
        self.processes.append(proc)
        return proc.start()

    def stop_all(self) -> None:
        for proc in self.processes:
            proc.stop()
