"""Message builders and request building (no server)."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import struct_pb2

from sluice_client import ToolCall, assistant, image, system, tool_result, user
from sluice_client._requests import chat_request, embed_request
from sluice_client.v1 import gateway_pb2 as pb


def build_chat(messages: Any, **kwargs: Any) -> pb.ChatRequest:
    options: dict[str, Any] = {
        "generation": None,
        "tools": None,
        "tool_choice": None,
        "labels": None,
    }
    return chat_request("chat", messages, **(options | kwargs))


def test_builders_make_messages_of_their_role() -> None:
    png = image(b"\x89PNG", "image/png")

    assert system("Be brief.") == pb.Message(role=pb.ROLE_SYSTEM, parts=[pb.Part(text="Be brief.")])
    assert user("What is this?", png, pb.Image(url="https://x/y.jpg"), name="ann") == pb.Message(
        role=pb.ROLE_USER,
        parts=[
            pb.Part(text="What is this?"),
            pb.Part(image=pb.Image(data=b"\x89PNG", media_type="image/png")),
            pb.Part(image=pb.Image(url="https://x/y.jpg")),
        ],
        name="ann",
    )
    assert tool_result("call_a", "18°C", is_error=False) == pb.Message(
        role=pb.ROLE_TOOL,
        parts=[pb.Part(tool_result=pb.ToolResult(tool_call_id="call_a", content="18°C"))],
    )


def test_assistant_takes_tool_calls_of_every_form() -> None:
    message = assistant(
        "Checking.",
        tool_calls=[
            ToolCall("a", "weather", "{}"),
            pb.ToolCall(id="b", name="clock"),
            {"id": "c", "name": "map", "arguments": '{"z": 3}'},
        ],
    )

    assert message == pb.Message(
        role=pb.ROLE_ASSISTANT,
        parts=[
            pb.Part(text="Checking."),
            pb.Part(tool_call=pb.ToolCall(id="a", name="weather", arguments="{}")),
            pb.Part(tool_call=pb.ToolCall(id="b", name="clock")),
            pb.Part(tool_call=pb.ToolCall(id="c", name="map", arguments='{"z": 3}')),
        ],
    )
    # A reply that only calls tools has no empty text part.
    assert [
        p.WhichOneof("content") for p in assistant(tool_calls=[ToolCall("a", "f", "")]).parts
    ] == ["tool_call"]


def test_dict_messages_are_shorthand_for_the_builders() -> None:
    request = build_chat(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi", "name": "ann"},
            {"role": "user", "content": ["Look:", image("https://x/y.jpg")]},
            {"role": "assistant", "tool_calls": [{"id": "a", "name": "f", "arguments": "{}"}]},
            {"role": "tool", "tool_call_id": "a", "content": "done", "is_error": True},
            user("Thanks"),
        ]
    )

    assert list(request.messages) == [
        system("Be brief."),
        user("Hi", name="ann"),
        user("Look:", image("https://x/y.jpg")),
        assistant(tool_calls=[pb.ToolCall(id="a", name="f", arguments="{}")]),
        tool_result("a", "done", is_error=True),
        user("Thanks"),
    ]


def test_a_bare_string_is_one_user_message() -> None:
    assert list(build_chat("Hi").messages) == [user("Hi")]


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"role": "robot", "content": "Hi"}, ValueError),
        ({"content": "Hi"}, ValueError),
        ({"role": "user", "contents": "Hi"}, TypeError),
        ({"role": "tool", "content": "done"}, TypeError),
        ("Hi", TypeError),
        ({"role": "user", "content": [42]}, TypeError),
    ],
)
def test_malformed_messages_are_refused(message: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        build_chat([message])


def test_generation_tools_and_tool_choice_take_dicts_or_protos() -> None:
    schema: dict[str, Any] = {"type": "object", "properties": {"city": {"type": "string"}}}
    request = build_chat(
        "Hi",
        generation={"max_tokens": 100, "temperature": 0.0, "stop": ["\n"]},
        tools=[
            {"name": "weather", "description": "Weather of a city", "parameters": schema},
            pb.Tool(name="clock"),
        ],
        tool_choice="weather",
        labels={"team": "search"},
    )

    assert request.generation == pb.GenerationConfig(max_tokens=100, temperature=0.0, stop=["\n"])
    # temperature 0 is set, not absent: the route's default does not apply.
    assert request.generation.HasField("temperature")
    parameters = struct_pb2.Struct()
    parameters.update(schema)
    assert list(request.tools) == [
        pb.Tool(name="weather", description="Weather of a city", parameters=parameters),
        pb.Tool(name="clock"),
    ]
    assert request.tool_choice == pb.ToolChoice(tool_name="weather")
    assert request.labels == {"team": "search"}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_AUTO)),
        ("none", pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_NONE)),
        ("required", pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED)),
        (pb.ToolChoice(tool_name="auto"), pb.ToolChoice(tool_name="auto")),
    ],
)
def test_tool_choice_modes(choice: Any, expected: pb.ToolChoice) -> None:
    assert build_chat("Hi", tool_choice=choice).tool_choice == expected


def test_unset_options_stay_unset() -> None:
    request = build_chat("Hi")

    assert not request.HasField("generation")
    assert not request.HasField("tool_choice")


@pytest.mark.parametrize(
    "options",
    [
        {"generation": {"max_token": 5}},
        {"tools": [{"name": "f", "schema": {}}]},
    ],
)
def test_unknown_fields_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="has no"):
        build_chat("Hi", **options)


def test_embed_refuses_a_bare_string() -> None:
    with pytest.raises(TypeError, match="list of strings"):
        embed_request("embed", "hello", dimensions=None, labels=None)
