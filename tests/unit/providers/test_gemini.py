"""Gemini API and Vertex AI adapter: request building, recorded streams
decoded at every split, malformed streams, embeddings and error mapping.
Sans-I/O, but for the HTTP path, which runs against a loopback upstream."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.domain import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    Embeddings,
    Event,
    Finish,
    FinishReason,
    GenerationParams,
    ImagePart,
    Message,
    ReasoningDelta,
    ReasoningSignature,
    Request,
    Role,
    Start,
    TextDelta,
    TextPart,
    Tool,
    ToolCallDelta,
    ToolCallPart,
    ToolChoice,
    ToolChoiceMode,
    ToolResultPart,
    Usage,
)
from sluice.errors import GatewayError, Status
from sluice.providers.gemini import (
    GeminiAdapter,
    GeminiSettings,
    GoogleAdapter,
    GoogleStreamDecoder,
    VertexAIAdapter,
    VertexAISettings,
)
from sluice.providers.http import HttpClientPool
from tests.decoding import chunked, decode
from tests.recordings import recording, splits
from tests.upstream import FakeUpstream, Reply

MODEL = "gemini-2.5-flash"
GEMINI_MODEL_URL = f"https://generativelanguage.googleapis.com/v1beta/models/{MODEL}"
VERTEX_MODEL_URL = (
    "https://us-central1-aiplatform.googleapis.com/v1/projects/my-project/locations/us-central1"
    f"/publishers/google/models/{MODEL}"
)
SKIP_SIGNATURE = "skip_thought_signature_validator"


def gemini(**fields: Any) -> GeminiAdapter:
    config = GeminiSettings.model_validate({"provider": "gemini", "name": MODEL, **fields})
    created = config.create_adapter(HttpClientPool())
    assert isinstance(created, GeminiAdapter)
    return created


def vertex(**fields: Any) -> VertexAIAdapter:
    config = VertexAISettings.model_validate(
        {"provider": "vertex_ai", "name": MODEL, "project": "my-project", **fields}
    )
    created = config.create_adapter(HttpClientPool())
    assert isinstance(created, VertexAIAdapter)
    return created


def chat(*messages: Message, **fields: Any) -> ChatRequest:
    return ChatRequest("gemini", messages or (user("Hi"),), **fields)


def user(text: str) -> Message:
    return Message(Role.USER, (TextPart(text),))


def error_fields(error: GatewayError) -> tuple[Status, str, str, dict[str, str]]:
    return error.status, error.reason, error.message, error.metadata


# --- settings ------------------------------------------------------------------


def test_gemini_settings_aliases_and_default_base() -> None:
    aliased = GeminiSettings.model_validate(
        {
            "provider": "gemini",
            "name": MODEL,
            "gemini_api_key": "AIza-test",
            "gemini_api_base": "https://proxy.example/google/",
        }
    )
    assert (aliased.key, aliased.base_url) == ("AIza-test", "https://proxy.example/google")
    plain = GeminiSettings(provider="gemini", name=MODEL)
    assert (plain.key, plain.base_url) == ("", "https://generativelanguage.googleapis.com")


@pytest.mark.parametrize(
    ("fields", "base_url"),
    [
        ({}, "https://us-central1-aiplatform.googleapis.com"),
        ({"location": "europe-west4"}, "https://europe-west4-aiplatform.googleapis.com"),
        ({"location": "global"}, "https://aiplatform.googleapis.com"),
        (
            {"location": "global", "vertex_ai_api_base": "https://psc.example/"},
            "https://psc.example",
        ),
    ],
)
def test_vertex_base_url_follows_the_location(fields: dict[str, str], base_url: str) -> None:
    config = VertexAISettings.model_validate(
        {"provider": "vertex_ai", "name": MODEL, "project": "p", **fields}
    )
    assert config.base_url == base_url


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({}, "project"),
        ({"project": "p", "location": "evil.example/x#"}, "location"),
        ({"project": "p/../../other"}, "project"),
        ({"project": "p", "region": "us-east1"}, "region"),
    ],
)
def test_vertex_settings_refuse(fields: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        VertexAISettings.model_validate({"provider": "vertex_ai", "name": MODEL, **fields})


async def test_create_adapter_uses_the_pooled_client() -> None:
    pool = HttpClientPool()
    try:
        config = VertexAISettings(provider="vertex_ai", name=MODEL, project="p", location="global")
        adapter = config.create_adapter(pool)
        assert isinstance(adapter, VertexAIAdapter)
        assert adapter._client is pool.client_for("https://aiplatform.googleapis.com/")
    finally:
        await pool.aclose()


# --- build: URLs and headers ---------------------------------------------------

EMBED = EmbeddingRequest("embed", ("a",))


@pytest.mark.parametrize(
    ("adapter", "request_", "url"),
    [
        (gemini(), chat(), f"{GEMINI_MODEL_URL}:streamGenerateContent?alt=sse"),
        (
            gemini(),
            CompletionRequest("c", "Hi"),
            f"{GEMINI_MODEL_URL}:streamGenerateContent?alt=sse",
        ),
        (gemini(), EMBED, f"{GEMINI_MODEL_URL}:batchEmbedContents"),
        (
            gemini(name="tunedModels/my-tune"),
            chat(),
            "https://generativelanguage.googleapis.com/v1beta/tunedModels/my-tune"
            ":streamGenerateContent?alt=sse",
        ),
        (vertex(), chat(), f"{VERTEX_MODEL_URL}:streamGenerateContent?alt=sse"),
        (vertex(), EMBED, f"{VERTEX_MODEL_URL}:predict"),
        (
            vertex(location="global"),
            chat(),
            "https://aiplatform.googleapis.com/v1/projects/my-project/locations/global"
            f"/publishers/google/models/{MODEL}:streamGenerateContent?alt=sse",
        ),
    ],
    ids=[
        "gemini-chat",
        "gemini-completion",
        "gemini-embed",
        "gemini-tuned",
        "vertex-chat",
        "vertex-embed",
        "vertex-global",
    ],
)
def test_build_url(adapter: GoogleAdapter, request_: Request, url: str) -> None:
    built = adapter.build(request_)
    assert (built.method, built.url) == ("POST", url)


@pytest.mark.parametrize(
    ("adapter", "headers"),
    [
        (
            gemini(api_key="AIza-test"),
            {"content-type": "application/json", "x-goog-api-key": "AIza-test"},
        ),
        (gemini(), {"content-type": "application/json"}),
        (
            vertex(api_key="ya29.token"),
            {"content-type": "application/json", "authorization": "Bearer ya29.token"},
        ),
        (vertex(), {"content-type": "application/json"}),
    ],
    ids=["gemini-key", "gemini-no-key", "vertex-token", "vertex-no-token"],
)
def test_build_headers(adapter: GoogleAdapter, headers: dict[str, str]) -> None:
    for request_ in (chat(), EMBED):
        built = adapter.build(request_)
        assert built.headers == headers
        # The key never travels in the URL, where it would reach logs.
        assert "key=" not in built.url


# --- build: chat and completion bodies -----------------------------------------


def test_build_minimal_chat_body() -> None:
    assert gemini().build(chat(user("Hi"))).json == {
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}]
    }


def test_build_system_instruction_roles_and_merged_turns() -> None:
    request = chat(
        Message(Role.SYSTEM, (TextPart("Be brief."), TextPart(""))),
        user("Hi"),
        Message(Role.ASSISTANT, (TextPart("Hello!"),)),
        Message(Role.SYSTEM, (TextPart("Answer in French."),)),
        user("Weather?"),
        # Only empty text: no turn at all (Gemini rejects a turn without parts).
        Message(Role.ASSISTANT, (TextPart(""),)),
        user("Again"),
    )
    assert vertex().build(request).json == {
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Answer in French."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Hello!"}]},
            {"role": "user", "parts": [{"text": "Weather?"}, {"text": "Again"}]},
        ],
    }


def test_build_tool_round_trip() -> None:
    request = chat(
        user("Weather in Paris and Rome, and the time?"),
        Message(
            Role.ASSISTANT,
            (
                TextPart(""),
                # Gemini 3 names its calls; the decoder made up call_1 and call_2.
                ToolCallPart("k3x9q2mz", "get_weather", '{"city": "Paris"}'),
                ToolCallPart("call_1", "get_weather", '{"city": "Rome"}'),
                ToolCallPart("call_2", "get_time", ""),
            ),
        ),
        Message(Role.TOOL, (ToolResultPart("k3x9q2mz", '{"celsius": 18}'),)),
        Message(Role.TOOL, (ToolResultPart("call_1", "no data", is_error=True),)),
        Message(Role.TOOL, (ToolResultPart("call_2", "12:00"),)),
        user("Thanks"),
    )
    assert gemini().build(request).json["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Paris and Rome, and the time?"}]},
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {
                        "name": "get_weather",
                        "args": {"city": "Paris"},
                        "id": "k3x9q2mz",
                    },
                    "thoughtSignature": SKIP_SIGNATURE,
                },
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Rome"}},
                    "thoughtSignature": SKIP_SIGNATURE,
                },
                {
                    "functionCall": {"name": "get_time", "args": {}},
                    "thoughtSignature": SKIP_SIGNATURE,
                },
            ],
        },
        {
            # The results of parallel calls answer in one turn.
            "role": "user",
            "parts": [
                {
                    "functionResponse": {
                        "name": "get_weather",
                        "response": {"celsius": 18},
                        "id": "k3x9q2mz",
                    }
                },
                {"functionResponse": {"name": "get_weather", "response": {"error": "no data"}}},
                {"functionResponse": {"name": "get_time", "response": {"output": "12:00"}}},
                {"text": "Thanks"},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("content", "is_error", "response"),
    [
        ("plain", False, {"output": "plain"}),
        ('{"a": [1]}', False, {"a": [1]}),
        (' {"a": 1}', False, {"a": 1}),
        ("[1, 2]", False, {"output": "[1, 2]"}),
        ("{not json", False, {"output": "{not json"}),
        ("", False, {"output": ""}),
        ('{"code": 404}', True, {"error": {"code": 404}}),
        ("boom", True, {"error": "boom"}),
    ],
)
def test_build_tool_result_response(content: str, is_error: bool, response: Any) -> None:
    request = chat(
        Message(Role.ASSISTANT, (ToolCallPart("call_0", "f", "{}"),)),
        Message(Role.TOOL, (ToolResultPart("call_0", content, is_error),)),
    )
    result = gemini().build(request).json["contents"][1]["parts"][0]["functionResponse"]
    assert result == {"name": "f", "response": response}


def test_build_refuses_a_result_without_its_call() -> None:
    request = chat(
        user("Hi"),
        Message(Role.TOOL, (ToolResultPart("call_9", "x"),)),
        # A call after its result does not count: results answer earlier calls.
        Message(Role.ASSISTANT, (ToolCallPart("call_9", "f", "{}"),)),
    )
    with pytest.raises(GatewayError, match="no earlier tool call has the id 'call_9'") as caught:
        gemini().build(request)
    assert caught.value.status is Status.INVALID_ARGUMENT
    assert caught.value.field == "messages[1].parts[0].tool_result.tool_call_id"


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [("{not json", "not JSON"), ('["a"]', "must be a JSON object")],
)
def test_build_refuses_bad_tool_call_arguments(arguments: str, problem: str) -> None:
    request = chat(
        user("Hi"),
        Message(Role.ASSISTANT, (TextPart("Let me look."), ToolCallPart("t", "f", arguments))),
    )
    with pytest.raises(GatewayError, match=problem) as caught:
        gemini().build(request)
    assert caught.value.status is Status.INVALID_ARGUMENT
    assert caught.value.field == "messages[1].parts[1].tool_call.arguments"


def test_build_images_inline_and_by_url() -> None:
    message = Message(
        Role.USER,
        (
            ImagePart(data=b"\x89PNG", media_type="image/png"),
            ImagePart(url="gs://bucket/cat.jpg", media_type="image/jpeg"),
            TextPart("What are these?"),
        ),
    )
    assert vertex().build(chat(message)).json["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw=="}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "gs://bucket/cat.jpg"}},
        {"text": "What are these?"},
    ]


@pytest.mark.parametrize(
    "image",
    [ImagePart(url="https://example.com/cat.jpg"), ImagePart(data=b"\x89PNG")],
    ids=["url", "inline"],
)
def test_build_refuses_an_image_without_media_type(image: ImagePart) -> None:
    request = chat(user("Hi"), Message(Role.USER, (TextPart("Look:"), image)))
    with pytest.raises(GatewayError, match="media type") as caught:
        gemini().build(request)
    assert caught.value.status is Status.INVALID_ARGUMENT
    assert caught.value.field == "messages[1].parts[1].image"


def test_build_tools() -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    tools = (Tool("get_weather", "Weather of a city", schema), Tool("now", "", {}))
    assert gemini().build(chat(tools=tools)).json["tools"] == [
        {
            "functionDeclarations": [
                # Full JSON Schema (additionalProperties...), not Google's OpenAPI subset.
                {
                    "name": "get_weather",
                    "description": "Weather of a city",
                    "parametersJsonSchema": schema,
                },
                {"name": "now"},
            ]
        }
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (ToolChoice(ToolChoiceMode.AUTO), {"mode": "AUTO"}),
        (ToolChoice(ToolChoiceMode.NONE), {"mode": "NONE"}),
        (ToolChoice(ToolChoiceMode.REQUIRED), {"mode": "ANY"}),
        (ToolChoice(), {"mode": "AUTO"}),
        (
            ToolChoice(tool_name="get_weather"),
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
def test_build_tool_choice(choice: ToolChoice, expected: dict[str, Any]) -> None:
    body = gemini().build(chat(tool_choice=choice)).json
    assert body["toolConfig"] == {"functionCallingConfig": expected}


@pytest.mark.parametrize(
    ("generation", "expected"),
    [
        (GenerationParams(), None),
        (
            GenerationParams(
                max_tokens=100,
                temperature=0.0,
                top_p=0.9,
                top_k=40,
                stop=("END", "STOP"),
                presence_penalty=0.5,
                frequency_penalty=-0.5,
                seed=7,
            ),
            {
                "maxOutputTokens": 100,
                "temperature": 0.0,
                "topP": 0.9,
                "topK": 40,
                "stopSequences": ["END", "STOP"],
                "presencePenalty": 0.5,
                "frequencyPenalty": -0.5,
                "seed": 7,
            },
        ),
        (
            GenerationParams(reasoning_budget_tokens=1024),
            {"thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True}},
        ),
        (GenerationParams(reasoning_budget_tokens=0), {"thinkingConfig": {"thinkingBudget": 0}}),
    ],
    ids=["none", "all-sampling", "thinking", "no-thinking"],
)
def test_build_generation_config(
    generation: GenerationParams, expected: dict[str, Any] | None
) -> None:
    for request_ in (chat(generation=generation), CompletionRequest("c", "Hi", generation)):
        assert gemini().build(request_).json.get("generationConfig") == expected


def test_build_completion_is_a_one_turn_chat() -> None:
    request = CompletionRequest("c", "Once upon a time", GenerationParams(max_tokens=5))
    assert vertex().build(request).json == {
        "contents": [{"role": "user", "parts": [{"text": "Once upon a time"}]}],
        "generationConfig": {"maxOutputTokens": 5},
    }


def test_build_refuses_a_completion_suffix() -> None:
    with pytest.raises(GatewayError, match="suffix") as caught:
        gemini().build(CompletionRequest("c", "def f(", suffix="return x"))
    assert (caught.value.status, caught.value.field) == (Status.INVALID_ARGUMENT, "suffix")


@pytest.mark.parametrize(
    ("adapter", "dimensions", "body"),
    [
        (
            gemini(),
            None,
            {
                "requests": [
                    {"model": f"models/{MODEL}", "content": {"parts": [{"text": "a"}]}},
                    {"model": f"models/{MODEL}", "content": {"parts": [{"text": "b"}]}},
                ]
            },
        ),
        (
            gemini(),
            256,
            {
                "requests": [
                    {
                        "model": f"models/{MODEL}",
                        "outputDimensionality": 256,
                        "content": {"parts": [{"text": text}]},
                    }
                    for text in "ab"
                ]
            },
        ),
        (vertex(), None, {"instances": [{"content": "a"}, {"content": "b"}]}),
        (
            vertex(),
            256,
            {
                "instances": [{"content": "a"}, {"content": "b"}],
                "parameters": {"outputDimensionality": 256},
            },
        ),
    ],
    ids=["gemini", "gemini-dimensions", "vertex", "vertex-dimensions"],
)
def test_build_embeddings(adapter: GoogleAdapter, dimensions: int | None, body: Any) -> None:
    built = adapter.build(EmbeddingRequest("embed", ("a", "b"), dimensions))
    assert built.json == body


# --- stream decoding: recordings -----------------------------------------------


def gemini_decode(chunks: list[bytes]) -> tuple[list[Event], GatewayError | None]:
    return decode(GoogleStreamDecoder("gemini"), chunks)


THOUGHT = (
    "**Determining the Weather Inquiry**\n\nI've pinpointed the user's intent: they want the "
    "weather conditions in Florence, Italy. My plan is clear \u2013 I'll activate the `weather` "
    'tool. I will set the `location` parameter to "Florence, Italy" to obtain the relevant '
    "weather data. The query seems straightforward and easily resolved.\n\n\n"
)

# The thoughtSignature of gemini_stream_generate_content.txt's functionCall part.
RECORDED_SIGNATURE = (
    "CiQBvj72+y6VX8BA4jMLQJOJvw+XWxadOcgaygxn/UK4Wl8SjCEKZwG+Pvb7Gfy4jPaJj0DRut6taEkN"
    "dtSZxSjfNWcnSzfOegiWPYt8ESlIwsYXa0gyK1qw8k77vXOl1efSI2IaZ+csWYLR8nNVHPDSuqIrYpqD"
    "Ow2HolANfK3RhfSH7gj8KhfU/7/5MT4K6gEBvj72+0BHGlipqElObHh6c5pjNlcuG2Y10iFyHng/Gizm"
    "u18FkezguXlmR/smf3nQOuUv7wC4cOvxliBYuSEJIEOSbw5RaEFVjvwbHlOgr7Jfq0ltXOsBmpey/NK+"
    "VlQ9UMuPqwyTwlzA6qW+SGwQ4VSTQUZDzmWCJ24MHxcPoMIfeiGMsOsf3jrqLONcBrxw8YeszxFuXFg9"
    "5qYOVag3Sg4WMgLq4t1e7xorL2bnCcu+faOuV2Z30nVhogr3JcBMiXhXClKxIrbFr3bUyCYlL8H3h5tg"
    "10v9a5Zca0HJki7AXxFGMI+lgsc="
)

RECORDED: list[tuple[str, list[Event]]] = [
    (
        "gemini_stream_generate_content.txt",
        [
            Start("zwCzaYWfAbnoz7IPmc_m6Q4", "gemini-2.5-flash"),
            ReasoningDelta(THOUGHT),
            # Gemini 2.5 names no call: the decoder's deterministic id.
            ToolCallDelta(
                0, "call_0", "weather", '{"location": "Florence, Italy"}', RECORDED_SIGNATURE
            ),
            # Output counts the thoughts: 14 candidates + 62 thoughts.
            Usage(input_tokens=54, output_tokens=76, reasoning_tokens=62),
            # "STOP" after function calls: the caller must run them.
            Finish(FinishReason.TOOL_CALLS, "STOP"),
        ],
    ),
    (
        "gemini_stream_generate_content_text.txt",
        [
            Start("WgCzaZzmMLnoz7IP_czm6Q4", "gemini-2.5-flash"),
            TextDelta("The weather in Florence"),
            TextDelta(",Italy is 40 C."),
            Usage(input_tokens=127, output_tokens=12),
            Finish(FinishReason.STOP, "STOP"),
        ],
    ),
]


@pytest.mark.parametrize(("name", "expected"), RECORDED, ids=[r[0] for r in RECORDED])
def test_recording_decodes_the_same_at_every_split(name: str, expected: list[Event]) -> None:
    for chunks in splits(recording(name)):
        assert gemini_decode(chunks) == (expected, None), f"split at {len(chunks[0])}"


def test_recorded_tool_call_arguments_are_the_json_args() -> None:
    events, _ = gemini_decode([recording("gemini_stream_generate_content.txt")])
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [json.loads(call.arguments) for call in calls] == [{"location": "Florence, Italy"}]


def test_recorded_error_body_inside_a_stream() -> None:
    """An error replacing a chunk after HTTP 200 maps like the same error before it."""
    error = json.dumps(json.loads(recording("gemini_error_response.json")))
    body = recording("gemini_stream_generate_content_text.txt").split(b"\r\n\r\n")[0]
    stream = body + b"\r\n\r\ndata: " + error.encode() + b"\r\n\r\n"
    for chunks in splits(stream):
        events, raised = decode(GoogleStreamDecoder("vertex_ai"), chunks)
        assert events == [
            Start("WgCzaZzmMLnoz7IP_czm6Q4", "gemini-2.5-flash"),
            TextDelta("The weather in Florence"),
        ]
        assert raised is not None
        assert error_fields(raised) == (
            Status.INVALID_ARGUMENT,
            "UPSTREAM_BAD_REQUEST",
            "vertex_ai: Unsupported MIME type: bad/mime_type",
            {"provider": "vertex_ai", "http_status": "400", "upstream_type": "INVALID_ARGUMENT"},
        )


# --- stream decoding: synthetic streams ----------------------------------------


def sse(*chunks: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n" for chunk in chunks)


def chunk(
    *parts: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    payload: dict[str, Any] = {
        "candidates": [candidate],
        "modelVersion": MODEL,
        "responseId": "r1",
    }
    if usage is not None:
        payload["usageMetadata"] = usage
    return payload


def decode_all(body: bytes) -> list[Event]:
    events, error = gemini_decode([body])
    assert error is None
    return events


def test_parts_of_every_kind() -> None:
    body = sse(
        chunk({"text": "Hmm", "thought": True}, {"text": ""}),
        chunk(
            {"text": "Sunny"},
            {"executableCode": {"language": "PYTHON", "code": "1+1"}},
            {"functionCall": {"id": "k3x9", "name": "a", "args": {"x": 1}}},
            {"functionCall": {"name": "b"}, "thoughtSignature": "c2ln"},
            {"text": "!", "thoughtSignature": "c2ln"},
        ),
        chunk({"functionCall": {"name": "c", "args": {}}}, finish="STOP"),
    )
    assert decode_all(body) == [
        Start("r1", MODEL),
        ReasoningDelta("Hmm"),
        TextDelta("Sunny"),
        ToolCallDelta(0, "k3x9", "a", '{"x": 1}'),
        # Arguments always add up to a JSON object, also for a call without any.
        ToolCallDelta(1, "call_1", "b", "{}", "c2ln"),
        TextDelta("!"),
        # A text part's signature ends it like a reasoning block.
        ReasoningSignature("c2ln"),
        ToolCallDelta(2, "call_2", "c", "{}"),
        Usage(reported=False),
        Finish(FinishReason.TOOL_CALLS, "STOP"),
    ]


def test_usage_is_cumulative_and_counts_cache_tool_use_and_thoughts() -> None:
    body = sse(
        chunk({"text": "a"}, usage={"promptTokenCount": 1000, "cachedContentTokenCount": 800}),
        chunk({"text": "b"}, finish="STOP"),
        # Some answers report the final counts after the finish.
        {
            "usageMetadata": {
                "promptTokenCount": 1000,
                "cachedContentTokenCount": 800,
                "toolUsePromptTokenCount": 50,
                "candidatesTokenCount": 20,
                "thoughtsTokenCount": 30,
            },
            "modelVersion": MODEL,
            "responseId": "r1",
        },
    )
    assert decode_all(body)[-2:] == [
        Usage(input_tokens=1050, output_tokens=50, cached_input_tokens=800, reasoning_tokens=30),
        Finish(FinishReason.STOP, "STOP"),
    ]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("STOP", FinishReason.STOP),
        ("MAX_TOKENS", FinishReason.LENGTH),
        *(
            (raw, FinishReason.CONTENT_FILTER)
            for raw in (
                "SAFETY",
                "RECITATION",
                "BLOCKLIST",
                "PROHIBITED_CONTENT",
                "SPII",
                "IMAGE_SAFETY",
                "LANGUAGE",
            )
        ),
        ("MALFORMED_FUNCTION_CALL", FinishReason.OTHER),
        ("OTHER", FinishReason.OTHER),
        ("FINISH_REASON_UNSPECIFIED", FinishReason.OTHER),
        ("A_FUTURE_REASON", FinishReason.OTHER),
    ],
)
def test_finish_reasons(raw: str, reason: FinishReason) -> None:
    assert decode_all(sse(chunk({"text": "a"}, finish=raw)))[-1] == Finish(reason, raw)


def test_only_a_plain_stop_after_tool_calls_becomes_tool_calls() -> None:
    call = {"functionCall": {"name": "f", "args": {}}}
    events = decode_all(sse(chunk(call, finish="MAX_TOKENS")))
    assert events[-1] == Finish(FinishReason.LENGTH, "MAX_TOKENS")


def test_blocked_prompt_finishes_as_content_filter() -> None:
    blocked = {
        "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
        "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
        "modelVersion": MODEL,
        "responseId": "r2",
    }
    assert decode_all(sse(blocked)) == [
        Start("r2", MODEL),
        Usage(input_tokens=9),
        Finish(FinishReason.CONTENT_FILTER, "PROHIBITED_CONTENT"),
    ]


@pytest.mark.parametrize(
    ("error", "http_status", "status"),
    [
        ({"code": 400, "status": "INVALID_ARGUMENT"}, 400, Status.INVALID_ARGUMENT),
        ({"code": 403, "status": "PERMISSION_DENIED"}, 403, Status.INTERNAL),
        ({"code": 429, "status": "RESOURCE_EXHAUSTED"}, 429, Status.RESOURCE_EXHAUSTED),
        ({"code": 500, "status": "INTERNAL"}, 500, Status.UNAVAILABLE),
        ({"code": 503, "status": "UNAVAILABLE"}, 503, Status.UNAVAILABLE),
        ({"code": 504, "status": "DEADLINE_EXCEEDED"}, 504, Status.DEADLINE_EXCEEDED),
        ({"code": 13, "status": "INTERNAL"}, 500, Status.UNAVAILABLE),  # a gRPC code
        ({"status": "UNKNOWN"}, 500, Status.UNAVAILABLE),
    ],
)
def test_error_chunk_maps_like_its_http_status(
    error: dict[str, Any], http_status: int, status: Status
) -> None:
    decoder = GoogleStreamDecoder("gemini")
    # An error before any other event of its chunk is raised at once.
    with pytest.raises(GatewayError) as caught:
        decoder.feed(sse({"error": {**error, "message": "boom"}}))
    assert caught.value.status is status
    assert caught.value.metadata["http_status"] == str(http_status)
    assert caught.value.metadata["upstream_type"] == error["status"]


def test_error_after_events_of_its_chunk_is_raised_next() -> None:
    error = {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}
    decoder = GoogleStreamDecoder("gemini")
    assert decoder.feed(sse(chunk({"text": "Hi"}), error)) == [Start("r1", MODEL), TextDelta("Hi")]
    assert decoder.failure is not None
    with pytest.raises(GatewayError, match="gemini: overloaded"):
        decoder.feed(b"")
    with pytest.raises(GatewayError, match="gemini: overloaded"):
        decoder.close()


TEXT_STREAM = recording("gemini_stream_generate_content_text.txt")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "gemini: stream ended without a finishReason"),
        (TEXT_STREAM.split(b"\r\n\r\n")[0], "gemini: stream ended without a finishReason"),
        (b"data: {not json\r\n\r\n", "gemini: unreadable message event"),
        (b"data: [1, 2]\r\n\r\n", "gemini: unreadable message event"),
        (sse(chunk({"functionCall": {"args": {}}})), "gemini: unreadable message event"),
        (TEXT_STREAM[: TEXT_STREAM.rindex(b"}")], "gemini: unreadable message event"),
    ],
    ids=["empty", "no-finish", "bad-json", "not-an-object", "call-without-name", "cut-mid-json"],
)
def test_protocol_errors(body: bytes, message: str) -> None:
    _, raised = gemini_decode([body])
    assert raised is not None
    assert (raised.status, raised.reason) == (Status.UNAVAILABLE, "UPSTREAM_PROTOCOL_ERROR")
    assert raised.message.startswith(message)


# --- stream decoding: properties -----------------------------------------------

RECORDINGS = [recording(name) for name, _ in RECORDED]
EXPECTED = [expected for _, expected in RECORDED]
CUTS = st.lists(st.integers(min_value=0, max_value=3_000), max_size=30)


@settings(max_examples=150, deadline=None)
@given(which=st.integers(0, len(RECORDINGS) - 1), cuts=CUTS)
def test_any_chunking_of_a_recording_gives_the_same_events(which: int, cuts: list[int]) -> None:
    assert gemini_decode(chunked(RECORDINGS[which], cuts)) == (EXPECTED[which], None)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), cuts=CUTS)
def test_malformed_streams_end_in_an_upstream_error(data: st.DataObject, cuts: list[int]) -> None:
    body = data.draw(st.sampled_from(RECORDINGS))
    events = body.split(b"\r\n\r\n")[:-1]
    kind = data.draw(st.sampled_from(["garbage", "truncated", "corrupted-frame"]))
    if kind == "garbage":
        # No finishReason can come out of random bytes.
        broken = data.draw(st.binary(max_size=300))
    elif kind == "truncated":
        # Up to the last event's closing brace, no further: after it the body is complete.
        broken = body[: data.draw(st.integers(0, body.rindex(b"}")))]
    else:
        index = data.draw(st.integers(0, len(events) - 1))
        frame = events[index]
        # A proper prefix of a JSON object is never JSON.
        cut = data.draw(st.integers(len(b"data: "), len(frame) - 1))
        events[index] = frame[:cut]
        broken = b"\r\n\r\n".join(events) + b"\r\n\r\n"
    # decode() lets only GatewayError through: any other exception fails here.
    _, raised = gemini_decode(chunked(broken, cuts))
    assert raised is not None
    assert raised.status is Status.UNAVAILABLE


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"data: \xff\xfe\r\n\r\n", "gemini: event stream is not UTF-8"),
    ],
    ids=["not-utf8"],
)
def test_bad_framing_is_a_protocol_error(body: bytes, message: str) -> None:
    _, raised = gemini_decode([body])
    assert raised is not None
    assert (raised.status, raised.reason) == (Status.UNAVAILABLE, "UPSTREAM_PROTOCOL_ERROR")
    assert raised.message.startswith(message)


# --- HttpAdapter.stream against a loopback upstream ---------------------------


async def test_stream_end_to_end(pool: HttpClientPool) -> None:
    async with FakeUpstream(Reply(chunks=[TEXT_STREAM])) as upstream:
        config = {"provider": "gemini", "name": MODEL, "api_key": "AIza-test"}
        settings = GeminiSettings.model_validate({**config, "api_base": upstream.base_url})
        adapter = settings.create_adapter(pool)
        assert [event async for event in adapter.stream(chat())] == RECORDED[1][1]
    (request,) = upstream.requests
    assert request.path == f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    assert request.headers["x-goog-api-key"] == "AIza-test"
    assert request.json() == gemini().build(chat()).json


async def test_stream_maps_the_http_error(pool: HttpClientPool) -> None:
    reply = Reply(
        400, [recording("gemini_error_response.json")], {"content-type": "application/json"}
    )
    async with FakeUpstream(reply) as upstream:
        fields = {"provider": "vertex_ai", "name": MODEL, "project": "my-project"}
        settings = VertexAISettings.model_validate({**fields, "api_base": upstream.base_url})
        adapter = settings.create_adapter(pool)
        with pytest.raises(GatewayError) as caught:
            [event async for event in adapter.stream(chat())]
    assert caught.value.message == "vertex_ai: Unsupported MIME type: bad/mime_type"


# --- embeddings ----------------------------------------------------------------


def decode_embeddings(adapter: GoogleAdapter, body: bytes) -> list[Event]:
    """The events of an embeddings body, checked to be the same whatever the chunking."""
    outcomes = []
    for chunks in ([body], [body[:7], body[7:]], [bytes([b]) for b in body]):
        events, error = decode(adapter.decoder(EMBED), chunks)
        outcomes.append((events, error and error_fields(error), error))
    assert all(outcome[:2] == outcomes[0][:2] for outcome in outcomes)
    events, _, error = outcomes[0]
    if error is not None:
        raise error
    return events


def test_gemini_embeddings() -> None:
    body = b'{"embeddings": [{"values": [0.1, -0.2]}, {"values": [0.3, 0]}]}'
    assert decode_embeddings(gemini(), body) == [
        Start("", ""),
        Embeddings(((0.1, -0.2), (0.3, 0))),
        # batchEmbedContents reports no usage.
        Usage(reported=False),
        Finish(FinishReason.STOP),
    ]


@pytest.mark.parametrize(
    ("statistics", "usage"),
    [
        (
            [{"token_count": 3, "truncated": False}, {"token_count": 4.0, "truncated": False}],
            Usage(input_tokens=7),
        ),
        ([{"token_count": 3}, None], Usage(input_tokens=3, reported=False)),
    ],
    ids=["reported", "partly-reported"],
)
def test_vertex_embeddings(statistics: list[dict[str, Any] | None], usage: Usage) -> None:
    predictions = [
        {"embeddings": {"values": [float(i)], **({"statistics": s} if s else {})}}
        for i, s in enumerate(statistics)
    ]
    body = json.dumps({"predictions": predictions, "metadata": {}}).encode()
    assert decode_embeddings(vertex(), body) == [
        Start("", ""),
        Embeddings(((0.0,), (1.0,))),
        usage,
        Finish(FinishReason.STOP),
    ]


@pytest.mark.parametrize(
    ("adapter", "body", "reason"),
    [
        (gemini(), b'{"embeddings": [{"value": [1]}]}', "UPSTREAM_PROTOCOL_ERROR"),
        (gemini(), b"", "UPSTREAM_PROTOCOL_ERROR"),
        (vertex(), b'{"predictions": [{"embeddings": {}}]}', "UPSTREAM_PROTOCOL_ERROR"),
        (vertex(), b"[1]", "UPSTREAM_PROTOCOL_ERROR"),
        (
            vertex(),
            b'{"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}',
            "UPSTREAM_RATE_LIMITED",
        ),
    ],
    ids=["gemini-no-values", "empty", "vertex-no-values", "not-an-object", "error-object"],
)
def test_embeddings_errors(adapter: GoogleAdapter, body: bytes, reason: str) -> None:
    with pytest.raises(GatewayError) as caught:
        decode_embeddings(adapter, body)
    assert caught.value.reason == reason


# --- HTTP errors ---------------------------------------------------------------


def google_error(code: int, status: str, message: str, *details: dict[str, Any]) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = list(details)
    return json.dumps({"error": error}).encode()


RETRY_INFO = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}
QUOTA_FAILURE = {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []}


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected", "retry_after"),
    [
        (
            400,
            {},
            recording("gemini_error_response.json"),
            (
                Status.INVALID_ARGUMENT,
                "UPSTREAM_BAD_REQUEST",
                "gemini: Unsupported MIME type: bad/mime_type",
                {"provider": "gemini", "http_status": "400", "upstream_type": "INVALID_ARGUMENT"},
            ),
            None,
        ),
        (
            429,
            {},
            google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota.",
                QUOTA_FAILURE,
                RETRY_INFO,
            ),
            (
                Status.RESOURCE_EXHAUSTED,
                "UPSTREAM_RATE_LIMITED",
                "gemini: You exceeded your current quota.",
                {"provider": "gemini", "http_status": "429", "upstream_type": "RESOURCE_EXHAUSTED"},
            ),
            37.0,
        ),
        (
            429,
            {"retry-after": "5"},
            google_error(429, "RESOURCE_EXHAUSTED", "Slow down.", RETRY_INFO),
            (
                Status.RESOURCE_EXHAUSTED,
                "UPSTREAM_RATE_LIMITED",
                "gemini: Slow down.",
                {"provider": "gemini", "http_status": "429", "upstream_type": "RESOURCE_EXHAUSTED"},
            ),
            5.0,
        ),
        (
            429,
            {},
            google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "Slow down.",
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "soon"},
            ),
            (
                Status.RESOURCE_EXHAUSTED,
                "UPSTREAM_RATE_LIMITED",
                "gemini: Slow down.",
                {"provider": "gemini", "http_status": "429", "upstream_type": "RESOURCE_EXHAUSTED"},
            ),
            None,
        ),
        (
            403,
            {},
            google_error(403, "PERMISSION_DENIED", "Permission denied on project p"),
            (
                Status.INTERNAL,
                "UPSTREAM_AUTH_FAILED",
                "gemini rejected the gateway's credentials (HTTP 403)",
                {"provider": "gemini", "http_status": "403", "upstream_type": "PERMISSION_DENIED"},
            ),
            None,
        ),
        (
            404,
            {},
            google_error(404, "NOT_FOUND", "models/gemini-9 is not found"),
            (
                Status.FAILED_PRECONDITION,
                "UPSTREAM_NOT_FOUND",
                "gemini: models/gemini-9 is not found",
                {"provider": "gemini", "http_status": "404", "upstream_type": "NOT_FOUND"},
            ),
            None,
        ),
        (
            503,
            {},
            google_error(503, "UNAVAILABLE", "The model is overloaded."),
            (
                Status.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                "gemini: The model is overloaded.",
                {"provider": "gemini", "http_status": "503", "upstream_type": "UNAVAILABLE"},
            ),
            None,
        ),
        (
            502,
            {},
            b"<html>" + b"x" * 1000,
            (
                Status.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                "gemini: <html>" + "x" * 494,
                {"provider": "gemini", "http_status": "502"},
            ),
            None,
        ),
        (
            500,
            {},
            b"",
            (
                Status.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                "gemini: HTTP 500 with an empty body",
                {"provider": "gemini", "http_status": "500"},
            ),
            None,
        ),
    ],
    ids=[
        "400-recorded",
        "429-retry-info",
        "429-header-wins",
        "429-bad-retry-info",
        "403",
        "404",
        "503",
        "non-json",
        "empty",
    ],
)
def test_parse_error(
    status: int,
    headers: dict[str, str],
    body: bytes,
    expected: tuple[Status, str, str, dict[str, str]],
    retry_after: float | None,
) -> None:
    error = gemini().parse_error(status, headers, body)
    assert error_fields(error) == expected
    assert error.retry_after == retry_after


def test_parse_error_names_vertex() -> None:
    error = vertex().parse_error(401, {}, google_error(401, "UNAUTHENTICATED", "bad token"))
    assert error_fields(error) == (
        Status.INTERNAL,
        "UPSTREAM_AUTH_FAILED",
        "vertex_ai rejected the gateway's credentials (HTTP 401)",
        {"provider": "vertex_ai", "http_status": "401", "upstream_type": "UNAUTHENTICATED"},
    )


def test_an_invalid_key_is_the_gateways_credential_failure() -> None:
    body = json.dumps(
        {
            "error": {
                "code": 400,
                "message": "API key not valid. Please pass a valid API key.",
                "status": "INVALID_ARGUMENT",
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                    }
                ],
            }
        }
    ).encode()
    error = gemini().parse_error(400, {}, body)
    assert (error.status, error.reason) == (Status.INTERNAL, "UPSTREAM_AUTH_FAILED")
