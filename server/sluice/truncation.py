"""Shortening text that a caller or an upstream chose, before it is
recorded (span attributes, access log lines): its length is theirs."""

from __future__ import annotations

ELLIPSIS = "…"
# Longer than any name an operator configures, short enough that a record
# holding a few stays small.
MAX_RECORDED_CHARS = 256


def truncate(text: str, limit: int = MAX_RECORDED_CHARS) -> str:
    """`text` if it has at most `limit` characters, else its first ones and
    an ellipsis, `limit` characters in all."""
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS
