"""The process model: `sluice serve --workers N` runs N gateway processes on
one port (SO_REUSEPORT: the kernel spreads connections across them), each a
full gateway, under a supervisor process that serves no calls itself.

The supervisor starts each worker as `sluice serve ... --worker INDEX:COUNT:FD`, a
fresh interpreter (not a fork: grpc's threads and polling state do not
survive fork), and keeps a socket pair with it: the worker writes `ready`
once it listens, and sees end-of-file when the supervisor is gone, however
it died, so a worker never outlives it holding the port. A worker that dies
is started again after a backoff that doubles up to RESTART_BACKOFF_MAX and
resets once a worker has stayed up STABLE_AFTER seconds. SIGHUP is passed on
to every worker (each reloads its config); SIGTERM and SIGINT too (each
drains), and the supervisor exits 0 once all have exited cleanly, or 1 if one
had to be killed for outliving the drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Sequence
from typing import Literal

from sluice.config import GatewayConfig
from sluice.listeners import address_port

logger = logging.getLogger(__name__)

RESTART_BACKOFF_INITIAL = 0.5
RESTART_BACKOFF_MAX = 30.0
# A worker up this long is healthy again: its next death restarts at once.
STABLE_AFTER = 60.0
# Beyond shutdown_grace: time a worker gets to close its gateway and exporters.
DRAIN_MARGIN = 5.0
READY = b"ready\n"

# A worker's `--worker` argument -> its command line.
WorkerCommand = Callable[[str], Sequence[str]]


def worker_count(setting: int | Literal["auto"]) -> int:
    """`auto` is the number of cores this process may run on."""
    return len(os.sched_getaffinity(0)) if setting == "auto" else setting


def workers_problem(config: GatewayConfig, workers: int, addresses: Sequence[str]) -> str | None:
    """Why `config` cannot be served by `workers` processes on `addresses`, if it cannot."""
    if workers == 1:
        return None
    ports = [address_port(address) for address in addresses]
    if 0 in ports:
        return "port 0 cannot be shared by workers (each would pick its own): give a port"
    if None in ports:
        # gRPC removes a socket file it finds before binding: each worker
        # would take the path over from the one before.
        return (
            "a unix: socket cannot be shared by workers: serve it with one worker, "
            "or listen on a TCP port"
        )
    state = config.state
    if state.backend == "memory" and not state.per_worker and _has_limits_or_budgets(config):
        return (
            f"with {workers} workers, state.backend: memory would count limits and budgets "
            "in each worker on its own; use state.backend: redis to share them, or say "
            "state.per_worker: true to accept per-worker limits"
        )
    return None


def _has_limits_or_budgets(config: GatewayConfig) -> bool:
    keys = config.auth.keys if config.auth is not None else []
    return any(route.limits for route in config.routes) or any(
        key.limits or key.budget for key in keys
    )


class WorkerLink:
    """Worker `index` of `count`, and its end of its supervisor's control socket."""

    def __init__(self, index: int, count: int, fd: int) -> None:
        self.index = index
        self.count = count
        self._socket = socket.socket(fileno=fd)

    @classmethod
    def parse(cls, value: str) -> WorkerLink:
        """From `--worker INDEX:COUNT:FD`."""
        index, count, fd = value.split(":")
        return cls(int(index), int(count), int(fd))

    @staticmethod
    def argument(index: int, count: int, fd: int) -> str:
        """The `--worker` value `parse` reads."""
        return f"{index}:{count}:{fd}"

    def ready(self) -> None:
        self._socket.sendall(READY)

    async def supervisor_gone(self) -> None:
        """Return once the supervisor has closed its end: it exited or was killed."""
        self._socket.setblocking(False)
        loop = asyncio.get_running_loop()
        while await loop.sock_recv(self._socket, 64):
            pass


class Supervisor:
    """Runs `count` workers until SIGTERM or SIGINT; `run` returns the exit code."""

    def __init__(self, command: WorkerCommand, count: int, *, grace: float) -> None:
        self._command = command
        self._count = count
        self._grace = grace
        self._processes: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        self._signal = signal.SIGTERM

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop, signum)
        loop.add_signal_handler(signal.SIGHUP, self._forward, signal.SIGHUP)
        slots = [asyncio.create_task(self._supervise(index)) for index in range(self._count)]
        await self._stopping.wait()
        _, running = await asyncio.wait(slots, timeout=self._grace + DRAIN_MARGIN)
        for index, process in self._processes.items():
            if process.returncode is None:
                logger.error("worker %d (pid %d) outlived the drain: killed", index, process.pid)
                process.kill()
        results = [await slot for slot in slots]
        clean = not running and all(results)
        logger.info("all workers stopped")
        return 0 if clean else 1

    async def _supervise(self, index: int) -> bool:
        """Keep worker `index` running until the stop; True if it ended cleanly."""
        loop = asyncio.get_running_loop()
        failures = 0
        first = True
        while not self._stopping.is_set():
            process, control = await self._spawn(index)
            with control:
                ready = bool(await loop.sock_recv(control, len(READY)))
                if not ready and first and not self._stopping.is_set():
                    # It could not start (its error is on stderr): nor would the next.
                    await process.wait()
                    logger.error("worker %d could not start: stopping", index)
                    self._stop(signal.SIGTERM)
                    return False
                first = False
                started = loop.time()
                code = await process.wait()
            if self._stopping.is_set():
                return code == 0 or -code == self._signal
            if loop.time() - started >= STABLE_AFTER:
                failures = 0
            delay = min(RESTART_BACKOFF_INITIAL * 2**failures, RESTART_BACKOFF_MAX)
            failures += 1
            logger.error(
                "worker %d (pid %d) %s: restarting in %.1fs",
                index,
                process.pid,
                _exit_description(code),
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
        return True

    async def _spawn(self, index: int) -> tuple[asyncio.subprocess.Process, socket.socket]:
        ours, theirs = socket.socketpair()
        with theirs:
            argument = WorkerLink.argument(index, self._count, theirs.fileno())
            process = await asyncio.create_subprocess_exec(
                *self._command(argument), pass_fds=(theirs.fileno(),)
            )
        self._processes[index] = process
        if self._stopping.is_set():  # the stop came while it was starting
            process.send_signal(self._signal)
        ours.setblocking(False)
        logger.info("worker %d started (pid %d)", index, process.pid)
        return process, ours

    def _stop(self, signum: signal.Signals) -> None:
        if self._stopping.is_set():
            return
        logger.info("%s: draining %d workers", signum.name, len(self._processes))
        self._signal = signum
        self._stopping.set()
        self._forward(signum)

    def _forward(self, signum: signal.Signals) -> None:
        for process in self._processes.values():
            if process.returncode is None:
                process.send_signal(signum)


def _exit_description(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"
