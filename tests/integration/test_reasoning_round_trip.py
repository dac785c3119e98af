"""Reasoning that survives a tool loop, through a running gateway, on
recorded two-turn conversations: turn 1 streams reasoning with its
signature and a tool call; the caller folds the stream into an assistant
message as the API documents, sends it back with the tool's result, and the
request the upstream receives in turn 2 carries the reasoning and the
signatures exactly as recorded. Then prompt-cache breakpoints, also checked
on the request the upstream receives."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import orjson

from sluice_client.v1 import gateway_pb2 as pb
from tests.gateway import route, running_gateway
from tests.recordings import recording
from tests.upstream import FakeUpstream, Reply, SeenRequest

KEY = "sk-round-trip"
SSE = {"content-type": "text/event-stream"}
QUESTION = "What's the weather in Florence, Italy?"
WEATHER = pb.Tool(name="weather", description="Get weather information for a location")


def assistant_message(responses: Sequence[pb.ChatResponse]) -> pb.Message:
    """The caller's side of the contract: a stream folded into the assistant
    message that goes back. Reasoning text accumulates until the signature
    that closes its block; a redacted block is a part of its own; tool call
    fragments add up by index, the first one carrying id, name and signature."""
    parts: list[dict[str, Any]] = []  # {kind: fields}, built into pb.Part at the end
    open_reasoning: dict[str, str] | None = None
    calls: dict[int, dict[str, str]] = {}
    for response in responses:
        delta = response.delta
        kind = delta.WhichOneof("content") if response.HasField("delta") else None
        if kind == "reasoning":
            if open_reasoning is None:
                open_reasoning = {"text": ""}
                parts.append({"reasoning": open_reasoning})
            open_reasoning["text"] += delta.reasoning
        elif kind == "reasoning_signature":
            if open_reasoning is None:
                parts.append({"reasoning": {"signature": delta.reasoning_signature}})
            else:
                open_reasoning["signature"] = delta.reasoning_signature
            open_reasoning = None
        elif kind == "reasoning_redacted":
            parts.append({"reasoning": {"redacted_data": delta.reasoning_redacted}})
        elif kind == "text":
            parts.append({"text": delta.text})
        elif kind == "tool_call":
            fragment = delta.tool_call
            if fragment.index not in calls:
                calls[fragment.index] = {
                    "id": fragment.id,
                    "name": fragment.name,
                    "signature": fragment.signature,
                    "arguments": "",
                }
                parts.append({"tool_call": calls[fragment.index]})
            calls[fragment.index]["arguments"] += fragment.arguments
    return pb.Message(
        role=pb.ROLE_ASSISTANT,
        parts=[
            pb.Part(text=part["text"])
            if "text" in part
            else pb.Part(reasoning=pb.Reasoning(**part["reasoning"]))
            if "reasoning" in part
            else pb.Part(tool_call=pb.ToolCall(**part["tool_call"]))
            for part in parts
        ],
    )


def sse_payloads(body: bytes) -> list[dict[str, Any]]:
    """The JSON `data` of every SSE event of a recording (LF or CRLF framed)."""
    return [
        orjson.loads(line[len(b"data:") :])
        for line in re.split(rb"\r?\n", body)
        if line.startswith(b"data:")
    ]


async def two_turns(
    provider: str, first: str, second: str
) -> tuple[list[pb.ChatResponse], list[pb.ChatResponse], pb.Message, list[SeenRequest]]:
    """Turn 1 on recording `first`, turn 2 (the tool's result sent back) on `second`."""
    bodies = iter([recording(first), recording(second)])

    def script(_request: SeenRequest) -> Reply:
        return Reply(status=200, headers=SSE, chunks=[next(bodies)])

    async with FakeUpstream(script) as upstream:
        model = {"provider": provider, "name": "test-model", "api_key": KEY}
        model["api_base"] = upstream.base_url
        config = {"routes": [route("r", **model)]}
        async with running_gateway(config) as gateway:
            question = pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text=QUESTION)])
            request = pb.ChatRequest(route="r", messages=[question], tools=[WEATHER])
            request.generation.reasoning_budget_tokens = 4000
            turn1 = [r async for r in gateway.stub.Chat(request, timeout=10)]
            assistant = assistant_message(turn1)
            (call,) = [p.tool_call for p in assistant.parts if p.HasField("tool_call")]
            result = pb.ToolResult(tool_call_id=call.id, content="40 C")
            request.messages.extend(
                [assistant, pb.Message(role=pb.ROLE_TOOL, parts=[pb.Part(tool_result=result)])]
            )
            turn2 = [r async for r in gateway.stub.Chat(request, timeout=10)]
        return turn1, turn2, assistant, upstream.requests


