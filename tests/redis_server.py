"""A real `redis-server` on a free loopback port, for tests of the Redis backend.

`stop()` and `start()` take it down and bring it back on the same port (an
outage and a recovery); `kill()` takes it down with SIGKILL (a crash); `pause()` and `resume()` freeze it with SIGSTOP, so it
accepts connections but never answers (a hung server).

Use the `redis_server` fixture by importing it into a conftest.py:
`from tests.redis_server import redis_server  # noqa: F401`.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

_START_SECONDS = 10.0
_STOP_SECONDS = 5.0


class RedisServer:
    def __init__(self, directory: Path, options: dict[str, str] | None = None) -> None:
        """`options`: more redis-server options, beside the ones below."""
        self.port = free_port()
        self._options = options or {}
        self._directory = directory
        self._log = directory / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.fail("redis-server is not on PATH; `make test` installs it")
        # No persistence: a restart comes back empty, as after a crash.
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "save": "",
            "appendonly": "no",
            "daemonize": "no",
            "dir": str(self._directory),
            "logfile": str(self._log),
            **self._options,
        }
        self._process = subprocess.Popen(
            [executable, *itertools.chain.from_iterable((f"--{k}", v) for k, v in options.items())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + _START_SECONDS
        while not self._answers_ping():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"redis-server did not start on port {self.port}:\n{self._log_tail()}")
            time.sleep(0.01)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if self._paused:
            self._continue(process)
        process.terminate()
        try:
            process.wait(_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(_STOP_SECONDS)

    def kill(self) -> None:
        process, self._process = self._process, None
        assert process is not None, "redis-server is not running"
        process.kill()
        process.wait(_STOP_SECONDS)

    def pause(self) -> None:
        assert self._process is not None, "redis-server is not running"
        os.kill(self._process.pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        assert self._process is not None, "redis-server is not running"
        self._continue(self._process)

    def _continue(self, process: subprocess.Popen[bytes]) -> None:
        os.kill(process.pid, signal.SIGCONT)
        self._paused = False

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _log_tail(self) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh, empty redis-server for one test, stopped after it."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
