"""Bedrock adapter: settings, SigV4 and bearer auth, Converse and InvokeModel
bodies, eventstream decoding on recorded frames split at every boundary and
on malformed input, and error mapping. No network: the AWS credential chain
is pinned, and HTTP goes to a loopback upstream."""

from __future__ import annotations

import datetime
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import botocore.session
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.credentials import (
    Credentials,
    RefreshableCredentials,
)
from botocore.exceptions import CredentialRetrievalError
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
    RedactedReasoning,
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
from sluice.providers.bedrock import (
    BedrockAdapter,
    BedrockEmbeddingDecoder,
    BedrockSettings,
    BedrockStreamDecoder,
)
from sluice.providers.bounds import DEFAULT_MAX_EVENT_BYTES
from sluice.providers.http import HttpClientPool, UpstreamClient
from tests.decoding import chunked, decode
from tests.eventstream import frame, frame_ends, framed, prelude
from tests.recordings import recording, splits
from tests.upstream import FakeUpstream, Reply, Script, SeenRequest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sluice.providers.base import StreamDecoder

MODEL = "us.amazon.nova-micro-v1:0"
ENDPOINT = "https://bedrock-runtime.us-east-1.amazonaws.com"
CONVERSE_URL = f"{ENDPOINT}/model/us.amazon.nova-micro-v1%3A0/converse-stream"
NOW = datetime.datetime(2025, 1, 1, 12, 0, 0)
ErrorFields = tuple[Status, str, str, dict[str, str]]

# --- helpers ---------------------------------------------------------------------


def settings_of(**fields: Any) -> BedrockSettings:
    return BedrockSettings.model_validate(
        {"provider": "bedrock", "name": MODEL, "region": "us-east-1", **fields}
    )


def adapter(client: UpstreamClient | None = None, **fields: Any) -> BedrockAdapter:
    """Static keys unless `fields` say otherwise: the AWS chain stays out."""
    if not {"api_key", "bedrock_api_key", "aws_access_key_id"} & fields.keys():
        fields |= {"aws_access_key_id": "AKID", "aws_secret_access_key": "SECRET"}
    # build, decoder and parse_error never touch the client.
    return BedrockAdapter(settings_of(**fields), client)  # type: ignore[arg-type]


def chat(*messages: Message, **fields: Any) -> ChatRequest:
    return ChatRequest("nova", messages or (user("Hi"),), **fields)


def user(text: str) -> Message:
    return Message(Role.USER, (TextPart(text),))


def body_of(request: ChatRequest | CompletionRequest | EmbeddingRequest, **fields: Any) -> Any:
    return adapter(**fields).build(request).json


def error_fields(error: GatewayError) -> ErrorFields:
    return error.status, error.reason, error.message, error.metadata


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """SigV4 signs the time: fix it so that signatures are reproducible."""
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: NOW)


def pin_aws_chain(monkeypatch: pytest.MonkeyPatch, credentials: Any) -> list[None]:
    """Make botocore's credential chain answer `credentials` (None: nothing
    found); the returned list grows by one per lookup."""
    lookups: list[None] = []

    def get_credentials(self: Any) -> Any:
        lookups.append(None)
        return credentials

    monkeypatch.setattr(botocore.session.Session, "get_credentials", get_credentials)
    return lookups


# --- eventstream frames -----------------------------------------------------------


def event(kind: str, **payload: Any) -> bytes:
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return frame(headers, json.dumps(payload).encode())


def exception(kind: str, **payload: Any) -> bytes:
    headers = {
        ":message-type": "exception",
        ":exception-type": kind,
        ":content-type": "application/json",
    }
    return frame(headers, json.dumps(payload).encode())


def delta(index: int, **content: Any) -> bytes:
    return event("contentBlockDelta", contentBlockIndex=index, delta=content, p="abc")


MESSAGE_START = event("messageStart", role="assistant", p="ab")


def message_end(stop_reason: str = "end_turn", usage: dict[str, int] | None = None) -> bytes:
    usage = usage or {"inputTokens": 3, "outputTokens": 5, "totalTokens": 8}
    return event("messageStop", stopReason=stop_reason) + event(
        "metadata", usage=usage, metrics={"latencyMs": 1}
    )


def run(
    chunks: list[bytes], decoder: StreamDecoder | None = None
) -> tuple[list[Event], GatewayError | None]:
    """The events of a body fed in `chunks`, and the error it ended with."""
    return decode(decoder or BedrockStreamDecoder(MODEL), chunks)


def protocol_error(chunks: list[bytes]) -> str:
    """The message of the protocol error decoding `chunks` must end in."""
    _, raised = run(chunks)
    assert raised is not None
    assert (raised.status, raised.reason) == (Status.UNAVAILABLE, "UPSTREAM_PROTOCOL_ERROR")
    return raised.message


