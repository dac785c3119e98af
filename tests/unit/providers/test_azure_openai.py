"""Azure OpenAI adapter: settings, the two URL surfaces, auth headers,
recorded content-filter streams decoded at every split, and error mapping.
Sans-I/O: no server, no network."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sluice.domain import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    Event,
    Finish,
    FinishReason,
    GenerationParams,
    Message,
    Operation,
    Request,
    Role,
    Start,
    TextPart,
    Usage,
)
from sluice.errors import Status
from sluice.providers.azure_openai import AzureOpenAIAdapter, AzureOpenAISettings
from sluice.providers.http import HttpClientPool
from sluice.providers.openai import OpenAIChatDecoder
from tests.decoding import chunked
from tests.recordings import recording, splits
from tests.unit.providers.test_openai import (
    decode,
    decode_error,
    texts,
    tool_arguments,
    tool_call,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

RESOURCE = "https://contoso.openai.azure.com"


def azure_settings(**fields: Any) -> AzureOpenAISettings:
    return AzureOpenAISettings.model_validate(
        {
            "provider": "azure_openai",
            "name": "gpt-4o",
            "api_base": RESOURCE,
            "deployment": "chat-prod",
            **fields,
        }
    )


def adapter(**fields: Any) -> AzureOpenAIAdapter:
    # build, decoder and parse_error never touch the client.
    return AzureOpenAIAdapter(azure_settings(**fields), client=None)  # type: ignore[arg-type]


HI = ChatRequest("chat", (Message(Role.USER, (TextPart("hi"),)),), GenerationParams(max_tokens=9))


# --- settings ------------------------------------------------------------------------


def test_settings_defaults_and_aliases() -> None:
    configured = AzureOpenAISettings.model_validate(
        {
            "provider": "azure_openai",
            "name": "gpt-4o",
            "azure_openai_api_base": RESOURCE + "/",
            "azure_openai_api_key": "az-key",
            "deployment": "chat-prod",
        }
    )
    assert (configured.base_url, configured.key) == (RESOURCE, "az-key")
    assert (configured.api_version, configured.auth) == ("2024-10-21", "api-key")
    assert configured.max_tokens_field == "max_completion_tokens"
    assert configured.operations == frozenset(Operation)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"api_base": None}, "api_base"),
        ({"api_base": RESOURCE + "/openai/v1/"}, "give the resource endpoint without /openai"),
        ({"deployment": None}, "api_version 2024-10-21 needs a deployment"),
        ({"api_version": "2024-10"}, "api_version"),
        ({"auth": "entra"}, "auth"),
        ({"endpoint": RESOURCE}, "endpoint"),
    ],
    ids=["no-api-base", "sdk-base-url", "no-deployment", "bad-version", "bad-auth", "unknown-key"],
)
def test_settings_refuse(change: dict[str, Any], problem: str) -> None:
    """`change` sets keys, or drops those it maps to None."""
    valid = {"provider": "azure_openai", "name": "m", "api_base": RESOURCE, "deployment": "d"}
    raw = {key: value for key, value in (valid | change).items() if value is not None}
    with pytest.raises(ValidationError) as caught:
        AzureOpenAISettings.model_validate(raw)
    assert problem in str(caught.value)


def test_v1_needs_no_deployment() -> None:
    assert azure_settings(api_version="v1", deployment=None).deployment is None


async def test_create_adapter_uses_the_pooled_client() -> None:
    pool = HttpClientPool()
    try:
        created = azure_settings().create_adapter(pool)
        assert isinstance(created, AzureOpenAIAdapter)
        assert created.provider == "azure_openai"
        assert created._client is pool.client_for(RESOURCE)
    finally:
        await pool.aclose()


# --- requests ------------------------------------------------------------------------

DATED = "https://contoso.openai.azure.com/openai/deployments/chat-prod"
V1 = "https://contoso.openai.azure.com/openai/v1"

URL_CASES: list[tuple[dict[str, Any], Request, str]] = [
    ({}, HI, f"{DATED}/chat/completions?api-version=2024-10-21"),
    ({}, CompletionRequest("c", "p"), f"{DATED}/completions?api-version=2024-10-21"),
    ({}, EmbeddingRequest("e", ("x",)), f"{DATED}/embeddings?api-version=2024-10-21"),
    (
        {"api_version": "2025-04-01-preview"},
        HI,
        f"{DATED}/chat/completions?api-version=2025-04-01-preview",
    ),
    (
        {"deployment": "team a/chat"},
        HI,
        f"{RESOURCE}/openai/deployments/team%20a%2Fchat/chat/completions?api-version=2024-10-21",
    ),
    ({"api_version": "v1"}, HI, f"{V1}/chat/completions"),
    ({"api_version": "v1"}, CompletionRequest("c", "p"), f"{V1}/completions"),
    ({"api_version": "v1", "deployment": None}, EmbeddingRequest("e", ("x",)), f"{V1}/embeddings"),
]


@pytest.mark.parametrize(
    ("fields", "request_", "url"),
    URL_CASES,
    ids=["chat", "completion", "embedding", "preview", "quoted", "v1", "v1-completion", "v1-embed"],
)
def test_url(fields: dict[str, Any], request_: Request, url: str) -> None:
    assert adapter(**fields).build(request_).url == url


@pytest.mark.parametrize(
    ("fields", "headers"),
    [
        ({"api_key": "az-key"}, {"content-type": "application/json", "api-key": "az-key"}),
        (
            {"api_key": "eyJ0eXAi", "auth": "bearer"},
            {"content-type": "application/json", "authorization": "Bearer eyJ0eXAi"},
        ),
        ({}, {"content-type": "application/json"}),
    ],
    ids=["api-key", "entra-id-bearer", "no-key"],
)
def test_auth_headers(fields: dict[str, Any], headers: dict[str, str]) -> None:
    assert adapter(**fields).build(HI).headers == headers


def test_chat_body_names_the_deployment_model_and_caps_with_max_completion_tokens() -> None:
    body = adapter(name="gpt-5-mini", api_version="v1").build(HI).json
    assert body == {
        "model": "gpt-5-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_completion_tokens": 9,
    }


def test_max_tokens_field_for_models_that_want_max_tokens() -> None:
    body = adapter(max_tokens_field="max_tokens").build(HI).json
    assert (body["max_tokens"], "max_completion_tokens" in body) == (9, False)


def test_completion_and_embedding_bodies() -> None:
    completion = CompletionRequest("c", "def f(", GenerationParams(max_tokens=5), suffix="  return")
    assert adapter().build(completion).json == {
        "model": "gpt-4o",
        "prompt": "def f(",
        "suffix": "  return",
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 5,
    }
    embedding = EmbeddingRequest("e", ("a", "b"), dimensions=64)
    assert adapter(name="text-embedding-3-small").build(embedding).json == {
        "model": "text-embedding-3-small",
        "input": ["a", "b"],
        "dimensions": 64,
        "encoding_format": "float",
    }


# --- recorded streams -----------------------------------------------------------------

STREAMS: list[tuple[str, list[Event]]] = [
    (
        # The first chunk (prompt filter results) has no choices, id or model.
        "azure_openai_chat_stream.txt",
        [
            Start("chatcmpl-DuLYtUePDgoybMkZrAI7utkb2fiRp", "gpt-5-mini-2025-08-07"),
            *tool_call(
                0,
                "call_tWA8BJziGlCyhQEXhEHn6eXK",
                "weather",
                *("", '{"', "location", '":"', "Flor", "ence", ",", " Italy", '"}'),
            ),
            Usage(input_tokens=145, output_tokens=154, reasoning_tokens=128),
            Finish(FinishReason.TOOL_CALLS, "tool_calls"),
        ],
    ),
    (
        # Annotation chunks: id "", choices without delta; the filter blocks
        # the output; this sample has no usage chunk.
        "azure_openai_content_filter_midstream.txt",
        [
            Start("chatcmpl-8JCbt5d4luUIhYCI7YH4dQK7hnHx2", "gpt-35-turbo"),
            *texts("Hey", " Jude", ",", " better"),
            Usage(reported=False),
            Finish(FinishReason.CONTENT_FILTER, "content_filter"),
        ],
    ),
]


def chat_decoder() -> OpenAIChatDecoder:
    decoder = adapter().decoder(HI)
    assert isinstance(decoder, OpenAIChatDecoder)
    return decoder


@pytest.mark.parametrize(("name", "expected"), STREAMS, ids=[case[0] for case in STREAMS])
def test_recorded_stream_at_every_split(name: str, expected: list[Event]) -> None:
    body = recording(name)
    for parts in splits(body):
        assert decode(chat_decoder(), parts) == expected, f"split at {len(parts[0])}"


def test_recorded_tool_call_arguments() -> None:
    assert tool_arguments(STREAMS[0][1]) == {0: {"location": "Florence, Italy"}}


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_chunking_decodes_like_the_whole_body(data: st.DataObject) -> None:
    name, expected = data.draw(st.sampled_from(STREAMS), label="recording")
    body = recording(name)
    cuts = data.draw(st.sets(st.integers(1, len(body) - 1), max_size=40), label="cuts")
    assert decode(chat_decoder(), chunked(body, cuts)) == expected


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_stream_cut_before_done_is_an_error_naming_azure(data: st.DataObject) -> None:
    name, _ = data.draw(st.sampled_from(STREAMS), label="recording")
    body = recording(name)
    cut = data.draw(st.integers(0, body.index(b'"finish_reason":"') - 1), label="cut")
    _, error = decode_error(chat_decoder(), [body[:cut]])
    assert (error.status, error.reason) == (Status.UNAVAILABLE, "UPSTREAM_PROTOCOL_ERROR")
    assert error.message.startswith("azure_openai: ")
    assert error.metadata["provider"] == "azure_openai"


# --- HTTP errors -----------------------------------------------------------------------

FILTER_RESULT = {
    "hate": {"filtered": True, "severity": "high"},
    "self-harm": {"filtered": True, "severity": "high"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": True, "severity": "medium"},
}


def test_parse_error_prompt_blocked_by_the_content_filter() -> None:
    body = recording("azure_openai_error_content_filter_400.json")
    error = adapter().parse_error(400, {"apim-request-id": "apim-1", "x-request-id": "x-1"}, body)
    assert (error.status, error.reason, error.field) == (
        Status.INVALID_ARGUMENT,
        "UPSTREAM_BAD_REQUEST",
        "",
    )
    assert error.message == (
        "azure_openai: The response was filtered due to the prompt triggering Azure Content"
        " management policy. Please modify your prompt and retry. (param: prompt)"
    )
    assert error.metadata == {
        "provider": "azure_openai",
        "http_status": "400",
        "upstream_type": "content_filter",
        "upstream_request_id": "apim-1",
        "content_filter_result": json.dumps(FILTER_RESULT, separators=(",", ":")),
    }
    assert json.loads(error.metadata["content_filter_result"]) == FILTER_RESULT


def test_parse_error_takes_the_spec_spelling_of_filter_results() -> None:
    body = json.dumps(
        {
            "error": {
                "code": "content_filter",
                "message": "blocked",
                "inner_error": {
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_results": {"jailbreak": {"filtered": True, "detected": True}},
                },
            }
        }
    ).encode()
    error = adapter().parse_error(400, {}, body)
    assert error.metadata["content_filter_result"] == (
        '{"jailbreak":{"filtered":true,"detected":true}}'
    )


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected", "request_id"),
    [
        (
            401,
            {"apim-request-id": "a-1"},
            b'{"error":{"code":"401","message":"Access denied due to invalid subscription key"}}',
            (
                Status.INTERNAL,
                "UPSTREAM_AUTH_FAILED",
                "azure_openai rejected the gateway's credentials (HTTP 401)",
                None,
            ),
            "a-1",
        ),
        (
            429,
            {"retry-after": "6", "x-request-id": "x-2"},
            b'{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation'
            b' have exceeded token rate limit. Please retry after 6 seconds."}}',
            (
                Status.RESOURCE_EXHAUSTED,
                "UPSTREAM_RATE_LIMITED",
                "azure_openai: Requests to the ChatCompletions_Create Operation have exceeded"
                " token rate limit. Please retry after 6 seconds.",
                6.0,
            ),
            "x-2",
        ),
        (
            404,
            {},
            b'{"error":{"code":"DeploymentNotFound","message":"The API deployment for this'
            b' resource does not exist."}}',
            (
                Status.FAILED_PRECONDITION,
                "UPSTREAM_NOT_FOUND",
                "azure_openai: The API deployment for this resource does not exist.",
                None,
            ),
            None,
        ),
        (
            503,
            {},
            b"<html>Service Unavailable</html>",
            (
                Status.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                "azure_openai: <html>Service Unavailable</html>",
                None,
            ),
            None,
        ),
    ],
    ids=["401", "429", "404-deployment", "503-html"],
)
def test_parse_error(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    expected: tuple[Status, str, str, float | None],
    request_id: str | None,
) -> None:
    error = adapter().parse_error(status, headers, body)
    assert (error.status, error.reason, error.message, error.retry_after) == expected
    assert error.metadata.get("upstream_request_id") == request_id
    assert "content_filter_result" not in error.metadata
