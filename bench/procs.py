"""Starting, pinning, waiting for and stopping the processes of a scenario.
Every process gets its own session, so that stopping it also ends whatever it
started (nginx's workers); nothing outlives `Processes.close()`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parent.parent


class BenchError(Exception):
    """A scenario could not run; the message says why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(cpu: int | None, argv: list[str]) -> list[str]:
    """`argv` pinned to one core with taskset (it execs: the pid stays the command's)."""
    if cpu is None:
        return argv
    if shutil.which("taskset") is None:
        raise BenchError("taskset (util-linux) is needed to pin processes to a core")
    return ["taskset", "-c", str(cpu), *argv]


def python_env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(REPO), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Process:
    def __init__(
        self,
        name: str,
        argv: list[str],
        log: Path,
        stop_signal: signal.Signals = signal.SIGTERM,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log = log
        self._stop_signal = stop_signal
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=env,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_for_port(self, port: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise BenchError(
                    f"{self.name} exited with {self.popen.returncode} at startup:\n{self.tail()}"
                )
            with socket.socket() as sock:
                sock.settimeout(0.5)
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.05)
        raise BenchError(f"{self.name} is not listening on {port} after {timeout}s:\n{self.tail()}")

    def stop(self, timeout: float = 5.0) -> None:
        """Ask politely, then kill the process group (ours: start_new_session)."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(self._stop_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)


class Processes:
    """The processes of one scenario, stopped in reverse order on exit."""

    def __init__(self) -> None:
        self._started: list[Process] = []

    def start(self, process: Process) -> Process:
        self._started.append(process)
        return process

    def check_running(self) -> None:
        """Raise if one has exited: the run measured a broken setup. The
        latest started (the server under test) is named first."""
        for process in reversed(self._started):
            if process.popen.poll() is not None:
                raise BenchError(f"{process.name} exited during the run:\n{process.tail()}")

    def close(self) -> None:
        while self._started:
            self._started.pop().stop()

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


_apt_updated = False


def ensure_tool(binary: str, package: str) -> str:
    """The path of `binary`; when it is missing and we are root, apt-get
    installs `package` first. Raises BenchError when it cannot be had."""
    global _apt_updated  # noqa: PLW0603 (one `apt-get update` per run)
    for candidate in (shutil.which(binary), f"/usr/sbin/{binary}", f"/usr/bin/{binary}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BenchError(f"{binary} is missing: run `apt-get install -y {package}` as root")
    print(f"bench: {binary} is missing; apt-get install -y {package}", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = [["apt-get", "install", "-y", "-qq", package]]
    if not _apt_updated:
        steps.insert(0, ["apt-get", "update", "-qq"])
        _apt_updated = True
    for argv in steps:
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, check=False, timeout=600
        )
        if done.returncode != 0:
            raise BenchError(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    found = shutil.which(binary) or f"/usr/sbin/{binary}"
    if not os.access(found, os.X_OK):
        raise BenchError(f"{package} is installed but has no {binary}")
    return found


def python_argv(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def stop_signal() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT: a helper server's cue to stop."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    return stopping