def test_frame_helper_reproduces_a_recorded_frame() -> None:
    first = recording("bedrock_converse_stream_text.bin")[:143]
    headers = {
        ":event-type": "messageStart",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert frame(headers, b'{"p":"abcdefghijklmnopqr","role":"assistant"}') == first


# --- settings ----------------------------------------------------------------------


def test_settings_default_endpoint_is_regional() -> None:
    assert settings_of(region="eu-central-1").base_url == (
        "https://bedrock-runtime.eu-central-1.amazonaws.com"
    )


def test_settings_accept_prefixed_key_and_base_without_region() -> None:
    config = BedrockSettings.model_validate(
        {
            "provider": "bedrock",
            "name": MODEL,
            "bedrock_api_key": "bedrock-api-key-1",
            "bedrock_api_base": "https://vpce-1.bedrock-runtime.example/",
        }
    )
    built = BedrockAdapter(config, None).build(chat())  # type: ignore[arg-type]
    assert (
        built.url
        == "https://vpce-1.bedrock-runtime.example/model/us.amazon.nova-micro-v1%3A0/converse-stream"
    )
    assert built.headers["authorization"] == "Bearer bedrock-api-key-1"


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"region": None}, "region is required unless api_base is given"),
        (
            {"region": None, "api_base": "https://proxy.example"},
            "region is required to sign requests",
        ),
        ({"region": "us-east-1/evil"}, "String should match pattern"),
        ({"aws_access_key_id": "AKID"}, "together"),
        ({"aws_secret_access_key": "SECRET"}, "together"),
        ({"aws_session_token": "TOKEN"}, "aws_session_token needs"),
        (
            {"api_key": "k", "aws_access_key_id": "AKID", "aws_secret_access_key": "S"},
            "not both",
        ),
        ({"embedding_format": "openai"}, "embedding_format"),
        ({"aws_profile": "dev"}, "Extra inputs are not permitted"),
    ],
)
def test_settings_reject(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        settings_of(**fields)


def test_secrets_stay_out_of_repr() -> None:
    config = settings_of(
        aws_access_key_id="AKID",
        aws_secret_access_key="SECRET-KEY-123",
        aws_session_token="SESSION-TOKEN-123",
    )
    for text in (repr(config), str(config)):
        assert "SECRET-KEY-123" not in text
        assert "SESSION-TOKEN-123" not in text
    assert "bedrock-key-123" not in repr(settings_of(api_key="bedrock-key-123"))


# --- build: auth ---------------------------------------------------------------------


def test_build_with_api_key_sends_a_bearer_token_and_no_signature() -> None:
    built = adapter(api_key="bedrock-key").build(chat())
    assert built.method == "POST"
    assert built.url == CONVERSE_URL
    assert built.headers == {
        "content-type": "application/json",
        "authorization": "Bearer bedrock-key",
    }
    assert built.content == b'{"messages":[{"role":"user","content":[{"text":"Hi"}]}]}'


@pytest.mark.usefixtures("frozen_clock")
def test_build_signs_the_exact_body_bytes_with_sigv4() -> None:
    built = adapter(
        aws_access_key_id="AKID", aws_secret_access_key="SECRET", aws_session_token="TOKEN"
    ).build(chat(generation=GenerationParams(temperature=0.5)))
    # Sent as serialized once, compactly: the signature covers these bytes.
    assert built.content == json.dumps(built.json, separators=(",", ":")).encode()
    assert built.headers == {
        "content-type": "application/json",
        "x-amz-date": "20250101T120000Z",
        "x-amz-security-token": "TOKEN",
        "authorization": (
            "AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/bedrock/aws4_request, "
            "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, "
            "Signature=" + resign(built.url, built.content, Credentials("AKID", "SECRET", "TOKEN"))
        ),
    }
    assert "SECRET" not in json.dumps(dict(built.headers))


def resign(url: str, content: bytes | None, credentials: Any) -> str:
    """botocore's own signature of the request (at the frozen time)."""
    request = AWSRequest(
        method="POST", url=url, data=content, headers={"Content-Type": "application/json"}
    )
    SigV4Auth(credentials, "bedrock", "us-east-1").add_auth(request)
    authorization: str = request.headers["Authorization"]
    return authorization.rpartition("Signature=")[2]


@pytest.mark.usefixtures("frozen_clock")
def test_build_signature_matches_the_sigv4_spec() -> None:
    # Worked out by hand from the SigV4 spec: the canonical path encodes the
    # sent path once more (".../us.amazon.nova-micro-v1%253A0/converse-stream").
    authorization = adapter().build(chat()).headers["authorization"]
    assert authorization == (
        "AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/bedrock/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date, "
        "Signature=1025b535a349fddf8425effe1f1bf6c2cede4526b2275ec18bb8552bfd493fcd"
    )


@pytest.mark.parametrize(
    "model",
    [
        "us.anthropic.claude-3-5-haiku-20241022-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0",
        "arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v2:0",
    ],
)
def test_model_id_is_encoded_as_botocore_encodes_it(model: str) -> None:
    built = adapter(name=model).build(chat())
    assert built.url == botocore_converse_stream_url(model)
    # One path segment, however many '/' the id holds.
    assert built.url.removeprefix(ENDPOINT).count("/") == 3


def botocore_converse_stream_url(model: str) -> str:
    """The URL botocore's own bedrock-runtime client calls (intercepted before sending)."""
    client = botocore.session.Session().create_client(
        "bedrock-runtime",
        region_name="us-east-1",
        aws_access_key_id="AKID",
        aws_secret_access_key="SECRET",
    )
    urls: list[str] = []

    class EmptyBody:
        def stream(self, **_: Any) -> Iterator[bytes]:
            return iter([b""])

    def capture(request: Any, **_: Any) -> Any:
        urls.append(request.url)
        return AWSResponse(request.url, 200, {}, EmptyBody())

    client.meta.events.register("before-send", capture)
    client.converse_stream(modelId=model, messages=[{"role": "user", "content": [{"text": "Hi"}]}])
    client.close()
    return urls[0]


@pytest.mark.usefixtures("frozen_clock")
def test_build_takes_credentials_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "SECRETENV")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "TOKENENV")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    built = BedrockAdapter(settings_of(), None).build(chat())  # type: ignore[arg-type]
    assert built.headers["x-amz-security-token"] == "TOKENENV"
    assert built.headers["authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKIDENV/20250101/us-east-1/bedrock/aws4_request, "
    )
    signature = resign(built.url, built.content, Credentials("AKIDENV", "SECRETENV", "TOKENENV"))
    assert built.headers["authorization"].endswith(f"Signature={signature}")


def test_refreshable_credentials_are_resolved_once_and_read_per_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refreshed: list[int] = []

    def refresh() -> dict[str, str]:
        refreshed.append(len(refreshed) + 1)
        # Within botocore's mandatory refresh window: the next read refreshes again.
        expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5)
        return {
            "access_key": f"AKID{len(refreshed)}",
            "secret_key": "SECRET",
            "token": f"TOKEN{len(refreshed)}",
            "expiry_time": expiry.isoformat(),
        }

    credentials = RefreshableCredentials.create_from_metadata(
        refresh(), refresh_using=refresh, method="test"
    )
    lookups = pin_aws_chain(monkeypatch, credentials)
    bedrock = BedrockAdapter(settings_of(), None)  # type: ignore[arg-type]
    tokens = [bedrock.build(chat()).headers["x-amz-security-token"] for _ in range(2)]
    assert tokens == ["TOKEN2", "TOKEN3"]
    assert refreshed == [1, 2, 3]
    assert len(lookups) == 1


def test_build_without_any_credentials_fails_without_calling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pin_aws_chain(monkeypatch, None)
    bedrock = BedrockAdapter(settings_of(), None)  # type: ignore[arg-type]
    with pytest.raises(GatewayError) as caught:
        bedrock.build(chat())
    assert error_fields(caught.value) == (
        Status.INTERNAL,
        "UPSTREAM_AUTH_FAILED",
        "bedrock: no AWS credentials found (settings, environment, shared files, "
        "container or instance role)",
        {"provider": "bedrock"},
    )


