"""Proto requests -> domain requests: every field, every default, and every
INVALID_ARGUMENT with the field it names."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf import struct_pb2

from sluice import domain
from sluice.api.requests import chat_request, completion_request, embedding_request
from sluice.errors import GatewayError, Status
from sluice_client.v1 import gateway_pb2 as pb
from tests.unit.api.valid_requests import chat, complete, embed, text, user

WEATHER = pb.Tool(name="get_weather")


def schema(value: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def assert_invalid(decode: Callable[[], object], field: str, message: str) -> None:
    with pytest.raises(GatewayError) as caught:
        decode()
    error = caught.value
    assert (error.status, error.reason, error.field, error.message) == (
        Status.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        field,
        message,
    )


# --- chat ----------------------------------------------------------------------


def test_a_minimal_chat_request_takes_every_default() -> None:
    assert chat_request(chat()) == domain.ChatRequest(
        route="chat",
        messages=(domain.Message(domain.Role.USER, (domain.TextPart("hi"),)),),
        generation=domain.GenerationParams(),
        tools=(),
        tool_choice=None,
        labels={},
        cache=domain.CacheControl(),
    )


def test_every_chat_field_is_carried() -> None:
    request = pb.ChatRequest(
        route="support",
        messages=[
            pb.Message(role=pb.ROLE_SYSTEM, parts=[text("Be brief.")]),
            pb.Message(role=pb.ROLE_USER, parts=[text("Weather?"), text(" In Paris.")], name="ann"),
            pb.Message(
                role=pb.ROLE_ASSISTANT,
                parts=[pb.Part(tool_call=pb.ToolCall(id="c1", name="get_weather", arguments="{}"))],
            ),
            pb.Message(
                role=pb.ROLE_TOOL,
                parts=[pb.Part(tool_result=pb.ToolResult(tool_call_id="c1", content="sunny"))],
            ),
        ],
        generation=pb.GenerationConfig(max_tokens=64, temperature=0.5, stop=["\n"]),
        tools=[
            pb.Tool(
                name="get_weather",
                description="Weather by city",
                parameters=schema({"type": "object", "required": ["city"]}),
            )
        ],
        tool_choice=pb.ToolChoice(tool_name="get_weather"),
        labels={"team": "search", "feature": "faq"},
        cache=pb.CacheControl(bypass=True, ttl=30),
    )
    assert chat_request(request) == domain.ChatRequest(
        route="support",
        messages=(
            domain.Message(domain.Role.SYSTEM, (domain.TextPart("Be brief."),)),
            domain.Message(
                domain.Role.USER,
                (domain.TextPart("Weather?"), domain.TextPart(" In Paris.")),
                name="ann",
            ),
            domain.Message(
                domain.Role.ASSISTANT,
                (domain.ToolCallPart(id="c1", name="get_weather", arguments="{}"),),
            ),
            domain.Message(
                domain.Role.TOOL, (domain.ToolResultPart(tool_call_id="c1", content="sunny"),)
            ),
        ),
        generation=domain.GenerationParams(max_tokens=64, temperature=0.5, stop=("\n",)),
        tools=(
            domain.Tool(
                name="get_weather",
                description="Weather by city",
                parameters={"type": "object", "required": ["city"]},
            ),
        ),
        tool_choice=domain.ToolChoice(tool_name="get_weather"),
        labels={"team": "search", "feature": "faq"},
        cache=domain.CacheControl(bypass=True, ttl=30),
    )


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        (pb.ROLE_SYSTEM, domain.Role.SYSTEM),
        (pb.ROLE_USER, domain.Role.USER),
        (pb.ROLE_ASSISTANT, domain.Role.ASSISTANT),
        (pb.ROLE_TOOL, domain.Role.TOOL),
    ],
    ids=["system", "user", "assistant", "tool"],
)
def test_each_role_maps_to_its_domain_role(role: pb.Role.ValueType, expected: domain.Role) -> None:
    request = chat(messages=[pb.Message(role=role, parts=[text("x")])])
    assert chat_request(request).messages[0].role is expected


@pytest.mark.parametrize(
    ("role", "part", "expected"),
    [
        (pb.ROLE_USER, text("hello"), domain.TextPart("hello")),
        (pb.ROLE_USER, text(""), domain.TextPart("")),
        (pb.ROLE_TOOL, text("plain"), domain.TextPart("plain")),
        (
            pb.ROLE_USER,
            pb.Part(image=pb.Image(data=b"\x89PNG", media_type="image/png")),
            domain.ImagePart(data=b"\x89PNG", media_type="image/png"),
        ),
        (
            pb.ROLE_USER,
            pb.Part(image=pb.Image(url="https://example.com/cat.jpg")),
            domain.ImagePart(url="https://example.com/cat.jpg"),
        ),
        (
            pb.ROLE_USER,
            pb.Part(image=pb.Image(url="https://example.com/cat", media_type="image/jpeg")),
            domain.ImagePart(url="https://example.com/cat", media_type="image/jpeg"),
        ),
        (
            pb.ROLE_ASSISTANT,
            pb.Part(tool_call=pb.ToolCall(id="c1", name="f", arguments='{"city": "Paris"}')),
            domain.ToolCallPart(id="c1", name="f", arguments='{"city": "Paris"}'),
        ),
        (
            pb.ROLE_ASSISTANT,
            pb.Part(tool_call=pb.ToolCall(id="c1", name="f")),
            domain.ToolCallPart(id="c1", name="f", arguments="{}"),
        ),
        (
            pb.ROLE_TOOL,
            pb.Part(tool_result=pb.ToolResult(tool_call_id="c1", content="boom", is_error=True)),
            domain.ToolResultPart(tool_call_id="c1", content="boom", is_error=True),
        ),
        (
            pb.ROLE_TOOL,
            pb.Part(tool_result=pb.ToolResult(tool_call_id="c1")),
            domain.ToolResultPart(tool_call_id="c1", content="", is_error=False),
        ),
    ],
    ids=[
        "text",
        "empty-text",
        "text-in-a-tool-message",
        "inline-image",
        "image-by-url",
        "image-by-url-with-media-type",
        "tool-call",
        "tool-call-without-arguments-is-an-empty-object",
        "tool-result-error",
        "tool-result-defaults",
    ],
)
def test_each_part_maps_to_its_domain_part(
    role: pb.Role.ValueType, part: pb.Part, expected: domain.Part
) -> None:
    request = chat(messages=[pb.Message(role=role, parts=[part])])
    assert chat_request(request).messages[0].parts == (expected,)


@pytest.mark.parametrize(
    ("parameters", "expected_json"),
    [
        (None, '{"properties": {}, "type": "object"}'),
        ({}, '{"properties": {}, "type": "object"}'),
        (
            {"type": "array", "minItems": 1, "items": {"maximum": 10}},
            '{"items": {"maximum": 10}, "minItems": 1, "type": "array"}',
        ),
        ({"multipleOf": 0.5, "minimum": -3}, '{"minimum": -3, "multipleOf": 0.5}'),
        ({"enum": [1, 2.5, "x", [3.0]]}, '{"enum": [1, 2.5, "x", [3]]}'),
        (
            {"required": ["a"], "additionalProperties": False, "default": None},
            '{"additionalProperties": false, "default": null, "required": ["a"]}',
        ),
    ],
    ids=[
        "absent-means-no-arguments",
        "empty-means-no-arguments",
        "integral-numbers-become-ints",
        "fractions-stay-floats",
        "numbers-in-lists",
        "other-values-pass-through",
    ],
)
def test_tool_parameters_are_json_schema(
    parameters: dict[str, Any] | None, expected_json: str
) -> None:
    tool = pb.Tool(name="f", description="does f")
    if parameters is not None:
        tool.parameters.CopyFrom(schema(parameters))
    [decoded] = chat_request(chat(tools=[tool])).tools
    assert (decoded.name, decoded.description) == ("f", "does f")
    # JSON text tells 1 from 1.0, which == does not.
    assert json.dumps(decoded.parameters, sort_keys=True) == expected_json


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        (None, None),
        (pb.ToolChoice(), None),
        (pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_AUTO), domain.ToolChoice(domain.ToolChoiceMode.AUTO)),
        (pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_NONE), domain.ToolChoice(domain.ToolChoiceMode.NONE)),
        (pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED), domain.ToolChoice(domain.ToolChoiceMode.REQUIRED)),
        (pb.ToolChoice(tool_name="get_weather"), domain.ToolChoice(tool_name="get_weather")),
    ],
    ids=["unset", "set-but-empty", "auto", "none", "required", "named-tool"],
)  # fmt: skip
def test_tool_choice(tool_choice: pb.ToolChoice | None, expected: domain.ToolChoice | None) -> None:
    request = chat(tools=[WEATHER])
    if tool_choice is not None:
        request.tool_choice.CopyFrom(tool_choice)
    assert chat_request(request).tool_choice == expected


# --- generation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, domain.GenerationParams()),
        ({"max_tokens": 1}, domain.GenerationParams(max_tokens=1)),
        ({"temperature": 0.0}, domain.GenerationParams(temperature=0.0)),
        ({"temperature": 2.0}, domain.GenerationParams(temperature=2.0)),
        ({"top_p": 0.0}, domain.GenerationParams(top_p=0.0)),
        ({"top_p": 1.0}, domain.GenerationParams(top_p=1.0)),
        ({"top_k": 1}, domain.GenerationParams(top_k=1)),
        ({"stop": ["\n", "END"]}, domain.GenerationParams(stop=("\n", "END"))),
        ({"presence_penalty": -2.0}, domain.GenerationParams(presence_penalty=-2.0)),
        ({"presence_penalty": 2.0}, domain.GenerationParams(presence_penalty=2.0)),
        ({"frequency_penalty": -2.0}, domain.GenerationParams(frequency_penalty=-2.0)),
        ({"frequency_penalty": 0.0}, domain.GenerationParams(frequency_penalty=0.0)),
        ({"seed": 0}, domain.GenerationParams(seed=0)),
        ({"seed": -(2**63)}, domain.GenerationParams(seed=-(2**63))),
        ({"reasoning_budget_tokens": 1}, domain.GenerationParams(reasoning_budget_tokens=1)),
        (
            {"max_tokens": 256, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "seed": 7},
            domain.GenerationParams(max_tokens=256, temperature=0.7, top_p=0.9, top_k=40, seed=7),
        ),
    ],
    ids=[
        "unset-is-all-none",
        "max_tokens-lowest",
        "temperature-zero-is-set-not-none",
        "temperature-highest",
        "top_p-zero-is-set-not-none",
        "top_p-highest",
        "top_k-lowest",
        "stop",
        "presence_penalty-lowest",
        "presence_penalty-highest",
        "frequency_penalty-lowest",
        "frequency_penalty-zero-is-set-not-none",
        "seed-zero-is-set-not-none",
        "seed-any-int64",
        "reasoning_budget_tokens-lowest",
        "several",
    ],
)
def test_generation_carries_what_is_set_and_only_that(
    config: dict[str, Any], expected: domain.GenerationParams
) -> None:
    generation = pb.GenerationConfig(**config)
    assert chat_request(chat(generation=generation)).generation == expected
    assert completion_request(complete(generation=generation)).generation == expected


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        ({"max_tokens": 0}, "generation.max_tokens", "max_tokens must be at least 1, got 0"),
        ({"max_tokens": -5}, "generation.max_tokens", "max_tokens must be at least 1, got -5"),
        ({"temperature": -0.1}, "generation.temperature", "temperature must be between 0.0 and 2.0, got -0.1"),
        ({"temperature": 2.5}, "generation.temperature", "temperature must be between 0.0 and 2.0, got 2.5"),
        ({"top_p": -0.5}, "generation.top_p", "top_p must be between 0.0 and 1.0, got -0.5"),
        ({"top_p": 1.5}, "generation.top_p", "top_p must be between 0.0 and 1.0, got 1.5"),
        ({"top_k": 0}, "generation.top_k", "top_k must be at least 1, got 0"),
        ({"presence_penalty": -2.5}, "generation.presence_penalty", "presence_penalty must be between -2.0 and 2.0, got -2.5"),
        ({"presence_penalty": 2.5}, "generation.presence_penalty", "presence_penalty must be between -2.0 and 2.0, got 2.5"),
        ({"frequency_penalty": -3.0}, "generation.frequency_penalty", "frequency_penalty must be between -2.0 and 2.0, got -3.0"),
        ({"frequency_penalty": 3.0}, "generation.frequency_penalty", "frequency_penalty must be between -2.0 and 2.0, got 3.0"),
        ({"reasoning_budget_tokens": 0}, "generation.reasoning_budget_tokens", "reasoning_budget_tokens must be at least 1, got 0"),
    ],
    ids=[
        "max_tokens-zero",
        "max_tokens-negative",
        "temperature-below",
        "temperature-above",
        "top_p-below",
        "top_p-above",
        "top_k-zero",
        "presence_penalty-below",
        "presence_penalty-above",
        "frequency_penalty-below",
        "frequency_penalty-above",
        "reasoning_budget_tokens-zero",
    ],
)  # fmt: skip
def test_generation_out_of_range_names_its_field(
    config: dict[str, Any], field: str, message: str
) -> None:
    generation = pb.GenerationConfig(**config)
    assert_invalid(lambda: chat_request(chat(generation=generation)), field, message)
    assert_invalid(lambda: completion_request(complete(generation=generation)), field, message)


# --- cache control ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("control", "expected"),
    [
        (pb.CacheControl(), domain.CacheControl()),
        (pb.CacheControl(bypass=True), domain.CacheControl(bypass=True)),
        (pb.CacheControl(no_store=True), domain.CacheControl(no_store=True)),
        (pb.CacheControl(ttl=1), domain.CacheControl(ttl=1)),
        (
            pb.CacheControl(bypass=True, no_store=True, ttl=3600),
            domain.CacheControl(bypass=True, no_store=True, ttl=3600),
        ),
    ],
    ids=["unset", "bypass", "no_store", "ttl", "all"],
)
def test_cache_control(control: pb.CacheControl, expected: domain.CacheControl) -> None:
    assert chat_request(chat(cache=control)).cache == expected
    assert completion_request(complete(cache=control)).cache == expected


@pytest.mark.parametrize("ttl", [0, -1], ids=["zero", "negative"])
def test_a_cache_ttl_must_be_positive(ttl: int) -> None:
    control = pb.CacheControl(ttl=ttl)
    assert_invalid(lambda: chat_request(chat(cache=control)), "cache.ttl", "ttl must be positive")
    assert_invalid(
        lambda: completion_request(complete(cache=control)), "cache.ttl", "ttl must be positive"
    )


# --- invalid chat requests -----------------------------------------------------------


def message(role: pb.Role.ValueType, *parts: pb.Part) -> pb.Message:
    return pb.Message(role=role, parts=parts)


IMAGE = pb.Part(image=pb.Image(url="https://example.com/cat.jpg"))
TOOL_CALL = pb.Part(tool_call=pb.ToolCall(id="c1", name="f", arguments="{}"))
TOOL_RESULT = pb.Part(tool_result=pb.ToolResult(tool_call_id="c1", content="ok"))


@pytest.mark.parametrize(
    ("request_", "field", "message"),
    [
        (chat(route=""), "route", "route is required"),
        (chat(messages=[]), "messages", "at least one message is required"),
        (chat(messages=[user(), pb.Message(parts=[text("x")])]), "messages[1].role", "role must be set"),
        (chat(messages=[user(), pb.Message(role=pb.ROLE_USER)]), "messages[1].parts", "a message needs at least one part"),
        (chat(messages=[user(text("a"), pb.Part())]), "messages[0].parts[1]", "part has no content"),
        (chat(messages=[message(pb.ROLE_SYSTEM, IMAGE)]), "messages[0].parts[0].image", "image parts are not allowed in system messages"),
        (chat(messages=[message(pb.ROLE_ASSISTANT, IMAGE)]), "messages[0].parts[0].image", "image parts are not allowed in assistant messages"),
        (chat(messages=[message(pb.ROLE_TOOL, IMAGE)]), "messages[0].parts[0].image", "image parts are not allowed in tool messages"),
        (chat(messages=[message(pb.ROLE_SYSTEM, TOOL_CALL)]), "messages[0].parts[0].tool_call", "tool_call parts are not allowed in system messages"),
        (chat(messages=[message(pb.ROLE_USER, TOOL_CALL)]), "messages[0].parts[0].tool_call", "tool_call parts are not allowed in user messages"),
        (chat(messages=[message(pb.ROLE_TOOL, TOOL_CALL)]), "messages[0].parts[0].tool_call", "tool_call parts are not allowed in tool messages"),
        (chat(messages=[message(pb.ROLE_SYSTEM, TOOL_RESULT)]), "messages[0].parts[0].tool_result", "tool_result parts are not allowed in system messages"),
        (chat(messages=[message(pb.ROLE_USER, TOOL_RESULT)]), "messages[0].parts[0].tool_result", "tool_result parts are not allowed in user messages"),
        (chat(messages=[message(pb.ROLE_ASSISTANT, TOOL_RESULT)]), "messages[0].parts[0].tool_result", "tool_result parts are not allowed in assistant messages"),
        (chat(messages=[user(pb.Part(image=pb.Image(media_type="image/png")))]), "messages[0].parts[0].image", "image needs data or url"),
        (chat(messages=[user(pb.Part(image=pb.Image(data=b"\x89PNG")))]), "messages[0].parts[0].image.media_type", "inline image needs media_type"),
        (chat(messages=[message(pb.ROLE_ASSISTANT, pb.Part(tool_call=pb.ToolCall(name="f")))]), "messages[0].parts[0].tool_call", "tool call needs id and name"),
        (chat(messages=[message(pb.ROLE_ASSISTANT, pb.Part(tool_call=pb.ToolCall(id="c1")))]), "messages[0].parts[0].tool_call", "tool call needs id and name"),
        (chat(messages=[message(pb.ROLE_ASSISTANT, pb.Part(tool_call=pb.ToolCall(id="c1", name="f", arguments="{city")))]), "messages[0].parts[0].tool_call.arguments", "arguments must be a JSON object"),
        (chat(messages=[message(pb.ROLE_ASSISTANT, pb.Part(tool_call=pb.ToolCall(id="c1", name="f", arguments="[1]")))]), "messages[0].parts[0].tool_call.arguments", "arguments must be a JSON object"),
        (chat(messages=[message(pb.ROLE_ASSISTANT, pb.Part(tool_call=pb.ToolCall(id="c1", name="f", arguments='"x"')))]), "messages[0].parts[0].tool_call.arguments", "arguments must be a JSON object"),
        (chat(messages=[message(pb.ROLE_TOOL, pb.Part(tool_result=pb.ToolResult(content="ok")))]), "messages[0].parts[0].tool_result.tool_call_id", "tool_call_id is required"),
        (chat(tools=[WEATHER, pb.Tool(description="nameless")]), "tools[1].name", "tool name is required"),
        (chat(tools=[WEATHER], tool_choice=pb.ToolChoice(tool_name="get_time")), "tool_choice.tool_name", "tool 'get_time' is not among the request's tools"),
        (chat(tool_choice=pb.ToolChoice(tool_name="get_weather")), "tool_choice.tool_name", "tool 'get_weather' is not among the request's tools"),
        (chat(tools=[WEATHER], tool_choice=pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_UNSPECIFIED)), "tool_choice.mode", "mode must be set"),
        (chat(tool_choice=pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED)), "tool_choice.mode", "REQUIRED needs at least one tool"),
    ],
    ids=[
        "no-route",
        "no-messages",
        "unset-role",
        "no-parts",
        "empty-part",
        "image-in-system",
        "image-in-assistant",
        "image-in-tool",
        "tool_call-in-system",
        "tool_call-in-user",
        "tool_call-in-tool",
        "tool_result-in-system",
        "tool_result-in-user",
        "tool_result-in-assistant",
        "image-without-source",
        "inline-image-without-media-type",
        "tool-call-without-id",
        "tool-call-without-name",
        "tool-call-arguments-not-json",
        "tool-call-arguments-an-array",
        "tool-call-arguments-a-string",
        "tool-result-without-call-id",
        "nameless-tool",
        "tool_choice-names-an-unknown-tool",
        "tool_choice-names-a-tool-without-tools",
        "tool_choice-unspecified-mode",
        "tool_choice-required-without-tools",
    ],
)  # fmt: skip
def test_an_invalid_chat_request_names_its_field(
    request_: pb.ChatRequest, field: str, message: str
) -> None:
    assert_invalid(lambda: chat_request(request_), field, message)


# --- completions -------------------------------------------------------------------


def test_a_minimal_completion_request_takes_every_default() -> None:
    assert completion_request(complete()) == domain.CompletionRequest(
        route="complete",
        prompt="Once",
        generation=domain.GenerationParams(),
        suffix="",
        labels={},
        cache=domain.CacheControl(),
    )


def test_every_completion_field_is_carried() -> None:
    request = pb.CompleteRequest(
        route="fim",
        prompt="def add(a, b):\n",
        generation=pb.GenerationConfig(max_tokens=16, stop=["\n\n"]),
        labels={"team": "ide"},
        suffix="\nprint(add(1, 2))",
        cache=pb.CacheControl(no_store=True),
    )
    assert completion_request(request) == domain.CompletionRequest(
        route="fim",
        prompt="def add(a, b):\n",
        generation=domain.GenerationParams(max_tokens=16, stop=("\n\n",)),
        suffix="\nprint(add(1, 2))",
        labels={"team": "ide"},
        cache=domain.CacheControl(no_store=True),
    )


@pytest.mark.parametrize(
    ("request_", "field", "message"),
    [
        (complete(route=""), "route", "route is required"),
        (complete(prompt=""), "prompt", "prompt is empty"),
    ],
    ids=["no-route", "empty-prompt"],
)
def test_an_invalid_completion_request_names_its_field(
    request_: pb.CompleteRequest, field: str, message: str
) -> None:
    assert_invalid(lambda: completion_request(request_), field, message)


# --- embeddings -------------------------------------------------------------------


def test_a_minimal_embedding_request_takes_every_default() -> None:
    assert embedding_request(embed()) == domain.EmbeddingRequest(
        route="embed", inputs=("a",), dimensions=None, labels={}
    )


def test_every_embedding_field_is_carried() -> None:
    request = pb.EmbedRequest(
        route="vectors", inputs=["first", "", "third"], dimensions=256, labels={"team": "rag"}
    )
    assert embedding_request(request) == domain.EmbeddingRequest(
        route="vectors", inputs=("first", "", "third"), dimensions=256, labels={"team": "rag"}
    )


@pytest.mark.parametrize(
    ("request_", "field", "message"),
    [
        (embed(route=""), "route", "route is required"),
        (embed(inputs=[]), "inputs", "at least one input is required"),
        (embed(dimensions=0), "dimensions", "dimensions must be between 1 and 65536, got 0"),
        (embed(dimensions=-8), "dimensions", "dimensions must be between 1 and 65536, got -8"),
    ],
    ids=["no-route", "no-inputs", "zero-dimensions", "negative-dimensions"],
)
def test_an_invalid_embedding_request_names_its_field(
    request_: pb.EmbedRequest, field: str, message: str
) -> None:
    assert_invalid(lambda: embedding_request(request_), field, message)
