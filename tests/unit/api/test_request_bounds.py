"""Every request field that drives work or memory is bounded before any work:
over a bound is INVALID_ARGUMENT naming the field and the bound."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf import struct_pb2

from sluice.api.request_bounds import MAX_DIMENSIONS, MAX_JSON_DEPTH, MAX_NAME_CHARS
from sluice.api.requests import chat_request, completion_request, embedding_request
from sluice.config.schema import RequestLimits
from sluice.errors import GatewayError, Status
from sluice_client.v1 import gateway_pb2 as pb
from tests.unit.api.valid_requests import chat, complete, embed, user

SMALL = RequestLimits(
    max_messages=2,
    max_parts=2,
    max_text_chars=20,
    max_image_bytes=8,
    max_tools=1,
    max_tool_bytes=200,
    max_stop_sequences=2,
    max_inputs=3,
    max_embedding_values=12,
    max_labels=2,
    max_label_chars=5,
    max_variables=2,
)


def nested_object(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def refused(decode: Callable[[], object]) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        decode()
    assert caught.value.status is Status.INVALID_ARGUMENT
    return caught.value


@pytest.mark.parametrize(
    ("request_", "field", "names"),
    [
        (chat(messages=[user()] * 3), "messages", "max_messages"),
        (chat(messages=[user(*[pb.Part(text="a")] * 3)]), "messages[0].parts", "max_parts"),
        (
            chat(messages=[user(pb.Part(text="x" * 15)), user(pb.Part(text="y" * 15))]),
            "messages[1].parts[0].text",
            "max_text_chars",
        ),
        (
            chat(tools=[pb.Tool(name="a"), pb.Tool(name="b")]),
            "tools",
            "max_tools",
        ),
        (chat(tools=[pb.Tool(name="a", description="d" * 300)]), "tools[0]", "max_tool_bytes"),
        (
            chat(generation=pb.GenerationConfig(stop=["a", "b", "c"])),
            "generation.stop",
            "max_stop_sequences",
        ),
        (
            chat(messages=[user(pb.Part(image=pb.Image(data=b"123456789", media_type="a/b")))]),
            "messages[0].parts[0].image.data",
            "max_image_bytes",
        ),
        (
            chat(messages=[user(pb.Part(image=pb.Image(url="https://example.com/x.png")))]),
            "messages[0].parts[0].image.url",
            "max_image_bytes",
        ),
        (chat(labels={"a": "1", "b": "2", "c": "3"}), "labels", "max_labels"),
        (chat(labels={"team": "toolong"}), "labels", "max_label_chars"),
        (chat(variables={"a": "1", "b": "2", "c": "3"}), "variables", "max_variables"),
        # A variable's value is text of the request.
        (chat(variables={"who": "x" * 21}), "variables.who", "max_text_chars"),
    ],
    ids=[
        "messages",
        "parts",
        "text",
        "tools",
        "tool-bytes",
        "stops",
        "image-data",
        "image-url",
        "labels",
        "label-chars",
        "variables",
        "variable-text",
    ],
)
def test_a_chat_over_a_limit_names_the_field_and_the_key(
    request_: pb.ChatRequest, field: str, names: str
) -> None:
    error = refused(lambda: chat_request(request_, SMALL))
    assert error.field == field
    assert f"server.request_limits.{names}" in error.message
    assert str(getattr(SMALL, names)) in error.message


def test_a_chat_at_every_limit_passes() -> None:
    request = chat(
        messages=[user(pb.Part(text="x" * 5), pb.Part(text="y" * 5)), user()],
        tools=[pb.Tool(name="a", description="d" * 100)],
        generation=pb.GenerationConfig(stop=["a", "b"]),
        labels={"a": "12345", "b": "2"},
        variables={"a": "", "b": ""},
    )
    decoded = chat_request(request, SMALL)
    assert len(decoded.messages) == 2
    assert decoded.variables == {"a": "", "b": ""}


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (complete(prompt="p" * 21), "prompt"),
        (complete(prompt="p" * 10, suffix="s" * 11), "suffix"),
        (complete(labels={"a": "1", "b": "2", "c": "3"}), "labels"),
    ],
    ids=["prompt", "suffix", "labels"],
)
def test_a_completion_over_a_limit_names_the_field(
    request_: pb.CompleteRequest, field: str
) -> None:
    assert refused(lambda: completion_request(request_, SMALL)).field == field


@pytest.mark.parametrize(
    ("request_", "field", "message"),
    [
        (embed(inputs=["a"] * 4), "inputs", "inputs has 4 entries, over the limit of 3"),
        (embed(inputs=["a"] * 3, dimensions=5), "dimensions", "15 values, over the limit of 12"),
        (embed(inputs=["x" * 21]), "inputs[0]", "passes 20 characters"),
    ],
    ids=["inputs", "values", "text"],
)
def test_an_embedding_over_a_limit_names_the_field(
    request_: pb.EmbedRequest, field: str, message: str
) -> None:
    error = refused(lambda: embedding_request(request_, SMALL))
    assert error.field == field
    assert message in error.message


@pytest.mark.parametrize("dimensions", [MAX_DIMENSIONS + 1, 2_147_483_647, 0, -1])
def test_dimensions_are_refused_past_the_fixed_bound_whatever_the_limits(dimensions: int) -> None:
    """The request that OOM-killed the gateway at 23.8 GB (issue 11)."""
    unbounded = RequestLimits(max_embedding_values=10**12)
    error = refused(lambda: embedding_request(embed(dimensions=dimensions), unbounded))
    assert error.field == "dimensions"
    assert f"between 1 and {MAX_DIMENSIONS}" in error.message


def test_the_most_dimensions_pass_for_one_input() -> None:
    assert embedding_request(embed(dimensions=MAX_DIMENSIONS)).dimensions == MAX_DIMENSIONS


@pytest.mark.parametrize("name", ["temperature", "top_p", "presence_penalty", "frequency_penalty"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_sampling_values_must_be_finite(name: str, value: float) -> None:
    """NaN passed every range check (`nan < 0` is false) and reached adapters."""
    generation = pb.GenerationConfig()
    setattr(generation, name, value)
    error = refused(lambda: chat_request(chat(generation=generation)))
    assert error.field == f"generation.{name}"


def test_tool_call_arguments_nest_at_most_the_fixed_depth() -> None:
    def with_arguments(arguments: str) -> pb.ChatRequest:
        call = pb.ToolCall(id="c1", name="f", arguments=arguments)
        return chat(messages=[pb.Message(role=pb.ROLE_ASSISTANT, parts=[pb.Part(tool_call=call)])])

    field = "messages[0].parts[0].tool_call.arguments"
    chat_request(with_arguments(json.dumps(nested_object(MAX_JSON_DEPTH))))
    too_deep = refused(lambda: chat_request(with_arguments(json.dumps(nested_object(33)))))
    assert (too_deep.field, too_deep.message) == (
        field,
        f"{field} nests deeper than {MAX_JSON_DEPTH} objects and arrays",
    )
    # Deeper than a recursive parser's stack: refused as malformed, not a RecursionError.
    bomb = '{"a":' + "[" * 100_000 + "]" * 100_000 + "}"
    assert refused(lambda: chat_request(with_arguments(bomb))).field == field


def test_a_tool_schema_nests_at_most_the_fixed_depth() -> None:
    def with_schema(depth: int) -> pb.ChatRequest:
        parameters = struct_pb2.Struct()
        parameters.update(nested_object(depth))
        return chat(tools=[pb.Tool(name="f", parameters=parameters)])

    assert chat_request(with_schema(MAX_JSON_DEPTH)).tools[0].name == "f"
    assert refused(lambda: chat_request(with_schema(MAX_JSON_DEPTH + 1))).field == (
        "tools[0].parameters"
    )


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (
            chat(
                messages=[pb.Message(role=pb.ROLE_USER, name="n" * 257, parts=[pb.Part(text="")])]
            ),
            "messages[0].name",
        ),
        (chat(tools=[pb.Tool(name="t" * 257)]), "tools[0].name"),
        (
            chat(
                messages=[user(pb.Part(image=pb.Image(data=b"1", media_type="image/" + "x" * 251)))]
            ),
            "messages[0].parts[0].image.media_type",
        ),
    ],
    ids=["message-name", "tool-name", "media-type"],
)
def test_names_are_bounded(request_: pb.ChatRequest, field: str) -> None:
    error = refused(lambda: chat_request(request_))
    assert error.field == field
    assert str(MAX_NAME_CHARS) in error.message


def test_an_unknown_tool_choice_is_quoted_truncated() -> None:
    request = chat(tools=[pb.Tool(name="f")], tool_choice=pb.ToolChoice(tool_name="g" * 10_000))
    error = refused(lambda: chat_request(request))
    assert len(error.message) < 200
    assert "…" in error.message


@pytest.mark.parametrize("number", [math.inf, -math.inf, math.nan])
def test_a_tool_schema_holding_a_non_json_number_is_invalid_argument(number: float) -> None:
    request = pb.ChatRequest(route="r")
    request.messages.add(role=pb.ROLE_USER).parts.add(text="hi")
    tool = request.tools.add(name="lookup")
    tool.parameters.update({"type": "object", "maximum": number})
    with pytest.raises(GatewayError) as refused:
        chat_request(request, RequestLimits())
    assert refused.value.status is Status.INVALID_ARGUMENT
    assert refused.value.field == "tools[0].parameters"