def test_build_when_credentials_cannot_be_refreshed(monkeypatch: pytest.MonkeyPatch) -> None:
    def refresh() -> dict[str, str]:
        raise CredentialRetrievalError(provider="sts", error_msg="SECRET-ish detail")

    expired = {
        "access_key": "AKID",
        "secret_key": "SECRET",
        "token": "TOKEN",
        "expiry_time": "2000-01-01T00:00:00Z",
    }
    pin_aws_chain(
        monkeypatch,
        RefreshableCredentials.create_from_metadata(expired, refresh_using=refresh, method="test"),
    )
    bedrock = BedrockAdapter(settings_of(), None)  # type: ignore[arg-type]
    with pytest.raises(GatewayError) as caught:
        bedrock.build(chat())
    assert error_fields(caught.value) == (
        Status.UNAVAILABLE,
        "UPSTREAM_UNAVAILABLE",
        "bedrock: AWS credentials could not be refreshed (CredentialRetrievalError)",
        {"provider": "bedrock"},
    )


# --- build: bodies -------------------------------------------------------------------


def test_build_moves_system_messages_to_top_level() -> None:
    request = chat(
        Message(Role.SYSTEM, (TextPart("Be brief."), TextPart(""))),
        user("Hi"),
        Message(Role.SYSTEM, (TextPart("Answer in French."),)),
        user("Again"),
    )
    assert body_of(request) == {
        "system": [{"text": "Be brief."}, {"text": "Answer in French."}],
        # With the system turn gone, the two user turns are adjacent: one turn.
        "messages": [{"role": "user", "content": [{"text": "Hi"}, {"text": "Again"}]}],
    }


def test_build_tool_round_trip_merges_results_into_one_user_turn() -> None:
    request = chat(
        user("Weather in Paris and Rome?"),
        Message(
            Role.ASSISTANT,
            (
                TextPart(""),  # clients send it beside tool calls; Bedrock rejects it
                ToolCallPart("tooluse_1", "get_weather", '{"city": "Paris"}'),
                ToolCallPart("tooluse_2", "get_weather", '{"city": "Rome"}'),
                ToolCallPart("tooluse_3", "get_time", ""),
            ),
        ),
        Message(Role.TOOL, (ToolResultPart("tooluse_1", "18C"),)),
        Message(Role.TOOL, (ToolResultPart("tooluse_2", "no data", is_error=True),)),
        Message(Role.TOOL, (ToolResultPart("tooluse_3", "12:00"),)),
        user("Thanks"),
    )
    assert body_of(request)["messages"] == [
        {"role": "user", "content": [{"text": "Weather in Paris and Rome?"}]},
        {
            "role": "assistant",
            "content": [
                {
                    "toolUse": {
                        "toolUseId": "tooluse_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    }
                },
                {
                    "toolUse": {
                        "toolUseId": "tooluse_2",
                        "name": "get_weather",
                        "input": {"city": "Rome"},
                    }
                },
                {"toolUse": {"toolUseId": "tooluse_3", "name": "get_time", "input": {}}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "18C"}]}},
                {
                    "toolResult": {
                        "toolUseId": "tooluse_2",
                        "content": [{"text": "no data"}],
                        "status": "error",
                    }
                },
                {"toolResult": {"toolUseId": "tooluse_3", "content": [{"text": "12:00"}]}},
                {"text": "Thanks"},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("media_type", "image_format"),
    [
        ("image/png", "png"),
        ("image/jpeg", "jpeg"),
        ("image/JPG", "jpeg"),
        ("image/gif", "gif"),
        ("image/webp", "webp"),
    ],
)
def test_build_inline_images(media_type: str, image_format: str) -> None:
    message = Message(
        Role.USER, (ImagePart(data=b"\x89PNG", media_type=media_type), TextPart("What is it?"))
    )
    assert body_of(chat(message))["messages"][0]["content"] == [
        {"image": {"format": image_format, "source": {"bytes": "iVBORw=="}}},
        {"text": "What is it?"},
    ]


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        (ImagePart(url="https://example.com/cat.png"), "inline images only, not URLs"),
        (ImagePart(data=b"BM", media_type="image/bmp"), "not 'image/bmp'"),
        (ImagePart(data=b"\x89PNG"), "not ''"),
    ],
)
def test_build_refuses_images_converse_cannot_take(image: ImagePart, problem: str) -> None:
    request = chat(user("Hi"), Message(Role.USER, (TextPart("Look:"), image)))
    with pytest.raises(GatewayError, match=problem) as caught:
        adapter().build(request)
    assert caught.value.status is Status.INVALID_ARGUMENT
    assert caught.value.field == "messages[1].parts[1].image"


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [("{not json", "not JSON"), ('["a"]', "must be a JSON object")],
)
def test_build_rejects_bad_tool_call_arguments(arguments: str, problem: str) -> None:
    request = chat(
        user("Hi"),
        Message(Role.ASSISTANT, (TextPart("Let me look."), ToolCallPart("t", "f", arguments))),
    )
    with pytest.raises(GatewayError, match=problem) as caught:
        adapter().build(request)
    assert caught.value.status is Status.INVALID_ARGUMENT
    assert caught.value.field == "messages[1].parts[1].tool_call.arguments"


TOOLS = (
    Tool("get_weather", "Weather of a city", {"type": "object", "properties": {}}),
    Tool("now", "", {}),
)
TOOL_SPECS = [
    {
        "toolSpec": {
            "name": "get_weather",
            "description": "Weather of a city",
            "inputSchema": {"json": {"type": "object", "properties": {}}},
        }
    },
    # Bedrock requires a schema and rejects an empty description.
    {"toolSpec": {"name": "now", "inputSchema": {"json": {"type": "object", "properties": {}}}}},
]
TOOL_HISTORY = (
    user("Time?"),
    Message(Role.ASSISTANT, (ToolCallPart("tooluse_1", "now", "{}"),)),
    Message(Role.TOOL, (ToolResultPart("tooluse_1", "12:00"),)),
)


