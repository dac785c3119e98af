"""An attempt's span folds the answer's deltas into the GenAI output message
when content capture is on, and records nothing of it when it is off."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sluice.domain import (
    ChatRequest,
    Event,
    Finish,
    FinishReason,
    ImagePart,
    Message,
    ReasoningDelta,
    Role,
    Start,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallPart,
    ToolResultPart,
    Usage,
)
from sluice.providers.mock import MockAdapter, MockSettings
from sluice.routes import Target
from sluice.telemetry.call import CallTrace
from tests.telemetry import Recorded

TARGET = Target("mock", "mock-1", MockAdapter(MockSettings(provider="mock", name="mock-1")))
REQUEST = ChatRequest(
    "r",
    (
        Message(Role.SYSTEM, (TextPart("Use tools."),)),
        Message(
            Role.USER,
            (TextPart("Weather in Paris?"), ImagePart(data=b"\x89PNG", media_type="image/png")),
        ),
        Message(Role.ASSISTANT, (ToolCallPart("call_1", "weather", '{"city":"Paris"}'),)),
        Message(Role.TOOL, (ToolResultPart("call_1", "18C"),)),
    ),
)
ANSWER: Sequence[Event] = (
    Start("r-1", "mock-1"),
    ReasoningDelta("Think"),
    ReasoningDelta("ing."),
    TextDelta("It is "),
    TextDelta("18C."),
    ToolCallDelta(0, "call_2", "forecast", '{"city"'),
    ToolCallDelta(0, arguments=':"Paris"}'),
    ToolCallDelta(1, "call_3", "alerts", "{}"),
    Usage(10, 7, reasoning_tokens=2),
    Finish(FinishReason.TOOL_CALLS, "tool_calls"),
)


async def relay(recorded: Recorded) -> dict[str, object]:
    span = CallTrace(recorded.telemetry).attempt("r", TARGET, REQUEST, number=1)
    for event in ANSWER:
        span.received(event)
        span.awaiting()
    span.end()
    (finished,) = recorded.finished()
    return dict(finished.attributes or {})


async def test_captured_content_follows_the_genai_message_format() -> None:
    attributes = await relay(Recorded(capture_content=True))

    assert json.loads(str(attributes["gen_ai.system_instructions"])) == [
        {"type": "text", "content": "Use tools."}
    ]
    assert json.loads(str(attributes["gen_ai.input.messages"])) == [
        {
            "role": "user",
            "parts": [
                {"type": "text", "content": "Weather in Paris?"},
                {"type": "blob", "modality": "image", "mime_type": "image/png", "size": 4},
            ],
        },
        {
            "role": "assistant",
            "parts": [
                {
                    "type": "tool_call",
                    "id": "call_1",
                    "name": "weather",
                    "arguments": '{"city":"Paris"}',
                }
            ],
        },
        {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "id": "call_1", "response": "18C"}],
        },
    ]
    assert json.loads(str(attributes["gen_ai.output.messages"])) == [
        {
            "role": "assistant",
            "parts": [
                {"type": "reasoning", "content": "Thinking."},
                {"type": "text", "content": "It is 18C."},
                {
                    "type": "tool_call",
                    "id": "call_2",
                    "name": "forecast",
                    "arguments": '{"city":"Paris"}',
                },
                {"type": "tool_call", "id": "call_3", "name": "alerts", "arguments": "{}"},
            ],
            "finish_reason": "tool_calls",
        }
    ]
    assert attributes["gen_ai.usage.reasoning.output_tokens"] == 2


async def test_without_capture_no_content_is_recorded() -> None:
    attributes = await relay(Recorded())

    assert not any(name.endswith(("messages", "instructions")) for name in attributes)
    assert "Paris" not in repr(attributes)
    assert attributes["gen_ai.response.finish_reasons"] == ("tool_calls",)