# The answer after the tool result, read off the recording.
TURN2_TEXT = "".join(
    event["delta"]["text"]
    for event in sse_payloads(recording("anthropic_messages_thinking_turn2_stream.txt"))
    if event["type"] == "content_block_delta" and event["delta"]["type"] == "text_delta"
)


def text_of(responses: Sequence[pb.ChatResponse]) -> str:
    return "".join(r.delta.text for r in responses if r.HasField("delta"))


async def test_anthropic_thinking_and_its_signature_come_back_before_the_tool_use() -> None:
    turn1_events = sse_payloads(recording("anthropic_messages_stream.txt"))
    deltas = [e["delta"] for e in turn1_events if e["type"] == "content_block_delta"]
    thinking = "".join(d["thinking"] for d in deltas if d["type"] == "thinking_delta")
    (signature,) = [d["signature"] for d in deltas if d["type"] == "signature_delta"]

    turn1, turn2, assistant, requests = await two_turns(
        "anthropic",
        "anthropic_messages_stream.txt",
        "anthropic_messages_thinking_turn2_stream.txt",
    )
    assert [r.delta.reasoning_signature for r in turn1 if r.HasField("delta")].count(signature) == 1
    assert assistant.parts[0].reasoning == pb.Reasoning(text=thinking, signature=signature)
    # Turn 2's request: the recorded conversation, the thinking block first and intact.
    first, second = (request.json() for request in requests)
    assert first["thinking"] == {"type": "enabled", "budget_tokens": 4000}
    assert second["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": QUESTION}]},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": thinking, "signature": signature},
                {
                    "type": "tool_use",
                    "id": "toolu_01Js4AMfx5qpTLhwTusnvT68",
                    "name": "weather",
                    "input": {"location": "Florence, Italy"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01Js4AMfx5qpTLhwTusnvT68",
                    "content": "40 C",
                }
            ],
        },
    ]
    assert text_of(turn2) == TURN2_TEXT
    assert turn2[-1].finish.reason == pb.FINISH_REASON_STOP


async def test_anthropic_redacted_thinking_goes_back_as_its_opaque_data() -> None:
    starts = [
        e["content_block"]
        for e in sse_payloads(recording("anthropic_messages_redacted_thinking_stream.txt"))
        if e["type"] == "content_block_start"
    ]
    redacted = [block["data"] for block in starts if block["type"] == "redacted_thinking"]
    assert len(redacted) == 2

    turn1, _, _, requests = await _redacted_turns()
    assert [r.delta.reasoning_redacted for r in turn1 if r.HasField("delta")][:2] == redacted
    sent = requests[1].json()["messages"][1]["content"]
    assert sent[:2] == [{"type": "redacted_thinking", "data": data} for data in redacted]


async def _redacted_turns() -> tuple[
    list[pb.ChatResponse], list[pb.ChatResponse], pb.Message, list[SeenRequest]
]:
    """Turn 1 answers with redacted thinking and text; the caller sends it back
    with a follow-up question."""
    bodies = iter(
        [
            recording("anthropic_messages_redacted_thinking_stream.txt"),
            recording("anthropic_messages_thinking_turn2_stream.txt"),
        ]
    )

    def script(_request: SeenRequest) -> Reply:
        return Reply(status=200, headers=SSE, chunks=[next(bodies)])

    async with FakeUpstream(script) as upstream:
        model = {"provider": "anthropic", "name": "test-model", "api_key": KEY}
        config = {"routes": [route("r", **model, api_base=upstream.base_url)]}
        async with running_gateway(config) as gateway:
            question = pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="hi")])
            request = pb.ChatRequest(route="r", messages=[question])
            turn1 = [r async for r in gateway.stub.Chat(request, timeout=10)]
            assistant = assistant_message(turn1)
            follow_up = pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="and now?")])
            request.messages.extend([assistant, follow_up])
            turn2 = [r async for r in gateway.stub.Chat(request, timeout=10)]
        return turn1, turn2, assistant, upstream.requests


