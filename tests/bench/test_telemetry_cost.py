"""The telemetry cost tool makes a whole call's telemetry each time: the four
spans of a streamed chat reach a real OTLP receiver, one trace a call."""

from __future__ import annotations

import asyncio

from bench.telemetry_cost import SPANS_PER_CALL, _measure
from tests.otlp_receiver import OtlpGrpcReceiver


async def test_each_measured_call_exports_the_four_spans_of_a_streamed_chat() -> None:
    async with OtlpGrpcReceiver() as receiver:
        measured = await asyncio.to_thread(_measure, "traces+metrics", 10, receiver.endpoint, 5)
        spans = await receiver.wait_for_spans(lambda got: len(got) >= SPANS_PER_CALL * 15)
    assert measured["loop_us"] > 0
    calls = {span.trace_id for span in spans}
    assert len(calls) == 15  # the warmup's 5 and the 10 measured
    assert len(spans) == SPANS_PER_CALL * 15
    assert sorted({span.name for span in spans}) == [
        "POST",
        "chat gpt-4o-mini",
        "sluice.route",
        "sluice.v1.GatewayService/Chat",
    ]