@pytest.mark.parametrize(
    ("messages", "choice", "expected"),
    [
        ((), None, {"tools": TOOL_SPECS}),
        ((), ToolChoice(ToolChoiceMode.AUTO), {"tools": TOOL_SPECS, "toolChoice": {"auto": {}}}),
        ((), ToolChoice(ToolChoiceMode.REQUIRED), {"tools": TOOL_SPECS, "toolChoice": {"any": {}}}),
        (
            (),
            ToolChoice(tool_name="get_weather"),
            {"tools": TOOL_SPECS, "toolChoice": {"tool": {"name": "get_weather"}}},
        ),
        # Converse has no "none": the tools stay out...
        ((), ToolChoice(ToolChoiceMode.NONE), None),
        # ...unless the conversation holds tool blocks, which need a toolConfig.
        (TOOL_HISTORY, ToolChoice(ToolChoiceMode.NONE), {"tools": TOOL_SPECS}),
    ],
    ids=["unset", "auto", "required", "named", "none", "none-with-tool-history"],
)
def test_build_tools_and_tool_choice(
    messages: tuple[Message, ...], choice: ToolChoice | None, expected: dict[str, Any] | None
) -> None:
    body = body_of(chat(*messages, tools=TOOLS, tool_choice=choice))
    assert body.get("toolConfig") == expected


@pytest.mark.parametrize(
    ("generation", "expected"),
    [
        (GenerationParams(), {}),
        (
            GenerationParams(max_tokens=100, temperature=0.0, top_p=0.9, stop=("END", "STOP")),
            {
                "inferenceConfig": {
                    "maxTokens": 100,
                    "temperature": 0.0,
                    "topP": 0.9,
                    "stopSequences": ["END", "STOP"],
                }
            },
        ),
        (
            # No Converse fields: Anthropic's names, passed to the model.
            GenerationParams(top_k=40, reasoning_budget_tokens=2048),
            {
                "additionalModelRequestFields": {
                    "top_k": 40,
                    "thinking": {"type": "enabled", "budget_tokens": 2048},
                }
            },
        ),
        (
            GenerationParams(reasoning_budget_tokens=0),
            {"additionalModelRequestFields": {"thinking": {"type": "disabled"}}},
        ),
        # No place in Converse at all: dropped.
        (GenerationParams(presence_penalty=0.5, frequency_penalty=0.5, seed=7), {}),
    ],
)
def test_build_generation_params(generation: GenerationParams, expected: dict[str, Any]) -> None:
    body = dict(body_of(chat(generation=generation)))
    del body["messages"]
    assert body == expected


def test_build_completion_is_a_single_user_turn() -> None:
    request = CompletionRequest("nova", "Once upon", GenerationParams(max_tokens=20))
    built = adapter().build(request)
    assert built.url == CONVERSE_URL
    assert built.json == {
        "messages": [{"role": "user", "content": [{"text": "Once upon"}]}],
        "inferenceConfig": {"maxTokens": 20},
    }


def test_build_completion_refuses_a_suffix() -> None:
    with pytest.raises(GatewayError, match="no fill-in-the-middle") as caught:
        adapter().build(CompletionRequest("nova", "def f(", suffix="return x"))
    assert (caught.value.status, caught.value.field) == (Status.INVALID_ARGUMENT, "suffix")


@pytest.mark.parametrize(
    ("model", "fields", "request_", "expected"),
    [
        (
            "amazon.titan-embed-text-v2:0",
            {},
            EmbeddingRequest("e", ("hello",), dimensions=256),
            {"inputText": "hello", "dimensions": 256},
        ),
        (
            "cohere.embed-english-v3",
            {},
            EmbeddingRequest("e", ("a", "b")),
            {"texts": ["a", "b"], "input_type": "search_document"},
        ),
        (
            "us.cohere.embed-v4:0",
            {},
            EmbeddingRequest("e", ("a",), dimensions=512),
            {"texts": ["a"], "input_type": "search_document", "output_dimension": 512},
        ),
        (
            # A provisioned model's ARN does not say its family.
            "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc",
            {"embedding_format": "titan"},
            EmbeddingRequest("e", ("hello",)),
            {"inputText": "hello"},
        ),
    ],
)
def test_build_embeddings(
    model: str, fields: dict[str, Any], request_: EmbeddingRequest, expected: dict[str, Any]
) -> None:
    built = adapter(name=model, **fields).build(request_)
    assert built.url.endswith("/invoke")
    assert built.json == expected


def test_build_embeddings_of_an_unknown_model_family() -> None:
    with pytest.raises(GatewayError) as caught:
        adapter(name="acme.embed-1").build(EmbeddingRequest("e", ("hello",)))
    assert error_fields(caught.value) == (
        Status.FAILED_PRECONDITION,
        "UNSUPPORTED_MODEL",
        "bedrock: no embeddings body known for model 'acme.embed-1'; "
        "set embedding_format (titan or cohere)",
        {"provider": "bedrock"},
    )


# --- stream decoding: recordings -------------------------------------------------------

REASONING = [
    "The",
    " user has",
    " greeted me with",
    ' a simple "Hello".',
    " I should respond in",
    " a friendly and wel",
    "coming manner.",
    " This is a",
    " straightforward greeting",
    ",",
    " so I'll respond warm",
    "ly and ask",
    " how I can help",
    " them today.",
]

# The signature delta of bedrock_converse_stream_reasoning.bin.
RECORDED_SIGNATURE = (
    "Eu0CCkgIBxABGAIqQJDccbDQkr81n7QjZ0Fi43umSvw0YvnGkMPEpaGAa2btYHyWw06KhwckvsnKzpKc"
    "xiRJT35meoG4/pdrTUiy2UISDPDaEWfOl3+HlRVsCxoMzfiqBp252RMvpmEyIjCbQ97Ac9Epkr5mgxeu"
    "1vGtJg+fDWIg0UnpMM8NYknhhvJmsXpYrfquwGL1ZnlBslUq0gHtbAAPwlWPmiQXU7gDQCDW9IdMVyw4"
    "2b4f5MrAlpWkPWOJc9H+yYv0TpP/jY72SD1opqwkWnBgkzbi7A2jPmEFzIMQSO1KDXha5ADqQ3cLYMmV"
    "dNTSH9wlM7G7/JJ2/cqowqkwD6/q1AnYzcPte9iC67fY1LYN0NMCOSABFojP1rmkv9YBEulx5Y6eQpeV"
    "XBQiIqcGoCmWSumpGBskS1KxGerUmzUB0JmJnTENv4x3fSGSUSEPqMiz6Ebao8sVkb1wCWuZEXWJGtiQ"
    "LMIm1o471iEYAQ=="
)

