"""The wire helpers several providers share."""

from __future__ import annotations

import pytest

from sluice.domain import ImagePart, Message, Role, TextPart, ToolCallPart, ToolResultPart
from sluice.errors import GatewayError
from sluice.providers.wire import (
    MAX_ERROR_TEXT,
    Turn,
    alternating_turns,
    image_data_url,
    json_headers,
    quoted_body,
    retry_after_seconds,
    tool_call_arguments,
)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({}, None),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
    ],
    ids=["none", "seconds", "fraction", "negative", "http-date", "ms", "ms-first", "bad-ms"],
)
def test_retry_after_seconds(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after_seconds(headers) == seconds


@pytest.mark.parametrize(
    ("body", "quoted"),
    [
        (b"", ""),
        (b"  \n", ""),
        (b"  Bad Gateway\n", "Bad Gateway"),
        (b"x" * 1000, "x" * MAX_ERROR_TEXT),
        (b"caf\xc3\xa9 \xff", "café \ufffd"),
    ],
    ids=["empty", "blank", "stripped", "truncated", "bad-utf8"],
)
def test_quoted_body(body: bytes, quoted: str) -> None:
    assert quoted_body(body) == quoted


def test_json_headers_carry_a_bearer_only_with_a_key() -> None:
    assert json_headers() == {"content-type": "application/json"}
    assert json_headers("k") == {"content-type": "application/json", "authorization": "Bearer k"}


@pytest.mark.parametrize(
    ("arguments", "expected", "problem"),
    [
        ('{"a": 1}', {"a": 1}, None),
        ("", {}, None),
        ("{", None, "tool call arguments are not JSON"),
        ("[1]", None, "tool call arguments must be a JSON object"),
    ],
    ids=["object", "empty", "not-json", "not-object"],
)
def test_tool_call_arguments(
    arguments: str, expected: dict[str, object] | None, problem: str | None
) -> None:
    part = ToolCallPart("c1", "f", arguments)
    if problem is None:
        assert tool_call_arguments(part, "messages[0].parts[1]") == expected
        return
    with pytest.raises(GatewayError) as raised:
        tool_call_arguments(part, "messages[0].parts[1]")
    assert problem in raised.value.message
    assert raised.value.field == "messages[0].parts[1].tool_call.arguments"


def test_image_data_url() -> None:
    assert image_data_url(ImagePart(url="https://x/y.png"), "f") == "https://x/y.png"
    inline = ImagePart(data=b"\x89PNG", media_type="image/png")
    assert image_data_url(inline, "f") == "data:image/png;base64,iVBORw=="
    with pytest.raises(GatewayError, match="an inline image needs its media type"):
        image_data_url(ImagePart(data=b"\x89PNG"), "f")


def test_alternating_turns_merge_sides_and_drop_empty_text() -> None:
    result = ToolResultPart("c1", "42")
    messages = (
        Message(Role.SYSTEM, (TextPart("be brief"), TextPart(""))),
        Message(Role.USER, (TextPart("hi"), TextPart(""))),
        Message(Role.USER, (TextPart("there"),)),
        Message(Role.ASSISTANT, (TextPart(""),)),
        Message(Role.TOOL, (result,)),
    )
    assert alternating_turns(messages) == (
        [TextPart("be brief")],
        [
            Turn(
                assistant=False,
                parts=[
                    (TextPart("hi"), "messages[1].parts[0]"),
                    (TextPart("there"), "messages[2].parts[0]"),
                    (result, "messages[4].parts[0]"),
                ],
            )
        ],
    )
