"""The access log: one JSON object per line for each call, on stdout or
appended to a file, and to OpenTelemetry logs when a logs exporter is on.

Every line passes through `redact`, like every other log line: no configured
secret can appear in it. A file is opened with `WatchedFileHandler`, so
logrotate can move it away and the next line starts a new file.

Lines to stdout or the file are buffered and written together, at most
`FLUSH_INTERVAL` seconds after the first of them (or once `MAX_BUFFERED` are
waiting), and at `close`, which shutdown calls: one write per interval
instead of a write and a flush per call. OpenTelemetry log records are made
at once, in the trace context the writer gives, so that each joins its
call's trace (the SDK batches their export itself); they go straight to the
exports, without a `logging.LogRecord` or the current context switched.
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import sys
from collections.abc import Callable, Mapping, Sequence

import orjson
from opentelemetry.context import Context

from sluice.redaction import redact

LOGGER_NAME = "sluice.access"
FLUSH_INTERVAL = 0.2
MAX_BUFFERED = 512


# A line on its way to OpenTelemetry logs, with the trace context its record
# joins (None: the current one).
LogExport = Callable[[str, Context | None], None]


class AccessLog:
    def __init__(self, main: logging.Handler, exports: Sequence[LogExport] = ()) -> None:
        self._main = main
        self._exports = exports
        main.setFormatter(logging.Formatter("%(message)s"))
        self._pending: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def to(cls, path: str | None, *exports: LogExport) -> AccessLog:
        """Lines to `path` (stdout when None), and to `exports`."""
        main: logging.Handler = (
            logging.StreamHandler(sys.stdout)
            if path is None
            else logging.handlers.WatchedFileHandler(path, encoding="utf-8")
        )
        return cls(main, exports)

    def write(self, entry: Mapping[str, object], context: Context | None = None) -> None:
        """A call's line; its log record joins the trace in `context`."""
        self._pending.append(self._exported(entry, context))
        if len(self._pending) >= MAX_BUFFERED:
            self.flush()
        elif self._timer is None:
            self._timer = _later(FLUSH_INTERVAL, self.flush)

    def record(self, entry: Mapping[str, object], context: Context | None = None) -> None:
        """`entry` to the OpenTelemetry logs only (not an access line): an
        event about an earlier call, whose trace `context` names."""
        self._exported(entry, context)

    def _exported(self, entry: Mapping[str, object], context: Context | None) -> str:
        """`entry` as a line, redacted, sent to the exports."""
        line = redact(orjson.dumps(entry).decode())
        for export in self._exports:
            export(line, context)
        return line

    def flush(self) -> None:
        """Write the buffered lines now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            lines, self._pending = self._pending, []
            self._main.handle(
                logging.LogRecord(LOGGER_NAME, logging.INFO, "", 0, "\n".join(lines), None, None)
            )

    def close(self) -> None:
        self.flush()
        self._main.close()


def _later(seconds: float, callback: Callable[[], None]) -> asyncio.TimerHandle | None:
    """`callback` in `seconds` on the running loop; None outside one (the
    caller then flushes at close, or when the buffer fills)."""
    try:
        return asyncio.get_running_loop().call_later(seconds, callback)
    except RuntimeError:
        return None