RECORDED: list[tuple[str, list[Event], ErrorFields | None]] = [
    (
        "bedrock_converse_stream_text.bin",
        [
            Start("", MODEL),
            *(
                TextDelta(text)
                for text in [
                    "The",
                    " capital of France is Paris.",
                    " Paris is not",
                    " only the capital city but",
                    " also the most",
                    " populous city in France",
                    ", and",
                    " it is",
                    " a",
                    " major center",
                    " for",
                    " culture",
                    ", commerce, fashion",
                    ", and international diplomacy",
                    ". Known",
                    " for its",
                    " historical",
                    " landmarks, such",
                    " as the Eiffel Tower, the",
                    " Louvre Museum, and Notre",
                    "-Dame Cathedral",
                    ", Paris is often",
                    ' referred to as "',
                    "The City of Light",
                    '"',
                    ' or "The',
                    " City",
                    " of Love",
                    '."',
                ]
            ),
            Usage(input_tokens=13, output_tokens=82),
            Finish(FinishReason.STOP, "end_turn"),
        ],
        None,
    ),
    (
        "bedrock_converse_stream_tool_use.bin",
        [
            Start("", MODEL),
            *(
                TextDelta(text)
                for text in [
                    "<thinking",
                    "> To find",
                    " the temperature",
                    " of the capital of France,",
                    " I need to first",
                    " determine the capital",
                    " of France and",
                    " then get",
                    " the current",
                    " temperature in",
                    " that city. The",
                    " capital of France is Paris",
                    ". I",
                    " will use",
                    ' the "get_temperature"',
                    " tool to find the current temperature",
                    " in Paris.</",
                    "thinking",
                    ">\n",
                ]
            ),
            ToolCallDelta(0, "tooluse_lAG_zP8QRHmSYOwZzzaCqA", "get_temperature"),
            ToolCallDelta(0, arguments='{"city":"Paris"}'),
            Usage(input_tokens=471, output_tokens=91),
            Finish(FinishReason.TOOL_CALLS, "tool_use"),
        ],
        None,
    ),
    (
        "bedrock_converse_stream_reasoning.bin",
        [
            Start("", MODEL),
            *(ReasoningDelta(text) for text in REASONING),
            # The signature delta that ends the reasoning block.
            ReasoningSignature(RECORDED_SIGNATURE),
            *(
                TextDelta(text)
                for text in [
                    "Hello! It",
                    "'s nice",
                    " to meet you.",
                    " How can I help",
                    " you today?",
                ]
            ),
            Usage(input_tokens=36, output_tokens=73),
            Finish(FinishReason.STOP, "end_turn"),
        ],
        None,
    ),
    (
        "bedrock_converse_stream_exception_frame.bin",
        [],
        (
            Status.UNAVAILABLE,
            "UPSTREAM_UNAVAILABLE",
            "bedrock: Model Stream Error (model answered 500: The model stream failed.)",
            {
                "provider": "bedrock",
                "http_status": "424",
                "upstream_type": "modelStreamErrorException",
            },
        ),
    ),
]
RECORDINGS = [name for name, _, _ in RECORDED]


@pytest.mark.parametrize(("name", "expected", "error"), RECORDED, ids=RECORDINGS)
def test_recording_decodes_the_same_at_every_split(
    name: str, expected: list[Event], error: ErrorFields | None
) -> None:
    for chunks in splits(recording(name)):
        events, raised = run(chunks)
        assert events == expected, chunks
        assert (error_fields(raised) if raised else None) == error, chunks


def test_recorded_tool_call_adds_up() -> None:
    events, _ = run([recording("bedrock_converse_stream_tool_use.bin")])
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert {e.index for e in calls} == {0}
    assert (calls[0].id, calls[0].name, json.loads("".join(e.arguments for e in calls))) == (
        "tooluse_lAG_zP8QRHmSYOwZzzaCqA",
        "get_temperature",
        {"city": "Paris"},
    )


def test_completion_decoder_drops_reasoning() -> None:
    bedrock = adapter()
    decoder = bedrock.decoder(CompletionRequest("nova", "Hi"))
    events, _ = run([recording("bedrock_converse_stream_reasoning.bin")], decoder)
    assert not [e for e in events if isinstance(e, ReasoningDelta)]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == (
        "Hello! It's nice to meet you. How can I help you today?"
    )


# --- stream decoding: synthetic streams -------------------------------------------------


def test_tool_blocks_with_and_without_a_start() -> None:
    body = b"".join(
        [
            MESSAGE_START,
            delta(0, text="Checking."),
            event("contentBlockStop", contentBlockIndex=0),
            event(
                "contentBlockStart",
                contentBlockIndex=1,
                start={"toolUse": {"toolUseId": "tooluse_a", "name": "a"}},
            ),
            delta(1, toolUse={"input": '{"x":'}),
            delta(1, toolUse={"input": "1}"}),
            event("contentBlockStop", contentBlockIndex=1),
            # A tool without parameters streams no input: its arguments are "{}".
            event(
                "contentBlockStart",
                contentBlockIndex=2,
                start={"toolUse": {"toolUseId": "tooluse_b", "name": "b"}},
            ),
            delta(2, toolUse={"input": ""}),
            event("contentBlockStop", contentBlockIndex=2),
            # No start: a deterministic id stands in, the name is unknown.
            delta(3, toolUse={"input": '{"y": 2}'}),
            event("contentBlockStop", contentBlockIndex=3),
            delta(4, reasoningContent={"redactedContent": "b3BhcXVl"}),
            event("someFutureEvent", contentBlockIndex=5),
            message_end("end_turn"),
        ]
    )
    events, raised = run([body])
    assert raised is None
    assert events == [
        Start("", MODEL),
        TextDelta("Checking."),
        ToolCallDelta(0, "tooluse_a", "a"),
        ToolCallDelta(0, arguments='{"x":'),
        ToolCallDelta(0, arguments="1}"),
        ToolCallDelta(1, "tooluse_b", "b"),
        ToolCallDelta(1, arguments="{}"),
        ToolCallDelta(2, "call_2"),
        ToolCallDelta(2, arguments='{"y": 2}'),
        RedactedReasoning("b3BhcXVl"),
        Usage(input_tokens=3, output_tokens=5),
        # Tools were called: a plain end of turn says so.
        Finish(FinishReason.TOOL_CALLS, "end_turn"),
    ]


def test_usage_counts_cache_reads_and_writes_as_input() -> None:
    usage = {
        "inputTokens": 10,
        "outputTokens": 20,
        "totalTokens": 335,
        "cacheReadInputTokens": 200,
        "cacheWriteInputTokens": 105,
    }
    events, _ = run([MESSAGE_START + message_end(usage=usage)])
    assert events[-2] == Usage(
        input_tokens=10 + 200 + 105,
        output_tokens=20,
        cached_input_tokens=200,
        cache_write_input_tokens=105,
    )


