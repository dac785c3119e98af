"""The access log: lines are buffered and written together, soon and at
close; OpenTelemetry's records are made per call, at once; secrets never
reach a line."""

from __future__ import annotations

import asyncio
import io
import json
import logging

from opentelemetry.context import Context

from sluice.redaction import register_secret
from sluice.telemetry import access_log
from sluice.telemetry.access_log import AccessLog


class Writes(logging.Handler):
    """Every record handled, as the message it carried."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_lines_are_written_together_within_the_flush_interval() -> None:
    out = io.StringIO()
    log = AccessLog(logging.StreamHandler(out))
    for call in range(3):
        log.write({"call": call, "route": "r"})
    assert out.getvalue() == ""  # not one write per call
    await asyncio.sleep(access_log.FLUSH_INTERVAL * 1.5)
    assert lines(out) == [
        {"call": 0, "route": "r"},
        {"call": 1, "route": "r"},
        {"call": 2, "route": "r"},
    ]
    log.close()


async def test_close_writes_what_is_buffered() -> None:
    main = Writes()
    log = AccessLog(main)
    log.write({"call": 1})
    log.write({"call": 2})
    log.close()
    assert main.messages == ['{"call":1}\n{"call":2}']  # one write for both


async def test_a_full_buffer_is_written_at_once() -> None:
    main = Writes()
    log = AccessLog(main)
    for call in range(access_log.MAX_BUFFERED):
        log.write({"call": call})
    assert len(main.messages) == 1
    assert main.messages[0].count("\n") == access_log.MAX_BUFFERED - 1
    log.close()
    assert len(main.messages) == 1  # nothing left over


async def test_exports_get_one_record_per_call_at_once_in_the_context_given() -> None:
    main = Writes()
    exported: list[tuple[str, Context | None]] = []
    log = AccessLog(main, [lambda line, context: exported.append((line, context))])
    call = Context({"call": 1})
    log.write({"call": 1}, call)
    log.write({"call": 2})
    assert exported == [('{"call":1}', call), ('{"call":2}', None)]
    assert main.messages == []
    log.close()


async def test_a_secret_never_reaches_a_line() -> None:
    register_secret("sk-access-log-secret")
    out = io.StringIO()
    log = AccessLog(logging.StreamHandler(out))
    log.write({"route": "r", "note": "key sk-access-log-secret"})
    log.close()
    assert "sk-access-log-secret" not in out.getvalue()
    assert len(lines(out)) == 1
