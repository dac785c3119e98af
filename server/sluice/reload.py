"""Hot reload: the config file is watched and reloaded, and on SIGHUP.

A valid new config becomes a new Gateway (taking over the old one's
long-lived parts, see gateway.py) that serves every call started from then
on; calls in flight finish on the gateway they started with, which is closed
once its last call ends. An invalid config is refused with its ConfigError
(file, line and key) logged, and the running gateway stays.

The file is polled, not watched with inotify: a stat every second is cheap,
needs no dependency, and sees every way a file is replaced. Kubernetes
ConfigMap and Secret volumes are the hard case: the file is a symlink through
`..data`, itself a symlink that the kubelet swaps atomically to a new
timestamped directory, so the watched path's own inode never changes and an
inotify watch on it goes stale. The signature compared here is where the
path's symlinks lead now, and the inode, size and mtime of the file there.
(A `subPath` mount is a copy that Kubernetes never updates: nothing to see.)
A change is acted on once the signature has held still for `settle` seconds,
so an editor's truncate-then-write or a burst of writes is loaded once, whole.
A deleted file is a change too: its reload is refused, saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from sluice.config import ConfigError, GatewayConfig, load_config
from sluice.gateway import Gateway

logger = logging.getLogger(__name__)

POLL_INTERVAL = 1.0
SETTLE = 0.25
# server.* settings the running gRPC server was built with: a reload keeps them.
RESTART_ONLY = (
    "host",
    "port",
    "listen",
    "workers",
    "max_concurrent_calls",
    "keepalive",
    "max_connection_age",
    "max_connection_age_grace",
    "max_streams_per_connection",
    "max_send_message_bytes",
    "max_receive_message_bytes",
    "compression",
)

# The resolved path, then st_dev, st_ino, st_size and st_mtime_ns of the file there.
Signature = tuple[str, int, int, int, int]


def file_signature(path: Path) -> Signature | None:
    """What changes when the file at `path` may have changed; None while
    there is no file to read."""
    try:
        real = os.path.realpath(path)
        stat = os.stat(real)
    except OSError:
        return None
    return (real, stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


class FileWatch:
    """Polled by the caller: says when the file changed and then held still
    for `settle` seconds."""

    def __init__(self, path: Path, settle: float = SETTLE) -> None:
        self.path = path
        self.settle = settle
        self._loaded = self._seen = file_signature(path)
        self._seen_at = 0.0

    @property
    def pending(self) -> bool:
        """A change seen, not yet settled."""
        return self._seen != self._loaded

    def changed(self, now: float) -> bool:
        """True once per settled change; `now` is a monotonic time in seconds."""
        signature = file_signature(self.path)
        if signature != self._seen:
            self._seen, self._seen_at = signature, now
            return False
        if not self.pending or now - self._seen_at < self.settle:
            return False
        self._loaded = signature
        return True


class _Generation:
    """A gateway and the count of its calls in flight; `with` counts one call."""

    __slots__ = ("calls", "gateway", "idle")

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.calls = 0
        self.idle: asyncio.Event | None = None  # set when retired and without calls

    def __enter__(self) -> Gateway:
        self.calls += 1
        return self.gateway

    def __exit__(self, *exc_info: object) -> None:
        self.calls -= 1
        if self.idle is not None and self.calls == 0:
            self.idle.set()

    def retire(self) -> asyncio.Event:
        self.idle = asyncio.Event()
        if self.calls == 0:
            self.idle.set()
        return self.idle


class GatewayHolder:
    """The gateway new calls use (`current`), and the replaced ones still
    finishing calls. A call holds its gateway with `with holder.lease() as
    gateway:` for as long as it runs."""

    def __init__(self, gateway: Gateway) -> None:
        self._current = _Generation(gateway)
        self._retired: set[_Generation] = set()
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def current(self) -> Gateway:
        return self._current.gateway

    def lease(self) -> contextlib.AbstractContextManager[Gateway]:
        return self._current

    def replace(self, gateway: Gateway) -> None:
        """New calls go to `gateway`; the previous one is closed once its
        calls in flight have ended."""
        previous, self._current = self._current, _Generation(gateway)
        self._retired.add(previous)
        task = asyncio.create_task(self._close_when_idle(previous, previous.retire()))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Close every gateway: once the server has stopped, so no call is in
        flight any more."""
        for generation in self._retired:
            assert generation.idle is not None
            generation.idle.set()
        await asyncio.gather(*self._closing)
        await self._close(self._current)

    async def _close_when_idle(self, generation: _Generation, idle: asyncio.Event) -> None:
        await idle.wait()
        self._retired.discard(generation)
        await self._close(generation)

    async def _close(self, generation: _Generation) -> None:
        # What another live gateway took over stays open for it.
        live = (other for other in (self._current, *self._retired) if other is not generation)
        keep = [part for other in live for part in other.gateway.long_lived()]
        try:
            await generation.gateway.aclose(keep)
        except Exception:
            logger.exception("closing a gateway failed")


class ConfigReloader:
    """Reloads `path` into `gateways`: on `reload()` (SIGHUP) and, between
    `start()` and `stop()`, whenever the file changes. `check` says why a
    valid config cannot be served here, if it cannot."""

    def __init__(
        self,
        path: Path,
        gateways: GatewayHolder,
        *,
        interval: float = POLL_INTERVAL,
        settle: float = SETTLE,
        check: Callable[[GatewayConfig], str | None] = lambda _: None,
    ) -> None:
        self.path = path
        self.interval = interval
        self._gateways = gateways
        self._check = check
        # Taken now, right after the running config was loaded from the file.
        self._watch = FileWatch(path, settle)
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        """No more reloads, from the file or from `reload()`."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def reload(self, cause: str) -> bool:
        """Load the file and serve new calls with it; False if it was refused.
        Synchronous, so two reloads never interleave."""
        if self._stopped:
            logger.warning("config reload (%s) ignored: the server is stopping", cause)
            return False
        try:
            config = load_config(self.path)
        except ConfigError as error:
            logger.error("config reload (%s) refused, the running config stays:\n%s", cause, error)
            return False
        if problem := self._check(config):
            logger.error("config reload (%s) refused, the running config stays: %s", cause, problem)
            return False
        running = self._gateways.current
        if config == running.config:
            logger.info("config reload (%s): %s is unchanged", cause, self.path)
            return True
        try:
            gateway = Gateway(config, reuse=running)
        except Exception:
            logger.exception("config reload (%s) failed, the running config stays", cause)
            return False
        old, new = running.config.server, config.server
        if changed := [key for key in RESTART_ONLY if getattr(old, key) != getattr(new, key)]:
            logger.warning(
                "config reload (%s): only a restart applies %s",
                cause,
                " and ".join(f"server.{key}" for key in changed),
            )
        self._gateways.replace(gateway)
        routes = ", ".join(route.name for route in config.routes)
        logger.info("config reloaded (%s) from %s (routes: %s)", cause, self.path, routes)
        return True

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._watch.settle if self._watch.pending else self.interval)
            if self._watch.changed(loop.time()):
                self.reload("file changed")
