"""Errors raised by Sluice calls.

Every failed call raises a `SluiceError`, from the call itself for unary
calls and from iteration for streams (a stream that fails after some events
raises when iteration reaches the failure). The subclass says what the gRPC
status was:

    SluiceError                  any failure; statuses below without a class raise it
      InvalidArgumentError       INVALID_ARGUMENT   the request is wrong (see field_violations)
      NotFoundError              NOT_FOUND          no route by that name
      UnauthenticatedError       UNAUTHENTICATED    missing or unknown API key
      PermissionDeniedError      PERMISSION_DENIED  the key may not use the route
      ResourceExhaustedError     RESOURCE_EXHAUSTED a limit was hit (see retry_after)
      FailedPreconditionError    FAILED_PRECONDITION the route is misconfigured
      UnavailableError           UNAVAILABLE        the upstream or the gateway is down; retryable
      DeadlineExceededError      DEADLINE_EXCEEDED  the call's deadline passed
      RequestCancelledError      CANCELLED          the call was cancelled
      InternalError              INTERNAL           the gateway failed, or broke the protocol

The server's google.rpc details are parsed into `reason`, `domain` and
`metadata` (ErrorInfo), `field_violations` (BadRequest), `quota_violations`
(QuotaFailure) and `retry_after` (RetryInfo).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, NamedTuple, cast

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

# The trailer where gRPC carries a serialized google.rpc.Status.
_DETAILS_KEY = "grpc-status-details-bin"


class FieldViolation(NamedTuple):
    """A request field the server rejected, and why."""

    field: str
    """Path of the field, e.g. "messages[1].parts[0].image"."""
    description: str


class QuotaViolation(NamedTuple):
    """A limit of the gateway that refused the call."""

    subject: str
    """The limit, e.g. "route:chat/requests" or "key:alice/budget"."""
    description: str


class SluiceError(Exception):
    """A call failed with a gRPC status."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Iterable[FieldViolation] = (),
        quota_violations: Iterable[QuotaViolation] = (),
        retry_after: float | None = None,
    ) -> None:
        # Both positional arguments in `args`, so the error survives pickling
        # (e.g. out of a process pool); the keyword ones travel in __dict__.
        super().__init__(code, message)
        self.code = code
        """The gRPC status code."""
        self.message = message
        """The status message, for people."""
        self.reason = reason
        """A stable machine-readable cause (ErrorInfo.reason), e.g. "ROUTE_NOT_FOUND"."""
        self.domain = domain
        """Who set `reason` (ErrorInfo.domain): "sluice.v1" for the gateway."""
        self.metadata = dict(metadata or {})
        """Facts about the failure (ErrorInfo.metadata), e.g. {"route": "chat"}."""
        self.field_violations = list(field_violations)
        """Rejected request fields (BadRequest), for INVALID_ARGUMENT."""
        self.quota_violations = list(quota_violations)
        """The limits that refused the call (QuotaFailure), for RESOURCE_EXHAUSTED."""
        self.retry_after = retry_after
        """Seconds to wait before retrying (RetryInfo), when the server knows."""

    def __str__(self) -> str:
        reason = f" [{self.reason}]" if self.reason else ""
        return f"{self.code.name}: {self.message}{reason}"


class InvalidArgumentError(SluiceError):
    """INVALID_ARGUMENT: the request is wrong; `field_violations` says where."""


class NotFoundError(SluiceError):
    """NOT_FOUND: no route by that name."""


class UnauthenticatedError(SluiceError):
    """UNAUTHENTICATED: the API key is missing or unknown."""


class PermissionDeniedError(SluiceError):
    """PERMISSION_DENIED: the API key may not make this call."""


class ResourceExhaustedError(SluiceError):
    """RESOURCE_EXHAUSTED: a rate or token limit was hit; see `quota_violations`
    and `retry_after`."""


class FailedPreconditionError(SluiceError):
    """FAILED_PRECONDITION: the route cannot answer as configured."""


class UnavailableError(SluiceError):
    """UNAVAILABLE: the upstream or the gateway cannot be reached; retryable."""


class DeadlineExceededError(SluiceError):
    """DEADLINE_EXCEEDED: the call's deadline passed."""


class RequestCancelledError(SluiceError):
    """CANCELLED: the call was cancelled, by the client or the server."""


class InternalError(SluiceError):
    """INTERNAL: the gateway failed, or its stream broke the protocol."""


_ERROR_CLASSES: dict[grpc.StatusCode, type[SluiceError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.CANCELLED: RequestCancelledError,
    grpc.StatusCode.INTERNAL: InternalError,
}


def error_from_rpc(error: grpc.RpcError) -> SluiceError:
    """The `SluiceError` for a failed call, sync or async."""
    code = error.code()
    error_class = _ERROR_CLASSES.get(code, SluiceError)
    sluice_error = error_class(code, error.details() or "")
    # Read directly rather than with grpc_status.rpc_status.from_call, which
    # raises when the status message differs from the one in the details
    # (e.g. rewritten by a proxy): reporting a failure must never fail, so
    # details that cannot be read are left out. The stubs type sync trailers
    # as objects; at runtime sync and aio trailers alike are (key, value) pairs.
    trailers = cast("Iterable[tuple[str, str | bytes]]", error.trailing_metadata() or ())
    for key, value in trailers:
        if key == _DETAILS_KEY and isinstance(value, bytes):
            with contextlib.suppress(DecodeError):
                _add_details(sluice_error, status_pb2.Status.FromString(value))
    return sluice_error


def _add_details(error: SluiceError, status: status_pb2.Status) -> None:
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            error.reason, error.domain = info.reason, info.domain
            error.metadata.update(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            error.field_violations += [
                FieldViolation(v.field, v.description) for v in bad_request.field_violations
            ]
        elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota_failure = error_details_pb2.QuotaFailure()
            detail.Unpack(quota_failure)
            error.quota_violations += [
                QuotaViolation(v.subject, v.description) for v in quota_failure.violations
            ]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry_info = error_details_pb2.RetryInfo()
            detail.Unpack(retry_info)
            error.retry_after = retry_info.retry_delay.ToTimedelta().total_seconds()
