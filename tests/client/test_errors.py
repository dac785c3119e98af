"""Failed calls raise the `SluiceError` of their status, with the server's
google.rpc details, from both clients, before and after a stream's first event."""

from __future__ import annotations

import pickle
import socket

import grpc
import grpc.aio
import pytest
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2

from sluice_client import (
    Client,
    ConnectionOptions,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    QuotaViolation,
    RequestCancelledError,
    ResourceExhaustedError,
    SluiceError,
    UnauthenticatedError,
    UnavailableError,
)
from sluice_client._errors import error_from_rpc
from sluice_client.v1 import gateway_pb2 as pb
from tests.client.conftest import CHAT_SCRIPT, Driver, Fail, Gateway

RATE_LIMITED = Fail(
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    "openai: rate limited",
    [
        error_details_pb2.ErrorInfo(
            reason="UPSTREAM_RATE_LIMITED",
            domain="sluice.v1",
            metadata={"provider": "openai", "http_status": "429"},
        ),
        error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(
                    subject="route:chat/requests", description="100 requests per minute"
                )
            ]
        ),
        error_details_pb2.RetryInfo(retry_delay=Duration(seconds=2, nanos=500_000_000)),
    ],
)

BAD_REQUEST = Fail(
    grpc.StatusCode.INVALID_ARGUMENT,
    "bad request",
    [
        error_details_pb2.ErrorInfo(reason="INVALID_REQUEST", domain="sluice.v1"),
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field="generation.temperature", description="must be at most 2"
                ),
                error_details_pb2.BadRequest.FieldViolation(
                    field="messages", description="must not be empty"
                ),
            ]
        ),
    ],
)


@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgumentError),
        (grpc.StatusCode.NOT_FOUND, NotFoundError),
        (grpc.StatusCode.UNAUTHENTICATED, UnauthenticatedError),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDeniedError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhaustedError),
        (grpc.StatusCode.FAILED_PRECONDITION, FailedPreconditionError),
        (grpc.StatusCode.UNAVAILABLE, UnavailableError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceededError),
        (grpc.StatusCode.CANCELLED, RequestCancelledError),
        (grpc.StatusCode.INTERNAL, InternalError),
        # Statuses without a class of their own raise the base class.
        (grpc.StatusCode.UNIMPLEMENTED, SluiceError),
        (grpc.StatusCode.UNKNOWN, SluiceError),
    ],
)
async def test_each_status_raises_its_class(
    client: Driver, gateway: Gateway, code: grpc.StatusCode, error_class: type[SluiceError]
) -> None:
    gateway.servicer.script = [Fail(code, "it failed")]

    with pytest.raises(SluiceError) as caught:
        await client.chat("chat", "Hi")

    assert type(caught.value) is error_class
    assert (caught.value.code, caught.value.message) == (code, "it failed")
    assert (caught.value.reason, caught.value.metadata, caught.value.retry_after) == ("", {}, None)


@pytest.mark.parametrize("events_before", [0, 2], ids=["before-first-event", "mid-stream"])
async def test_a_failed_stream_raises_with_error_info_and_retry_info(
    client: Driver, gateway: Gateway, events_before: int
) -> None:
    gateway.servicer.script = [*CHAT_SCRIPT[:events_before], RATE_LIMITED]
    events: list[pb.ChatResponse] = []

    with pytest.raises(ResourceExhaustedError) as caught:
        await client.chat_events(events, "chat", "Hi")

    assert len(events) == events_before
    error = caught.value
    assert error.message == "openai: rate limited"
    assert (error.reason, error.domain) == ("UPSTREAM_RATE_LIMITED", "sluice.v1")
    assert error.metadata == {"provider": "openai", "http_status": "429"}
    assert error.retry_after == 2.5
    assert error.quota_violations == [
        QuotaViolation("route:chat/requests", "100 requests per minute")
    ]
    assert str(error) == "RESOURCE_EXHAUSTED: openai: rate limited [UPSTREAM_RATE_LIMITED]"


@pytest.mark.parametrize("events_before", [0, 3], ids=["before-first-event", "mid-stream"])
async def test_a_failed_completion_raises_with_field_violations(
    client: Driver, gateway: Gateway, events_before: int
) -> None:
    gateway.servicer.script = [*CHAT_SCRIPT[:events_before], BAD_REQUEST]
    events: list[pb.CompleteResponse] = []

    with pytest.raises(InvalidArgumentError) as caught:
        await client.complete_events(events, "complete", "Once")

    assert len(events) == events_before
    assert caught.value.field_violations == [
        FieldViolation("generation.temperature", "must be at most 2"),
        FieldViolation("messages", "must not be empty"),
    ]


async def test_aggregating_calls_raise_the_streams_failure(
    client: Driver, gateway: Gateway
) -> None:
    gateway.servicer.script = [*CHAT_SCRIPT[:4], RATE_LIMITED]

    with pytest.raises(ResourceExhaustedError) as caught:
        await client.chat("chat", "Hi")

    assert caught.value.retry_after == 2.5


async def test_unary_calls_raise_with_details(client: Driver, gateway: Gateway) -> None:
    gateway.servicer.unary_failure = Fail(
        grpc.StatusCode.NOT_FOUND,
        "no route named 'embed'",
        [
            error_details_pb2.ErrorInfo(
                reason="ROUTE_NOT_FOUND", domain="sluice.v1", metadata={"route": "embed"}
            )
        ],
    )

    with pytest.raises(NotFoundError) as embed_failure:
        await client.embed("embed", ["a"])
    with pytest.raises(NotFoundError) as list_failure:
        await client.list_routes()

    for caught in (embed_failure, list_failure):
        assert caught.value.reason == "ROUTE_NOT_FOUND"
        assert caught.value.metadata == {"route": "embed"}


def test_an_unreachable_gateway_is_unavailable() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    options = ConnectionOptions(target=f"127.0.0.1:{port}", timeout=5)

    with Client(options) as client, pytest.raises(UnavailableError):
        client.list_routes()


def test_errors_survive_pickling() -> None:
    error = ResourceExhaustedError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "slow down",
        reason="RATE_LIMITED",
        field_violations=[FieldViolation("a", "b")],
        quota_violations=[QuotaViolation("key:a/requests", "b")],
        retry_after=1.5,
    )

    copy = pickle.loads(pickle.dumps(error))

    assert type(copy) is ResourceExhaustedError
    assert vars(copy) == vars(error)
    assert str(copy) == "RESOURCE_EXHAUSTED: slow down [RATE_LIMITED]"


def test_unreadable_details_are_left_out() -> None:
    trailers = grpc.aio.Metadata(("grpc-status-details-bin", b"\xff\xff"))
    rpc_error = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), trailers, "upstream down"
    )

    error = error_from_rpc(rpc_error)

    assert type(error) is UnavailableError
    assert (error.message, error.reason) == ("upstream down", "")
