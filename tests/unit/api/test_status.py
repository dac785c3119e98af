"""GatewayError -> grpc.Status: the code, the message and each google.rpc
detail, decoded back the way clients decode them (grpc_status)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from sluice.api.status import to_grpc_status
from sluice.errors import DOMAIN, STATUS_OF, GatewayError, Reason

ErrorInfo = error_details_pb2.ErrorInfo
BadRequest = error_details_pb2.BadRequest
QuotaFailure = error_details_pb2.QuotaFailure
RetryInfo = error_details_pb2.RetryInfo
DETAIL_TYPES = (ErrorInfo, BadRequest, QuotaFailure, RetryInfo)


class EndedCall:
    """A call that ended with `status`, as rpc_status.from_call reads one."""

    def __init__(self, status: grpc.Status) -> None:
        self._status = status

    def code(self) -> grpc.StatusCode:
        return self._status.code

    def details(self) -> str:
        return self._status.details

    def trailing_metadata(self) -> Any:
        return self._status.trailing_metadata


def decoded(error: GatewayError) -> status_pb2.Status:
    status = rpc_status.from_call(EndedCall(to_grpc_status(error)))
    assert isinstance(status, status_pb2.Status)
    return status


def details(error: GatewayError) -> list[Message]:
    """The status's details, unpacked in order."""
    unpacked: list[Message] = []
    for packed in decoded(error).details:
        [detail_type] = [t for t in DETAIL_TYPES if packed.Is(t.DESCRIPTOR)]
        detail = detail_type()
        assert packed.Unpack(detail)
        unpacked.append(detail)
    return unpacked


def retry_info(seconds: int = 0, nanos: int = 0) -> error_details_pb2.RetryInfo:
    return RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds, nanos=nanos))


@pytest.mark.parametrize("reason", list(Reason), ids=lambda reason: reason.value)
def test_each_reason_has_the_grpc_code_of_its_status(reason: Reason) -> None:
    status = STATUS_OF[reason]
    grpc_status = to_grpc_status(GatewayError(reason, "what happened"))
    assert grpc_status.code is getattr(grpc.StatusCode, status.name)
    assert grpc_status.details == "what happened"
    # The rich status travels in the one trailer clients read it from.
    assert [key for key, _ in grpc_status.trailing_metadata] == ["grpc-status-details-bin"]
    status_proto = decoded(GatewayError(reason, "what happened"))
    assert (status_proto.code, status_proto.message) == (
        grpc_status.code.value[0],
        "what happened",
    )


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            GatewayError(Reason.INTERNAL, "a bug"),
            [ErrorInfo(reason="INTERNAL", domain=DOMAIN)],
        ),
        (
            GatewayError(Reason.ROUTE_NOT_FOUND, "no route named 'x'", metadata={"route": "x"}),
            [ErrorInfo(reason="ROUTE_NOT_FOUND", domain=DOMAIN, metadata={"route": "x"})],
        ),
        (
            GatewayError(Reason.INVALID_REQUEST, "role must be set", field="messages[2].role"),
            [
                ErrorInfo(reason="INVALID_REQUEST", domain=DOMAIN),
                BadRequest(field_violations=[BadRequest.FieldViolation(field="messages[2].role", description="role must be set")]),
            ],
        ),
        (
            GatewayError(Reason.RATE_LIMITED, "10 requests a minute", metadata={"limit": "route:chat/requests"}, quota_subject="route:chat/requests"),
            [
                ErrorInfo(reason="RATE_LIMITED", domain=DOMAIN, metadata={"limit": "route:chat/requests"}),
                QuotaFailure(violations=[QuotaFailure.Violation(subject="route:chat/requests", description="10 requests a minute")]),
            ],
        ),
        (
            GatewayError(Reason.UPSTREAM_UNAVAILABLE, "openai: overloaded", metadata={"provider": "openai", "http_status": "503"}, retry_after=2.0),
            [
                ErrorInfo(reason="UPSTREAM_UNAVAILABLE", domain=DOMAIN, metadata={"provider": "openai", "http_status": "503"}),
                retry_info(seconds=2),
            ],
        ),
        (
            GatewayError(Reason.TOKEN_LIMITED, "over budget", field="generation.max_tokens", quota_subject="key:alice/tokens", retry_after=1.25),
            [
                ErrorInfo(reason="TOKEN_LIMITED", domain=DOMAIN),
                BadRequest(field_violations=[BadRequest.FieldViolation(field="generation.max_tokens", description="over budget")]),
                QuotaFailure(violations=[QuotaFailure.Violation(subject="key:alice/tokens", description="over budget")]),
                retry_info(seconds=1, nanos=250_000_000),
            ],
        ),
    ],
    ids=[
        "error-info-only",
        "error-info-metadata",
        "bad-request-names-the-field",
        "quota-failure-names-the-limit",
        "retry-info",
        "every-detail-in-order",
    ],
)  # fmt: skip
def test_details(error: GatewayError, expected: list[Message]) -> None:
    assert details(error) == expected


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        (0.0, retry_info()),
        (0.001, retry_info(nanos=1_000_000)),
        (1.5, retry_info(seconds=1, nanos=500_000_000)),
        (30, retry_info(seconds=30)),
        (86_400.25, retry_info(seconds=86_400, nanos=250_000_000)),
        # Float error just under a whole second rounds up into it: a Duration's
        # nanos stay below one second, or clients that validate reject it.
        (0.9999999999, retry_info(seconds=1)),
        (59.99999999995, retry_info(seconds=60)),
    ],
    ids=[
        "zero-is-retry-now",
        "a-millisecond",
        "fractional",
        "whole-seconds",
        "a-day-and-a-quarter-second",
        "rounds-up-into-a-second",
        "rounds-up-into-a-minute",
    ],
)
def test_retry_delay(retry_after: float, expected: error_details_pb2.RetryInfo) -> None:
    error = GatewayError(Reason.UPSTREAM_UNAVAILABLE, "busy", retry_after=retry_after)
    assert details(error)[1:] == [expected]


def test_no_retry_after_means_no_retry_info() -> None:
    error = GatewayError(Reason.UPSTREAM_UNAVAILABLE, "busy", retry_after=None)
    assert [type(detail) for detail in details(error)] == [ErrorInfo]
