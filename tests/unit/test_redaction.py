"""Registered secrets never survive into error messages or log lines."""

from __future__ import annotations

import logging
import sys

from sluice.config.loader import parse_config
from sluice.errors import upstream_http_error
from sluice.redaction import RedactingFormatter, redact

KEY = "sk-redaction-test-9f8e7d"
CONFIG = """\
routes:
  - name: r
    route_type: llm/v1/chat
    model: {provider: openai, name: m, api_key: "{{ secrets.REDACTION_KEY }}"}
"""


def test_loaded_secrets_are_redacted_from_errors_and_logs() -> None:
    parse_config(CONFIG, "gw.yaml", {"REDACTION_KEY": KEY})
    assert redact(f"Bearer {KEY}!") == "Bearer [REDACTED]!"

    error = upstream_http_error("openai", 429, f"key {KEY} is over quota", request_id=KEY)
    assert KEY not in error.message
    assert KEY not in str(error.metadata)

    try:
        raise RuntimeError(f"failed with {KEY}")
    except RuntimeError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "call %s", (KEY,), None)
        record.exc_info = sys.exc_info()
    line = RedactingFormatter("%(message)s").format(record)
    assert KEY not in line
    assert line.count("[REDACTED]") == 2
