"""Gateway errors: every failure a caller can see is a `GatewayError`.

A `GatewayError` carries the gRPC status it maps to (as `Status`, so this
module needs no grpc import), a machine-readable `reason` for google.rpc
ErrorInfo, string `metadata`, and optionally the request field at fault
(BadRequest) and when to retry (RetryInfo). Messages pass through
`redaction.redact`, so a configured secret never leaves in an error.

    GatewayError
      status=INVALID_ARGUMENT   bad request field, or upstream 400/413/422
      status=NOT_FOUND          unknown route
      status=UNAVAILABLE        upstream unreachable, 5xx, reset, truncated stream
      status=RESOURCE_EXHAUSTED upstream 429 (retry_after when it says)
      status=DEADLINE_EXCEEDED  upstream timed out
      status=FAILED_PRECONDITION upstream 404 (model/path) or 402 (out of credit)
      status=INTERNAL           upstream rejected the gateway's own key, or a bug
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from sluice.redaction import redact

DOMAIN = "sluice.v1"


class Status(enum.Enum):
    """The gRPC status codes Sluice answers with (names as in grpc.StatusCode)."""

    CANCELLED = "CANCELLED"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    NOT_FOUND = "NOT_FOUND"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    INTERNAL = "INTERNAL"
    UNAVAILABLE = "UNAVAILABLE"
    UNAUTHENTICATED = "UNAUTHENTICATED"


class GatewayError(Exception):
    """A failure with the status, reason and details a caller receives."""

    def __init__(
        self,
        status: Status,
        reason: str,
        message: str,
        *,
        metadata: Mapping[str, str] | None = None,
        field: str = "",
        retry_after: float | None = None,
        quota_subject: str = "",
    ) -> None:
        self.status = status
        self.reason = reason
        self.message = redact(message)
        self.metadata = {k: redact(v) for k, v in (metadata or {}).items() if v}
        self.field = field
        self.retry_after = retry_after
        # The limit a RESOURCE_EXHAUSTED refusal names (QuotaFailure).
        self.quota_subject = quota_subject
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"GatewayError({self.status.name}, {self.reason!r}, {self.message!r})"


def invalid_argument(field: str, message: str) -> GatewayError:
    return GatewayError(Status.INVALID_ARGUMENT, "INVALID_REQUEST", message, field=field)


def quota_exceeded(
    reason: str, subject: str, message: str, retry_after: float | None = None
) -> GatewayError:
    """A limit or budget of the gateway refused the call. `subject` names the
    limit (e.g. "route:chat/requests"), as QuotaFailure reports it."""
    return GatewayError(
        Status.RESOURCE_EXHAUSTED,
        reason,
        message,
        metadata={"limit": subject},
        retry_after=retry_after,
        quota_subject=subject,
    )


def state_unavailable(feature: str) -> GatewayError:
    """Shared state is down and the route's policy for `feature` is fail_closed."""
    return GatewayError(
        Status.UNAVAILABLE,
        "STATE_UNAVAILABLE",
        f"the gateway's shared state is unavailable and {feature} fail closed",
        metadata={"feature": feature},
    )


def route_not_found(route: str) -> GatewayError:
    return GatewayError(
        Status.NOT_FOUND,
        "ROUTE_NOT_FOUND",
        f"no route named {route!r}",
        metadata={"route": route},
    )


def upstream_http_error(
    provider: str,
    http_status: int,
    message: str,
    *,
    error_type: str = "",
    request_id: str = "",
    retry_after: float | None = None,
    details: Mapping[str, str] | None = None,
) -> GatewayError:
    """Map an upstream HTTP error (or an in-stream error given an equivalent
    status) to the status the caller should act on. `details` adds
    provider-specific ErrorInfo metadata (e.g. a content filter's verdict)."""
    metadata = {
        "provider": provider,
        "http_status": str(http_status),
        "upstream_type": error_type,
        "upstream_request_id": request_id,
        **(details or {}),
    }
    if http_status in (401, 403):
        # The caller cannot fix our credentials, and the provider's message may
        # quote part of the key: say only what happened.
        return GatewayError(
            Status.INTERNAL,
            "UPSTREAM_AUTH_FAILED",
            f"{provider} rejected the gateway's credentials (HTTP {http_status})",
            metadata=metadata,
        )
    if http_status == 429:
        return GatewayError(
            Status.RESOURCE_EXHAUSTED,
            "UPSTREAM_RATE_LIMITED",
            f"{provider}: {message}",
            metadata=metadata,
            retry_after=retry_after,
        )
    if http_status in (400, 413, 422):
        return GatewayError(
            Status.INVALID_ARGUMENT,
            "UPSTREAM_BAD_REQUEST",
            f"{provider}: {message}",
            metadata=metadata,
        )
    if http_status == 402:
        # Out of credit with the provider: the operator's to fix, not retryable.
        return GatewayError(
            Status.FAILED_PRECONDITION,
            "UPSTREAM_PAYMENT_REQUIRED",
            f"{provider}: {message}",
            metadata=metadata,
        )
    if http_status == 404:
        # The route's model or base URL is wrong: the operator's to fix.
        return GatewayError(
            Status.FAILED_PRECONDITION,
            "UPSTREAM_NOT_FOUND",
            f"{provider}: {message}",
            metadata=metadata,
        )
    if http_status in (408, 504):
        return GatewayError(
            Status.DEADLINE_EXCEEDED,
            "UPSTREAM_TIMEOUT",
            f"{provider}: {message}",
            metadata=metadata,
        )
    return GatewayError(
        Status.UNAVAILABLE,
        "UPSTREAM_UNAVAILABLE",
        f"{provider}: {message}",
        metadata=metadata,
        retry_after=retry_after,
    )


def upstream_timeout(provider: str, kind: str, message: str) -> GatewayError:
    """An upstream exceeded one of its target's timeouts (`kind`: connect,
    first_token, idle, total): retryable, unlike the caller's own deadline."""
    return GatewayError(
        Status.UNAVAILABLE,
        "UPSTREAM_TIMEOUT",
        f"{provider}: {message}",
        metadata={"provider": provider, "timeout": kind},
    )


def upstream_unreachable(provider: str, message: str) -> GatewayError:
    return GatewayError(
        Status.UNAVAILABLE,
        "UPSTREAM_UNAVAILABLE",
        f"{provider}: {message}",
        metadata={"provider": provider},
    )


def upstream_protocol_error(provider: str, message: str) -> GatewayError:
    """The upstream sent something we cannot decode, or cut its stream short."""
    return GatewayError(
        Status.UNAVAILABLE,
        "UPSTREAM_PROTOCOL_ERROR",
        f"{provider}: {message}",
        metadata={"provider": provider},
    )