async def test_gemini_function_call_goes_back_with_its_thought_signature() -> None:
    chunks = sse_payloads(recording("gemini_stream_generate_content.txt"))
    parts = [part for chunk in chunks for part in chunk["candidates"][0]["content"]["parts"]]
    thought = "".join(part["text"] for part in parts if part.get("thought"))
    (signed,) = [part for part in parts if "functionCall" in part]

    turn1, turn2, _, requests = await two_turns(
        "gemini",
        "gemini_stream_generate_content.txt",
        "gemini_stream_generate_content_turn2.txt",
    )
    calls = [r.delta.tool_call for r in turn1 if r.HasField("delta") and r.delta.tool_call.name]
    assert [call.signature for call in calls] == [signed["thoughtSignature"]]
    second = requests[1].json()
    assert second["contents"][1] == {
        "role": "model",
        "parts": [
            {"text": thought, "thought": True},
            # The recorded signature, not the skip_thought_signature_validator stand-in.
            {
                "functionCall": {"name": "weather", "args": {"location": "Florence, Italy"}},
                "thoughtSignature": signed["thoughtSignature"],
            },
        ],
    }
    assert second["contents"][2] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "weather", "response": {"output": "40 C"}}}],
    }
    assert text_of(turn2) == "The weather in Florence, Italy is 40 C."
    assert turn2[-1].finish.reason == pb.FINISH_REASON_STOP


def cached_request() -> pb.ChatRequest:
    """A system prompt, a tool and a first user message marked as cache breakpoints."""
    system = pb.Message(
        role=pb.ROLE_SYSTEM,
        parts=[pb.Part(text="You are a helpful assistant", cache_breakpoint=True)],
    )
    question = pb.Message(
        role=pb.ROLE_USER,
        parts=[pb.Part(text=QUESTION)],
        cache_breakpoint=True,
        cache_ttl=pb.CACHE_TTL_ONE_HOUR,
    )
    tool = pb.Tool()
    tool.CopyFrom(WEATHER)
    tool.cache_breakpoint = True
    return pb.ChatRequest(route="r", messages=[system, question], tools=[tool])


async def cached_call(
    provider: str, fixture: str, settings: dict[str, Any], headers: dict[str, str]
) -> tuple[list[pb.ChatResponse], SeenRequest]:
    reply = Reply(status=200, headers=headers, chunks=[recording(fixture)])
    async with FakeUpstream(reply) as upstream:
        config = {"routes": [route("r", provider=provider, name="test-model", **settings,
                                   api_base=upstream.base_url + ("/v1" if provider == "openai" else ""))]}  # fmt: skip
        async with running_gateway(config) as gateway:
            responses = [r async for r in gateway.stub.Chat(cached_request(), timeout=10)]
        (seen,) = upstream.requests
    return responses, seen


async def test_anthropic_cache_breakpoints_become_cache_control() -> None:
    responses, seen = await cached_call(
        "anthropic", "anthropic_messages_stream.txt", {"api_key": KEY}, SSE
    )
    body = seen.json()
    assert body["system"] == [
        {"type": "text", "text": "You are a helpful assistant",
         "cache_control": {"type": "ephemeral"}},
    ]  # fmt: skip
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": QUESTION,
                 "cache_control": {"type": "ephemeral", "ttl": "1h"}},
            ],
        }
    ]  # fmt: skip
    assert body["tools"][0]["cache_control"] == {"type": "ephemeral"}
    usage = responses[-2].usage
    assert (usage.cached_input_tokens, usage.cache_write_input_tokens) == (0, 0)


async def test_bedrock_cache_breakpoints_become_cache_points() -> None:
    settings = {
        "region": "us-east-1",
        "aws_access_key_id": "AKIDROUNDTRIP",
        "aws_secret_access_key": "round-trip-secret",
    }
    _, seen = await cached_call(
        "bedrock",
        "bedrock_converse_stream_text.bin",
        settings,
        {"content-type": "application/vnd.amazon.eventstream"},
    )
    body = seen.json()
    assert body["system"] == [
        {"text": "You are a helpful assistant"},
        {"cachePoint": {"type": "default"}},
    ]
    assert body["messages"] == [
        {
            "role": "user",
            "content": [{"text": QUESTION}, {"cachePoint": {"type": "default", "ttl": "1h"}}],
        }
    ]
    assert body["toolConfig"]["tools"][1] == {"cachePoint": {"type": "default"}}


async def test_openai_caches_by_itself_and_takes_breakpoints_without_error() -> None:
    responses, seen = await cached_call("openai", "openai_chat_stream.txt", {"api_key": KEY}, SSE)
    assert responses[-1].finish.reason == pb.FINISH_REASON_STOP
    assert "cache_control" not in json.dumps(seen.json())