def test_metadata_without_usage_is_unreported() -> None:
    body = (
        MESSAGE_START + event("messageStop", stopReason="end_turn") + event("metadata", metrics={})
    )
    events, _ = run([body])
    assert events[-2:] == [Usage(reported=False), Finish(FinishReason.STOP, "end_turn")]


def test_frames_after_the_end_are_ignored() -> None:
    body = MESSAGE_START + message_end() + delta(0, text="late") + exception("throttlingException")
    events, raised = run([body])
    assert raised is None
    assert events == [
        Start("", MODEL),
        Usage(input_tokens=3, output_tokens=5),
        Finish(FinishReason.STOP, "end_turn"),
    ]


@pytest.mark.parametrize(
    ("stop_reason", "reason"),
    [
        ("end_turn", FinishReason.STOP),
        ("stop_sequence", FinishReason.STOP),
        ("max_tokens", FinishReason.LENGTH),
        ("model_context_window_exceeded", FinishReason.LENGTH),
        ("tool_use", FinishReason.TOOL_CALLS),
        ("guardrail_intervened", FinishReason.CONTENT_FILTER),
        ("content_filtered", FinishReason.CONTENT_FILTER),
        ("malformed_model_output", FinishReason.OTHER),
        ("malformed_tool_use", FinishReason.OTHER),
    ],
)
def test_stop_reasons(stop_reason: str, reason: FinishReason) -> None:
    events, _ = run([MESSAGE_START + message_end(stop_reason)])
    assert events[-1] == Finish(reason, stop_reason)


@pytest.mark.parametrize(
    ("exception_type", "http_status", "status"),
    [
        ("validationException", 400, Status.INVALID_ARGUMENT),
        ("throttlingException", 429, Status.RESOURCE_EXHAUSTED),
        ("modelStreamErrorException", 424, Status.UNAVAILABLE),
        ("modelTimeoutException", 408, Status.DEADLINE_EXCEEDED),
        ("internalServerException", 500, Status.UNAVAILABLE),
        ("serviceUnavailableException", 503, Status.UNAVAILABLE),
        ("brandNewException", 500, Status.UNAVAILABLE),
    ],
)
def test_exception_frame_maps_like_its_http_status(
    exception_type: str, http_status: int, status: Status
) -> None:
    # An error before any other event of its chunk is raised at once.
    with pytest.raises(GatewayError) as caught:
        BedrockStreamDecoder(MODEL).feed(exception(exception_type, message="boom"))
    error = caught.value
    assert (error.status, error.message, error.metadata) == (
        status,
        "bedrock: boom",
        {"provider": "bedrock", "http_status": str(http_status), "upstream_type": exception_type},
    )


def test_unmodeled_error_frame_carries_all_in_headers() -> None:
    headers = {
        ":message-type": "error",
        ":error-code": "InternalFailure",
        ":error-message": "Something broke",
    }
    _, raised = run([MESSAGE_START, frame(headers, b"")])
    assert raised is not None
    assert error_fields(raised) == (
        Status.UNAVAILABLE,
        "UPSTREAM_UNAVAILABLE",
        "bedrock: Something broke",
        {"provider": "bedrock", "http_status": "500", "upstream_type": "InternalFailure"},
    )


def test_exception_with_a_plain_text_payload() -> None:
    headers = {":message-type": "exception", ":exception-type": "throttlingException"}
    _, raised = run([frame(headers, b"Too many requests")])
    assert raised is not None
    assert raised.message == "bedrock: Too many requests"


def test_error_after_events_of_its_chunk_is_raised_next() -> None:
    decoder = BedrockStreamDecoder(MODEL)
    chunk = MESSAGE_START + delta(0, text="Hel") + exception("throttlingException", message="slow")
    assert decoder.feed(chunk) == [Start("", MODEL), TextDelta("Hel")]
    with pytest.raises(GatewayError, match="slow"):
        decoder.feed(b"")
    with pytest.raises(GatewayError, match="slow"):
        decoder.close()


def test_frames_before_a_corrupt_frame_of_the_same_chunk_still_count() -> None:
    corrupt = bytearray(delta(0, text="lo"))
    corrupt[-1] ^= 0xFF
    decoder = BedrockStreamDecoder(MODEL)
    assert decoder.feed(MESSAGE_START + delta(0, text="Hel") + bytes(corrupt)) == [
        Start("", MODEL),
        TextDelta("Hel"),
    ]
    with pytest.raises(GatewayError, match="Checksum mismatch") as caught:
        decoder.close()
    assert caught.value.reason == "UPSTREAM_PROTOCOL_ERROR"


TEXT = recording("bedrock_converse_stream_text.bin")


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        ([b""], "stream ended before messageStop"),
        ([TEXT[: frame_ends(TEXT)[-2]]], "stream ended before metadata"),
        ([TEXT[:-1]], "stream ended inside a frame (261 bytes left)"),
        ([TEXT[:5]], "stream ended inside a frame (5 bytes left)"),
        (
            [MESSAGE_START + event("metadata", usage={"inputTokens": 1, "outputTokens": 1})],
            "stream ended before messageStop",
        ),
        ([bytes(16)], "bad eventstream: the prelude's checksum does not match"),
        (
            [prelude(16 + 200 * 1024, 200 * 1024) + bytes(200 * 1024 + 4)],
            "bad eventstream: InvalidHeadersLength(",
        ),
        # A crafted total length below the frame overhead.
        ([prelude(0, 0) + bytes(4)], "bad eventstream: a message of 0 bytes"),
        ([framed(b"\x01x\x63", b"")], "bad eventstream: KeyError(99)"),
        (
            [framed(b"", b"{}")],
            "unreadable eventstream frame: ValueError('unknown message type None')",
        ),
        (
            [frame({":message-type": "event", ":event-type": "contentBlockDelta"}, b"{not json")],
            "unreadable contentBlockDelta frame: JSONDecodeError(",
        ),
        (
            [MESSAGE_START + event("contentBlockDelta", delta={"text": "x"})],
            "unreadable contentBlockDelta frame: KeyError('contentBlockIndex')",
        ),
        ([MESSAGE_START + event("messageStop")], "unreadable messageStop frame: KeyError("),
    ],
    ids=[
        "empty",
        "no-metadata",
        "truncated-frame",
        "truncated-prelude",
        "no-message-stop",
        "prelude-crc",
        "oversize-headers",
        "short-total-length",
        "unknown-header-type",
        "no-headers",
        "bad-json",
        "missing-index",
        "missing-stop-reason",
    ],
)
def test_protocol_errors(chunks: list[bytes], message: str) -> None:
    assert message in protocol_error(chunks)


