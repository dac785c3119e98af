"""The process-wide set of secret values, so that no message can leak one.

Config loading registers every resolved secret; `redact` replaces each
occurrence in any text bound for a log, span or error.
"""

from __future__ import annotations

import logging
import re

_MIN_SECRET_LENGTH = 4  # shorter values are too common in text to redact safely


class _SecretRegistry:
    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def register(self, value: str) -> None:
        if len(value) >= _MIN_SECRET_LENGTH and value not in self._secrets:
            self._secrets.add(value)
            longest_first = sorted(self._secrets, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(s) for s in longest_first))

    def redact(self, text: str) -> str:
        return text if self._pattern is None else self._pattern.sub("[REDACTED]", text)


_registry = _SecretRegistry()
register_secret = _registry.register
redact = _registry.redact


class RedactingFormatter(logging.Formatter):
    """Formats log records, tracebacks included, with secrets redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
