"""Databricks serving endpoints and MLflow model serving: request bodies,
recorded answers, and their error bodies mapped exactly. No network."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.domain import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    Embeddings,
    Finish,
    FinishReason,
    GenerationParams,
    ImagePart,
    Message,
    Role,
    Start,
    TextDelta,
    TextPart,
    Usage,
)
from sluice.errors import GatewayError, Status
from sluice.providers.databricks import DatabricksAdapter, DatabricksSettings
from sluice.providers.http import HttpClientPool
from sluice.providers.mlflow import MLflowAdapter, MLflowSettings
from tests.decoding import chunked, decode
from tests.recordings import recording

WORKSPACE = "https://adb-1.1.azuredatabricks.net/serving-endpoints"
SERVER = "http://127.0.0.1:5000"


def databricks() -> DatabricksAdapter:
    config = DatabricksSettings.model_validate(
        {"provider": "databricks", "name": "my-endpoint", "api_base": WORKSPACE, "api_key": "dapi1"}
    )
    created = config.create_adapter(HttpClientPool())
    assert isinstance(created, DatabricksAdapter)
    return created


def mlflow() -> MLflowAdapter:
    config = MLflowSettings.model_validate({"provider": "mlflow", "name": "m", "api_base": SERVER})
    created = config.create_adapter(HttpClientPool())
    assert isinstance(created, MLflowAdapter)
    return created


def chat(*texts: str, **fields: Any) -> ChatRequest:
    return ChatRequest("r", tuple(Message(Role.USER, (TextPart(t),)) for t in texts), **fields)


def fields_of(error: GatewayError) -> tuple[Status, str, str, dict[str, str]]:
    return error.status, error.reason, error.message, error.metadata


# --- databricks ----------------------------------------------------------------


def test_databricks_needs_its_workspace() -> None:
    with pytest.raises(ValueError, match="api_base"):
        DatabricksSettings.model_validate({"provider": "databricks", "name": "e"})


def test_databricks_urls_model_and_bearer() -> None:
    built = databricks().build(chat("hi"))
    assert built.url == f"{WORKSPACE}/chat/completions"
    assert built.headers["authorization"] == "Bearer dapi1"
    assert built.json["model"] == "my-endpoint"
    assert databricks().build(CompletionRequest("r", "hi")).url == f"{WORKSPACE}/completions"
    assert databricks().build(EmbeddingRequest("r", ("a",))).url == f"{WORKSPACE}/embeddings"


def test_databricks_recorded_stream() -> None:
    events, error = decode(
        databricks().decoder(chat("hi")), [recording("databricks_chat_stream.txt")]
    )
    assert error is None
    assert events == [
        Start(
            "chatcmpl_5e0a1c5b-3b5d-4f0e-9a59-2f1f0b2b4c11", "meta-llama-3.3-70b-instruct-121024"
        ),
        TextDelta("Hello"),
        TextDelta("! How can I help you today?"),
        Usage(input_tokens=11, output_tokens=10),
        Finish(FinishReason.STOP, "stop"),
    ]


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected"),
    [
        (400, {"x-request-id": "r-1"}, recording("databricks_error_response.json"),
         (Status.INVALID_ARGUMENT, "UPSTREAM_BAD_REQUEST",
          'databricks: Bad request: json: unknown field "max_tokns"',
          {"provider": "databricks", "http_status": "400", "upstream_type": "BAD_REQUEST",
           "upstream_request_id": "r-1"})),
        (429, {}, b'{"error_code":"REQUEST_LIMIT_EXCEEDED","message":"Exceeded workspace rate limit"}',
         (Status.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED",
          "databricks: Exceeded workspace rate limit",
          {"provider": "databricks", "http_status": "429",
           "upstream_type": "REQUEST_LIMIT_EXCEEDED"})),
        # An external model's own error, passed through in OpenAI's shape.
        (400, {}, b'{"error":{"message":"bad","type":"invalid_request_error","param":"x"}}',
         (Status.INVALID_ARGUMENT, "UPSTREAM_BAD_REQUEST", "databricks: bad (param: x)",
          {"provider": "databricks", "http_status": "400",
           "upstream_type": "invalid_request_error"})),
    ],
    ids=["databricks-400", "databricks-429", "openai-shape"],
)  # fmt: skip
def test_databricks_errors(
    status: int, headers: dict[str, str], body: bytes, expected: tuple[Any, ...]
) -> None:
    assert fields_of(databricks().parse_error(status, headers, body)) == expected


# --- mlflow --------------------------------------------------------------------


def test_mlflow_bodies_as_mlflows_gateway_sends_them() -> None:
    adapter = mlflow()
    completion = adapter.build(
        CompletionRequest("r", "hi", generation=GenerationParams(max_tokens=5, temperature=0.0))
    )
    assert completion.url == f"{SERVER}/invocations"
    assert completion.json == {"inputs": ["hi"], "params": {"max_tokens": 5, "temperature": 0.0}}
    assert adapter.build(chat("question")).json == {"inputs": ["question"]}
    assert adapter.build(EmbeddingRequest("r", ("a", "b"))).json == {"inputs": ["a", "b"]}
    assert "authorization" not in completion.headers


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (chat("a", "b"), "messages"),
        (ChatRequest("r", (Message(Role.USER, (ImagePart(url="http://x/y.png"),)),)),
         "messages[0].parts"),
        (CompletionRequest("r", "a", suffix="b"), "suffix"),
    ],
    ids=["two-messages", "image", "suffix"],
)  # fmt: skip
def test_mlflow_refuses_what_it_cannot_send(request_: Any, field: str) -> None:
    with pytest.raises(GatewayError) as caught:
        mlflow().build(request_)
    assert (caught.value.status, caught.value.field) == (Status.INVALID_ARGUMENT, field)


TEXT = recording("mlflow_invocations_response.json")
TEXT_EVENTS = [
    Start("", "m"),
    TextDelta("Paris is the capital of France."),
    Usage(reported=False),
    Finish(FinishReason.OTHER),
]


@settings(max_examples=100, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=20))
def test_mlflow_answer_is_one_delta_however_it_arrives(cuts: list[int]) -> None:
    assert decode(mlflow().decoder(chat("q")), chunked(TEXT, cuts)) == (TEXT_EVENTS, None)


@pytest.mark.parametrize(
    "body",
    [b'{"predictions": {"candidates": ["Paris is the capital of France."]}}',
     b'{"predictions": {"choices": ["Paris is the capital of France."], "x": 1}}'],
    ids=["one-key", "choices"],
)  # fmt: skip
def test_mlflow_prediction_objects(body: bytes) -> None:
    assert decode(mlflow().decoder(chat("q")), [body]) == (TEXT_EVENTS, None)


def test_mlflow_embeddings() -> None:
    request = EmbeddingRequest("r", ("a", "b"))
    events, error = decode(
        mlflow().decoder(request), [recording("mlflow_embeddings_response.json")]
    )
    assert error is None
    assert events[1] == Embeddings(((0.1, -0.234, 0.002), (0.222, -0.111, 0.134)))
    single, _ = decode(mlflow().decoder(request), [b'{"predictions": [0.5, 0.25]}'])
    assert single[1] == Embeddings(((0.5, 0.25),))


@pytest.mark.parametrize(
    "body", [b'{"answer": "x"}', b'{"predictions": []}', b'{"predictions": [3]}', b"not json"]
)
def test_mlflow_unreadable_answers(body: bytes) -> None:
    _, error = decode(mlflow().decoder(chat("q")), [body])
    assert error is not None
    assert (error.status, error.reason) == (Status.UNAVAILABLE, "UPSTREAM_PROTOCOL_ERROR")


def test_mlflow_error_body() -> None:
    error = mlflow().parse_error(400, {}, recording("mlflow_error_response.json"))
    assert fields_of(error) == (
        Status.INVALID_ARGUMENT,
        "UPSTREAM_BAD_REQUEST",
        'mlflow: Failed to predict data \'{"inputs": ["hi"]}\'. \nError: Model is missing '
        "inputs ['question'].",
        {"provider": "mlflow", "http_status": "400", "upstream_type": "BAD_REQUEST"},
    )
