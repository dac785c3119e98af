"""Properties of the OpenAI/Anthropic decoders: any split of valid input
gives the same events; malformed input gives a clear error, never another
exception and never a hang. The framers' own are in test_sse.py and
test_ndjson.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.errors import Status
from sluice.providers.anthropic import AnthropicStreamDecoder
from sluice.providers.base import StreamDecoder
from sluice.providers.openai import OpenAIChatDecoder, OpenAICompletionDecoder
from tests.decoding import chunked, decode
from tests.recordings import recording

# An in-stream error's own status (a recording that carries one).
UPSTREAM_STATUSES = (Status.INVALID_ARGUMENT, Status.RESOURCE_EXHAUSTED, Status.INTERNAL)
FAST = settings(max_examples=150, deadline=None)
CUTS = st.lists(st.integers(min_value=0, max_value=40_000), max_size=30)

DECODERS: dict[str, Callable[[], StreamDecoder]] = {
    "openai_chat_stream.txt": OpenAIChatDecoder,
    "openai_chat_tool_calls_stream.txt": OpenAIChatDecoder,
    "openai_completions_stream.txt": OpenAICompletionDecoder,
    "openai_chat_error_midstream.txt": OpenAIChatDecoder,
    "vllm_chat_stream.txt": OpenAIChatDecoder,
    "ollama_openai_compat_stream.txt": OpenAIChatDecoder,
    "tgi_chat_tool_stream.txt": OpenAIChatDecoder,
    "azure_openai_chat_stream.txt": OpenAIChatDecoder,
    "anthropic_messages_stream.txt": AnthropicStreamDecoder,
    "anthropic_messages_tool_use_stream.txt": AnthropicStreamDecoder,
    "anthropic_error_midstream.txt": AnthropicStreamDecoder,
}


def outcome(name: str, chunks: list[bytes]) -> tuple[object, ...]:
    events, error = decode(DECODERS[name](), chunks)
    return (*events, error and (error.status, error.reason, error.message))


@pytest.mark.parametrize("name", sorted(DECODERS))
@FAST
@given(cuts=CUTS)
def test_any_split_gives_the_same_events(name: str, cuts: list[int]) -> None:
    body = recording(name)
    assert outcome(name, chunked(body, cuts)) == outcome(name, [body])


@pytest.mark.parametrize("name", sorted(DECODERS))
@FAST
@given(data=st.data())
def test_a_cut_short_body_is_an_error_never_a_shorter_answer(
    name: str, data: st.DataObject
) -> None:
    body = recording(name).rstrip()
    end = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    cut = outcome(name, [body[:end]])
    if cut[-1] is None:
        # Only a cut after everything but the end marker may pass (OpenAI
        # servers that omit [DONE]): the answer must then be whole.
        assert cut == outcome(name, [body])
    else:
        assert cut[-1][0] is Status.UNAVAILABLE  # type: ignore[index]


@pytest.mark.parametrize("name", sorted(DECODERS))
@FAST
@given(garbage=st.binary(min_size=1, max_size=200), data=st.data())
def test_corrupted_bytes_end_in_a_gateway_error_or_decode(
    name: str, garbage: bytes, data: st.DataObject
) -> None:
    body = recording(name)
    at = data.draw(st.integers(min_value=0, max_value=len(body)))
    # decode() lets only GatewayError through: any other exception fails here.
    _events, error = decode(DECODERS[name](), [body[:at] + garbage + body[at:]])
    assert error is None or error.status in (Status.UNAVAILABLE, *UPSTREAM_STATUSES)
