"""How each provider sends reasoning parts, call signatures and prompt-cache
breakpoints back upstream (request building, no network), and that
coalescing never merges a signature into text."""

from __future__ import annotations

from typing import Any

from sluice.coalesce import coalesce
from sluice.domain import (
    CacheTtl,
    ChatRequest,
    Event,
    Message,
    ReasoningDelta,
    ReasoningPart,
    ReasoningSignature,
    Role,
    TextPart,
    Tool,
    ToolCallDelta,
    ToolCallPart,
    ToolResultPart,
)
from sluice.providers.anthropic import AnthropicSettings
from sluice.providers.base import HttpAdapter
from sluice.providers.bedrock import BedrockSettings
from sluice.providers.gemini import GeminiSettings
from sluice.providers.http import HttpClientPool
from sluice.providers.openai import OpenAISettings

CALL = ToolCallPart("c1", "weather", '{"city": "Rome"}')
RESULT = Message(Role.TOOL, (ToolResultPart("c1", "40 C"),))
QUESTION = Message(Role.USER, (TextPart("weather?"),))


def body(settings: Any, *assistant_parts: Any, **fields: Any) -> dict[str, Any]:
    adapter = settings.create_adapter(HttpClientPool())
    assert isinstance(adapter, HttpAdapter)
    messages = (QUESTION, Message(Role.ASSISTANT, assistant_parts), RESULT)
    request = ChatRequest("r", fields.pop("messages", messages), **fields)
    built: dict[str, Any] = dict(adapter.build(request).json)
    return built


ANTHROPIC = AnthropicSettings(provider="anthropic", name="claude-sonnet-4")
GEMINI = GeminiSettings(provider="gemini", name="gemini-3-pro-preview")
BEDROCK = BedrockSettings(
    provider="bedrock",
    name="anthropic.claude-sonnet-4",
    region="us-east-1",
    aws_access_key_id="AKID",
    aws_secret_access_key="secret",
)
OPENAI = OpenAISettings(provider="openai", name="gpt-4o", api_key="k")


def test_anthropic_replays_signed_and_redacted_thinking_and_drops_unsigned() -> None:
    sent = body(
        ANTHROPIC,
        ReasoningPart(text="from another provider"),
        ReasoningPart(text="Let me look.", signature="c2ln"),
        ReasoningPart(redacted_data="b3BhcXVl"),
        CALL,
    )
    assert sent["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "Let me look.", "signature": "c2ln"},
        {"type": "redacted_thinking", "data": "b3BhcXVl"},
        {"type": "tool_use", "id": "c1", "name": "weather", "input": {"city": "Rome"}},
    ]


def test_bedrock_replays_reasoning_content() -> None:
    sent = body(
        BEDROCK,
        ReasoningPart(text="unsigned"),
        ReasoningPart(text="Let me look.", signature="c2ln"),
        ReasoningPart(redacted_data="b3BhcXVl"),
        CALL,
    )
    assert sent["messages"][1]["content"] == [
        {"reasoningContent": {"reasoningText": {"text": "Let me look.", "signature": "c2ln"}}},
        {"reasoningContent": {"redactedContent": "b3BhcXVl"}},
        {"toolUse": {"toolUseId": "c1", "name": "weather", "input": {"city": "Rome"}}},
    ]


def test_gemini_sends_each_signature_where_it_came_from() -> None:
    sent = body(
        GEMINI,
        ReasoningPart(text="Thinking.", signature="dGhvdWdodA=="),
        TextPart("Checking."),
        # A text part's signature streams after its text: it goes back onto that part.
        ReasoningPart(signature="dGV4dA=="),
        ToolCallPart("c1", "weather", "{}", signature="Y2FsbA=="),
        # Gemini signs the first of parallel calls only.
        ToolCallPart("c2", "weather", "{}"),
        ReasoningPart(redacted_data="b3BhcXVl"),  # not Gemini's: left out
    )
    assert sent["contents"][1]["parts"] == [
        {"text": "Thinking.", "thought": True, "thoughtSignature": "dGhvdWdodA=="},
        {"text": "Checking.", "thoughtSignature": "dGV4dA=="},
        {
            "functionCall": {"name": "weather", "args": {}, "id": "c1"},
            "thoughtSignature": "Y2FsbA==",
        },
        {"functionCall": {"name": "weather", "args": {}, "id": "c2"}},
    ]


def test_gemini_vouches_for_a_call_turn_with_no_signature_at_all() -> None:
    two_calls = (CALL, ToolCallPart("c2", "weather", "{}"))
    parts = body(GEMINI, *two_calls)["contents"][1]["parts"]
    assert [part["thoughtSignature"] for part in parts] == ["skip_thought_signature_validator"] * 2


def test_openai_skips_reasoning_parts() -> None:
    sent = body(OPENAI, ReasoningPart(text="Let me look.", signature="c2ln"), CALL)
    assert sent["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "Rome"}'},
            }
        ],
    }


def cached_messages() -> tuple[Message, ...]:
    system = Message(Role.SYSTEM, (TextPart("rules", cache=CacheTtl.ONE_HOUR),))
    return (system, Message(Role.USER, (TextPart("hi", cache=CacheTtl.DEFAULT),)))


CACHED_TOOL = Tool("weather", "", {"type": "object"}, cache=CacheTtl.FIVE_MINUTES)


def test_anthropic_cache_control_with_ttl() -> None:
    sent = body(ANTHROPIC, messages=cached_messages(), tools=(CACHED_TOOL,))
    assert sent["system"] == [
        {"type": "text", "text": "rules", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    ]
    assert sent["messages"][0]["content"] == [
        {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}
    ]
    assert sent["tools"][0]["cache_control"] == {"type": "ephemeral", "ttl": "5m"}


def test_bedrock_cache_points_follow_their_blocks() -> None:
    sent = body(BEDROCK, messages=cached_messages(), tools=(CACHED_TOOL,))
    assert sent["system"] == [{"text": "rules"}, {"cachePoint": {"type": "default", "ttl": "1h"}}]
    assert sent["messages"][0]["content"] == [{"text": "hi"}, {"cachePoint": {"type": "default"}}]
    assert sent["toolConfig"]["tools"][1] == {"cachePoint": {"type": "default", "ttl": "5m"}}


def test_automatic_cachers_take_breakpoints_without_a_field() -> None:
    for settings in (OPENAI, GEMINI):
        sent = body(settings, messages=cached_messages(), tools=(CACHED_TOOL,))
        assert "cache" not in str(sent).lower(), settings.provider


def test_coalescing_keeps_signatures_apart() -> None:
    events: list[Event] = [
        ReasoningDelta("a"),
        ReasoningDelta("b"),
        ReasoningSignature("s1"),
        ReasoningSignature("s2"),
        ToolCallDelta(0, "c1", "weather", "{", signature="Y2FsbA=="),
        ToolCallDelta(0, arguments="}"),
    ]
    assert coalesce(events) == [
        ReasoningDelta("ab"),
        ReasoningSignature("s1"),
        ReasoningSignature("s2"),
        ToolCallDelta(0, "c1", "weather", "{}", signature="Y2FsbA=="),
    ]
