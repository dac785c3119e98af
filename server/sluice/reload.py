"""Hot reload: the config file is watched and reloaded, and on SIGHUP.

A valid new config becomes a new Gateway (taking over the old one's
long-lived parts, see gateway.py) that serves every call started from then
on; calls in flight finish on the gateway they started with, which is closed
once its last call ends. An invalid config is refused with its ConfigError
(file, line and key) logged, and the running gateway stays.

The file is read in a child process within a time bound (config/isolated.py),
so however costly the file, calls go on being served meanwhile. Whatever
makes a reload fail leaves the running gateway serving; each reload is
logged and counted in `sluice.config.reloads` by `outcome`, and
`sluice.config.hash` says which file's bytes serve.

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
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from sluice.config import ConfigError, GatewayConfig
from sluice.config.isolated import (
    RELOAD_TIMEOUT,
    LoadFailedError,
    LoadTimedOutError,
    read_config_isolated,
)
from sluice.config.loader import LoadedConfig, read_bounded
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
    "tls",
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

    def reading(self) -> None:
        """The file is being read now (for a signal, say): what it is now is
        no change still to act on."""
        self._loaded = self._seen = file_signature(self.path)


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
        timeout: float = RELOAD_TIMEOUT,
        check: Callable[[GatewayConfig], str | None] = lambda _: None,
    ) -> None:
        self.path = path
        self.interval = interval
        self.timeout = timeout
        self._gateways = gateways
        self._check = check
        # Taken now, right after the running config was loaded from the file.
        self._watch = FileWatch(path, settle)
        with contextlib.suppress(ConfigError):
            self._serving(hashlib.sha256(read_bounded(path)).hexdigest())
        self._lock = asyncio.Lock()  # two reloads never interleave
        self._tasks: set[asyncio.Task[bool]] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        """No more reloads, from the file or from `reload()`; one under way
        is abandoned (its reader killed)."""
        self._stopped = True
        for task in (self._task, *self._tasks):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def reload_soon(self, cause: str) -> None:
        """`reload()` in the background: for a signal handler."""
        task = asyncio.create_task(self.reload(cause))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self, cause: str) -> bool:
        """Load the file and serve new calls with it; False if it was refused."""
        if self._stopped:
            logger.warning("config reload (%s) ignored: the server is stopping", cause)
            return False
        async with self._lock:
            outcome = await self._reload(cause)
        self._gateways.current.telemetry.instruments.config_reloads.add(1, {"outcome": outcome})
        return outcome in ("success", "unchanged")

    async def _read(self) -> LoadedConfig:
        """The file, read in a child process. A child that crashed is asked
        once more: its crash says nothing of the file, and the poll will not
        read the file again until it changes. One that ran out of time is
        not: it would take as long again."""
        try:
            return await read_config_isolated(self.path, self.timeout)
        except LoadTimedOutError:
            raise
        except LoadFailedError as error:
            logger.warning("the config reader failed (%s); reading %s again", error, self.path)
            return await read_config_isolated(self.path, self.timeout)

    async def _reload(self, cause: str) -> str:
        """The reload's outcome: success, unchanged, invalid, timeout or error."""
        self._watch.reading()  # a SIGHUP after a write: the poll need not read it again
        try:
            loaded = await self._read()
        except ConfigError as error:
            logger.error("config reload (%s) refused, the running config stays:\n%s", cause, error)
            return "invalid"
        except LoadFailedError as error:
            logger.error("config reload (%s) failed, the running config stays: %s", cause, error)
            return "timeout" if isinstance(error, LoadTimedOutError) else "error"
        except Exception:
            logger.exception("config reload (%s) failed, the running config stays", cause)
            return "error"
        config = loaded.register_secrets()
        if problem := self._check(config):
            logger.error("config reload (%s) refused, the running config stays: %s", cause, problem)
            return "invalid"
        running = self._gateways.current
        if config == running.config:
            logger.info("config reload (%s): %s is unchanged", cause, self.path)
            self._serving(loaded.digest)
            return "unchanged"
        try:
            gateway = Gateway(config, reuse=running)
        except Exception:
            logger.exception("config reload (%s) failed, the running config stays", cause)
            return "error"
        _warn_of_restart_only_changes(cause, running.config, config)
        self._gateways.replace(gateway)
        self._serving(loaded.digest)
        routes = ", ".join(route.name for route in config.routes)
        logger.info("config reloaded (%s) from %s (routes: %s)", cause, self.path, routes)
        return "success"

    def _serving(self, digest: str) -> None:
        self._gateways.current.telemetry.instruments.serving_config(digest)

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._watch.settle if self._watch.pending else self.interval)
            if self._watch.changed(loop.time()):
                await self.reload("file changed")


def _warn_of_restart_only_changes(cause: str, old: GatewayConfig, new: GatewayConfig) -> None:
    if changed := [
        key for key in RESTART_ONLY if getattr(old.server, key) != getattr(new.server, key)
    ]:
        logger.warning(
            "config reload (%s): only a restart applies %s",
            cause,
            " and ".join(f"server.{key}" for key in changed),
        )
