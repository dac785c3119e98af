"""The access log: one JSON object per line for each call, on stdout or
appended to a file, and to OpenTelemetry logs when a logs exporter is on.

Every line passes through `redact`, like every other log line: no configured
secret can appear in it. A file is opened with `WatchedFileHandler`, so
logrotate can move it away and the next line starts a new file.

Lines to stdout or the file are buffered and written together, at most
`FLUSH_INTERVAL` seconds after the first of them (or once `MAX_BUFFERED` are
waiting), and at `close`, which shutdown calls: one write per interval
instead of a write and a flush per call. OpenTelemetry log records are made
at once, in the call's context, so that each joins the call's trace (the
SDK batches their export itself).
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import sys
from collections.abc import Callable, Mapping, Sequence

import orjson

from sluice.redaction import redact

LOGGER_NAME = "sluice.access"
FLUSH_INTERVAL = 0.2
MAX_BUFFERED = 512


class AccessLog:
    def __init__(self, main: logging.Handler, extra: Sequence[logging.Handler] = ()) -> None:
        self._main = main
        self._extra = extra
        for handler in (main, *extra):
            handler.setFormatter(logging.Formatter("%(message)s"))
        self._pending: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    @property
    def exported(self) -> bool:
        """Whether lines also go to OpenTelemetry logs (whose records take
        the current trace context)."""
        return bool(self._extra)

    @classmethod
    def to(cls, path: str | None, *extra: logging.Handler) -> AccessLog:
        """Lines to `path` (stdout when None), and to `extra` handlers."""
        main: logging.Handler = (
            logging.StreamHandler(sys.stdout)
            if path is None
            else logging.handlers.WatchedFileHandler(path, encoding="utf-8")
        )
        return cls(main, extra)

    def write(self, entry: Mapping[str, object]) -> None:
        line = redact(orjson.dumps(entry).decode())
        for handler in self._extra:
            handler.handle(_record(line))
        self._pending.append(line)
        if len(self._pending) >= MAX_BUFFERED:
            self.flush()
        elif self._timer is None:
            self._timer = _later(FLUSH_INTERVAL, self.flush)

    def record(self, entry: Mapping[str, object]) -> None:
        """`entry` to the OpenTelemetry logs only (not an access line): an
        event about an earlier call, in the current context."""
        line = redact(orjson.dumps(entry).decode())
        for handler in self._extra:
            handler.handle(_record(line))

    def flush(self) -> None:
        """Write the buffered lines now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            lines, self._pending = self._pending, []
            self._main.handle(_record("\n".join(lines)))

    def close(self) -> None:
        self.flush()
        for handler in (self._main, *self._extra):
            handler.close()


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord(LOGGER_NAME, logging.INFO, "", 0, message, None, None)


def _later(seconds: float, callback: Callable[[], None]) -> asyncio.TimerHandle | None:
    """`callback` in `seconds` on the running loop; None outside one (the
    caller then flushes at close, or when the buffer fills)."""
    try:
        return asyncio.get_running_loop().call_later(seconds, callback)
    except RuntimeError:
        return None
