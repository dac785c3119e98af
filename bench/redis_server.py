"""The shared state of the `*-redis` rows: a redis-server the harness starts
itself, on a free loopback port, with no persistence (no RDB snapshots, no
AOF), its files in the scenario's scratch directory, pinned like nginx to the
load generator's core so that the gateway keeps its core to itself.

`command_counts()` reads INFO commandstats over a plain socket: their growth
over a run divided by the calls of the run is what one call costs in Redis
commands.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from bench.procs import BenchError, Process, pinned

_READY_SECONDS = 10.0


def version(binary: str) -> str:
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    for word in done.stdout.split():
        if word.startswith("v="):
            return word.removeprefix("v=")
    return done.stdout.strip() or "?"


class RedisServer:
    def __init__(self, binary: str, directory: Path, port: int, cpu: int | None) -> None:
        self.port = port
        directory.mkdir(parents=True, exist_ok=True)
        options = {
            "port": str(port),
            "bind": "127.0.0.1",
            "save": "",
            "appendonly": "no",
            "daemonize": "no",
            "dir": str(directory),
            "logfile": str(directory / "redis.log"),
        }
        argv = [binary]
        for name, value in options.items():
            argv += [f"--{name}", value]
        self.process = Process("redis-server", pinned(cpu, argv), directory / "redis.out")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def wait_ready(self) -> None:
        """Listening and answering PING (it may accept before it loaded)."""
        self.process.wait_for_port(self.port)
        deadline = time.monotonic() + _READY_SECONDS
        while time.monotonic() < deadline:
            try:
                if self._command(b"PING").startswith(b"+PONG"):
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise BenchError(f"redis-server does not answer PING on {self.port}")

    def command_counts(self) -> dict[str, int]:
        """Calls of each command so far, from INFO commandstats (this INFO
        not included). Redis counts the commands a script runs as well as
        the EVALSHA that ran it."""
        counts: dict[str, int] = {}
        info = self._command(b"INFO commandstats")
        for line in info.decode("ascii", errors="replace").splitlines():
            name, _, stats = line.partition(":")
            if not name.startswith("cmdstat_"):
                continue
            fields = dict(field.partition("=")[::2] for field in stats.split(","))
            counts[name.removeprefix("cmdstat_")] = int(fields.get("calls", "0"))
        return counts

    def commands_since(self, before: dict[str, int]) -> dict[str, int]:
        """Calls of each command since `before` was read by command_counts()."""
        after = self.command_counts()
        after["info"] = after.get("info", 0) - 1  # the INFO that read `before`
        return {
            name: count - before.get(name, 0)
            for name, count in sorted(after.items())
            if count != before.get(name, 0)
        }

    def _command(self, inline: bytes) -> bytes:
        """One inline command; the reply, a bulk string's payload in full."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as connection:
            connection.sendall(inline + b"\r\n")
            reply = b""
            while b"\r\n" not in reply:
                chunk = connection.recv(65536)
                if not chunk:
                    raise BenchError("redis-server closed the connection")
                reply += chunk
            head, _, body = reply.partition(b"\r\n")
            if not head.startswith(b"$"):
                return reply
            length = int(head[1:])
            while len(body) < length:
                chunk = connection.recv(65536)
                if not chunk:
                    raise BenchError("redis-server closed the connection")
                body += chunk
            return body[:length]