def test_an_oversize_frame_is_refused_at_its_length_before_its_bytes_are_held() -> None:
    decoder = BedrockStreamDecoder(MODEL)
    with pytest.raises(GatewayError) as raised:
        decoder.feed(prelude(DEFAULT_MAX_EVENT_BYTES + 1, 0))
    assert (raised.value.status, raised.value.reason) == (
        Status.UNAVAILABLE,
        "UPSTREAM_EVENT_TOO_LARGE",
    )


# --- stream decoding: properties ----------------------------------------------------------

VALID = [name for name, _, error in RECORDED if error is None]


def outcome(chunks: list[bytes]) -> tuple[list[Event], ErrorFields | None]:
    events, raised = run(chunks)
    return events, error_fields(raised) if raised else None


@settings(max_examples=150, deadline=None)
@given(data=st.data(), name=st.sampled_from(RECORDINGS))
def test_any_split_decodes_like_the_whole(data: st.DataObject, name: str) -> None:
    body = recording(name)
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=30))
    assert outcome(chunked(body, cuts)) == outcome([body])


@settings(max_examples=150, deadline=None)
@given(garbage=st.binary(min_size=1, max_size=512), cut=st.integers(0, 512))
def test_garbage_ends_in_a_protocol_error(garbage: bytes, cut: int) -> None:
    protocol_error([garbage[:cut], garbage[cut:]])


@settings(max_examples=150, deadline=None)
@given(data=st.data(), name=st.sampled_from(VALID))
def test_truncated_body_ends_in_a_protocol_error(data: st.DataObject, name: str) -> None:
    body = recording(name)
    protocol_error([body[: data.draw(st.integers(0, len(body) - 1))]])


@settings(max_examples=150, deadline=None)
@given(data=st.data(), name=st.sampled_from(VALID), flip=st.integers(1, 255))
def test_corrupted_byte_ends_in_a_protocol_error(data: st.DataObject, name: str, flip: int) -> None:
    body = bytearray(recording(name))
    body[data.draw(st.integers(0, len(body) - 1))] ^= flip
    protocol_error([bytes(body)])


@settings(max_examples=150, deadline=None)
@given(headers=st.binary(max_size=64), payload=st.binary(max_size=64))
def test_checksummed_frame_of_arbitrary_bytes_ends_in_an_error(
    headers: bytes, payload: bytes
) -> None:
    _, raised = run([MESSAGE_START + framed(headers, payload) + message_end()])
    assert raised is not None
    assert raised.status is Status.UNAVAILABLE


@settings(max_examples=150, deadline=None)
@given(
    total_length=st.integers(0, 2**32 - 1),
    headers_length=st.integers(0, 2**32 - 1),
    rest=st.binary(max_size=64),
)
def test_checksummed_prelude_of_any_lengths_ends_in_a_protocol_error(
    total_length: int, headers_length: int, rest: bytes
) -> None:
    _, raised = run([prelude(total_length, headers_length) + rest])
    assert raised is not None
    # A frame longer than max_event_bytes is refused as such, at its prelude.
    too_large = total_length > DEFAULT_MAX_EVENT_BYTES
    reason = "UPSTREAM_EVENT_TOO_LARGE" if too_large else "UPSTREAM_PROTOCOL_ERROR"
    assert (raised.status, raised.reason) == (Status.UNAVAILABLE, reason)


# --- HTTP errors -------------------------------------------------------------------------


