"""The access log: one JSON object per line for each call, on stdout or
appended to a file, and to OpenTelemetry logs when a logs exporter is on.

Every line passes through `redact`, like every other log line: no configured
secret can appear in it. A file is opened with `WatchedFileHandler`, so
logrotate can move it away and the next line starts a new file.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from collections.abc import Mapping, Sequence

from sluice.redaction import redact

LOGGER_NAME = "sluice.access"


class AccessLog:
    def __init__(self, handlers: Sequence[logging.Handler]) -> None:
        self._handlers = handlers
        for handler in handlers:
            handler.setFormatter(logging.Formatter("%(message)s"))

    @classmethod
    def to(cls, path: str | None, *extra: logging.Handler) -> AccessLog:
        """Lines to `path` (stdout when None), and to `extra` handlers."""
        main: logging.Handler = (
            logging.StreamHandler(sys.stdout)
            if path is None
            else logging.handlers.WatchedFileHandler(path, encoding="utf-8")
        )
        return cls([main, *extra])

    def write(self, entry: Mapping[str, object]) -> None:
        line = redact(json.dumps(entry, separators=(",", ":"), ensure_ascii=False))
        record = logging.LogRecord(LOGGER_NAME, logging.INFO, "", 0, line, None, None)
        for handler in self._handlers:
            handler.handle(record)

    def close(self) -> None:
        for handler in self._handlers:
            handler.close()