def recorded_response(name: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a recorded HTTP response."""
    head, _, body = recording(name).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().splitlines()
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, body.strip()


def aws_error(error_type: str, message: str) -> tuple[dict[str, str], bytes]:
    headers = {
        "x-amzn-errortype": f"{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/",
        "x-amzn-requestid": "9a1d5e1c-0000-4000-8000-000000000000",
    }
    return headers, json.dumps({"message": message}).encode()


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected", "retry_after"),
    [
        (
            *recorded_response("bedrock_error_response.txt"),
            (
                Status.INVALID_ARGUMENT,
                "UPSTREAM_BAD_REQUEST",
                "bedrock: The content field in the Message object at messages.1 is empty. "
                "Add a ContentBlock object to the content field and try again.",
                {
                    "provider": "bedrock",
                    "http_status": "400",
                    "upstream_type": "ValidationException",
                },
            ),
            None,
        ),
        (
            429,
            {
                **aws_error("ThrottlingException", "Too many requests, please wait.")[0],
                "retry-after": "3",
            },
            aws_error("ThrottlingException", "Too many requests, please wait.")[1],
            (
                Status.RESOURCE_EXHAUSTED,
                "UPSTREAM_RATE_LIMITED",
                "bedrock: Too many requests, please wait.",
                {
                    "provider": "bedrock",
                    "http_status": "429",
                    "upstream_type": "ThrottlingException",
                    "upstream_request_id": "9a1d5e1c-0000-4000-8000-000000000000",
                },
            ),
            3.0,
        ),
        (
            403,
            *aws_error("AccessDeniedException", "User arn:aws:iam::1:user/x is not authorized"),
            (
                Status.INTERNAL,
                "UPSTREAM_AUTH_FAILED",
                "bedrock rejected the gateway's credentials (HTTP 403)",
                {
                    "provider": "bedrock",
                    "http_status": "403",
                    "upstream_type": "AccessDeniedException",
                    "upstream_request_id": "9a1d5e1c-0000-4000-8000-000000000000",
                },
            ),
            None,
        ),
        (
            503,
            {},
            # No header: the body's __type names the error.
            b'{"__type": "com.amazon.coral#ServiceUnavailableException", "Message": "Try later"}',
            (
                Status.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                "bedrock: Try later",
                {
                    "provider": "bedrock",
                    "http_status": "503",
                    "upstream_type": "ServiceUnavailableException",
                },
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
                "bedrock: <html>" + "x" * 494,
                {"provider": "bedrock", "http_status": "502"},
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
                "bedrock: HTTP 500 with an empty body",
                {"provider": "bedrock", "http_status": "500"},
            ),
            None,
        ),
    ],
    ids=["400-recorded", "429-retry-after", "403", "503-type-in-body", "non-json", "empty"],
)
def test_parse_error(
    status: int,
    headers: dict[str, str],
    body: bytes,
    expected: ErrorFields,
    retry_after: float | None,
) -> None:
    error = adapter().parse_error(status, headers, body)
    assert error_fields(error) == expected
    assert error.retry_after == retry_after


# --- embeddings decoding --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("titan", "body", "expected"),
    [
        (
            True,
            b'{"embedding": [0.5, -0.25], "inputTextTokenCount": 4}',
            [
                Start("", MODEL),
                Embeddings(((0.5, -0.25),)),
                Usage(input_tokens=4),
                Finish(FinishReason.STOP),
            ],
        ),
        (
            False,
            b'{"id": "emb-1", "embeddings": [[0.5], [0.25]], "response_type": "embeddings_floats"}',
            [
                Start("emb-1", MODEL),
                Embeddings(((0.5,), (0.25,))),
                Usage(reported=False),
                Finish(FinishReason.STOP),
            ],
        ),
        (
            False,
            b'{"id": "emb-2", "embeddings": {"float": [[1.0]]}, "response_type": "embeddings_by_type"}',
            [
                Start("emb-2", MODEL),
                Embeddings(((1.0,),)),
                Usage(reported=False),
                Finish(FinishReason.STOP),
            ],
        ),
    ],
    ids=["titan", "cohere", "cohere-by-type"],
)
def test_embedding_answers(titan: bool, body: bytes, expected: list[Event]) -> None:
    for chunks in splits(body):
        decoder = BedrockEmbeddingDecoder(MODEL, titan=titan)
        assert [e for chunk in chunks for e in decoder.feed(chunk)] + decoder.close() == expected


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b'{"embedding": "x"}'])
def test_unreadable_embedding_answer(body: bytes) -> None:
    decoder = BedrockEmbeddingDecoder(MODEL, titan=True)
    decoder.feed(body)
    with pytest.raises(GatewayError, match="unreadable embeddings response") as caught:
        decoder.close()
    assert caught.value.reason == "UPSTREAM_PROTOCOL_ERROR"


# --- stream() against a loopback upstream ----------------------------------------------------


@asynccontextmanager
async def served(script: Script | Reply, **fields: Any) -> AsyncIterator[BedrockAdapter]:
    """A Bedrock adapter (static keys) whose endpoint is a loopback upstream
    answering with `script`."""
    pool = HttpClientPool()
    async with FakeUpstream(script) as upstream:
        keys = {"aws_access_key_id": "AKID", "aws_secret_access_key": "SECRET"}
        created = settings_of(api_base=upstream.base_url, **keys, **fields).create_adapter(pool)
        assert isinstance(created, BedrockAdapter)
        try:
            yield created
        finally:
            await pool.aclose()


async def collect(bedrock: BedrockAdapter, request: ChatRequest | EmbeddingRequest) -> list[Event]:
    return [event async for event in bedrock.stream(request)]


@pytest.mark.usefixtures("frozen_clock")
async def test_chat_stream_sends_the_signed_bytes() -> None:
    sent: list[SeenRequest] = []

    def handler(request: SeenRequest) -> Reply:
        sent.append(request)
        return Reply(chunks=[TEXT], headers={"content-type": "application/vnd.amazon.eventstream"})

    async with served(handler) as bedrock:
        events = await collect(bedrock, chat())
    assert events == RECORDED[0][1]
    (request,) = sent
    assert request.path == urlsplit(CONVERSE_URL).path
    assert request.body == b'{"messages":[{"role":"user","content":[{"text":"Hi"}]}]}'
    # The signature holds for the request as it arrived: path, host and body.
    arrived = f"http://{request.headers['host']}{request.path}"
    signature = resign(arrived, request.body, Credentials("AKID", "SECRET"))
    assert request.headers["authorization"].endswith(f"Signature={signature}")


def json_reply(status: int, body: object, headers: dict[str, str] | None = None) -> Reply:
    return Reply.json(status, body, headers)


async def test_titan_embeds_one_input_per_call() -> None:
    sent: list[dict[str, Any]] = []

    def handler(request: SeenRequest) -> Reply:
        body = request.json()
        sent.append(body)
        assert request.headers["authorization"].startswith("AWS4-HMAC-SHA256 ")
        text = body["inputText"]
        return json_reply(200, {"embedding": [float(len(text))], "inputTextTokenCount": len(text)})

    async with served(handler, name="amazon.titan-embed-text-v2:0") as bedrock:
        events = await collect(bedrock, EmbeddingRequest("e", ("a", "bb", "ccc"), dimensions=256))
    assert sent == [{"inputText": text, "dimensions": 256} for text in ("a", "bb", "ccc")]
    assert events == [
        Start("", "amazon.titan-embed-text-v2:0"),
        Embeddings(((1.0,), (2.0,), (3.0,))),
        Usage(input_tokens=6),
        Finish(FinishReason.STOP),
    ]


async def test_titan_call_failing_fails_the_request() -> None:
    def handler(request: SeenRequest) -> Reply:
        if request.json()["inputText"] == "bad":
            headers, body = aws_error("ThrottlingException", "Too many requests")
            return Reply(429, [body], headers)
        return json_reply(200, {"embedding": [1.0], "inputTextTokenCount": 1})

    async with served(handler, name="amazon.titan-embed-text-v2:0") as bedrock:
        with pytest.raises(GatewayError, match="Too many requests") as caught:
            await collect(bedrock, EmbeddingRequest("e", ("ok", "bad", "ok")))
    assert caught.value.status is Status.RESOURCE_EXHAUSTED


async def test_cohere_embeds_all_inputs_in_one_call() -> None:
    sent: list[dict[str, Any]] = []

    def handler(request: SeenRequest) -> Reply:
        sent.append(request.json())
        return json_reply(200, {"id": "e1", "embeddings": [[1.0], [2.0]]})

    async with served(handler, name="cohere.embed-english-v3") as bedrock:
        events = await collect(bedrock, EmbeddingRequest("e", ("a", "b")))
    assert sent == [{"texts": ["a", "b"], "input_type": "search_document"}]
    assert events[1:] == [
        Embeddings(((1.0,), (2.0,))),
        Usage(reported=False),
        Finish(FinishReason.STOP),
    ]


def test_create_adapter_uses_the_pooled_client() -> None:
    pool = HttpClientPool()
    config = settings_of(aws_access_key_id="AKID", aws_secret_access_key="SECRET")
    created = config.create_adapter(pool)
    assert isinstance(created, BedrockAdapter)
    assert created._client is pool.client_for(ENDPOINT)
