"""Gateway errors: every failure a caller can see is a `GatewayError`.

This module is the whole error vocabulary, in one place: `Status`, the gRPC
codes Sluice answers with (so this module needs no grpc import), and
`Reason`, the machine-readable reasons clients see in google.rpc ErrorInfo.
A reason always maps to the same status (`STATUS_OF`), so a `GatewayError`
is made from its reason; it carries string `metadata`, and optionally the
request field at fault (BadRequest), the limit that refused (QuotaFailure)
and when to retry (RetryInfo). Messages pass through `redaction.redact`, so a
configured secret never leaves in an error. The README's error table lists
every reason (a test checks it against `STATUS_OF`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

from sluice.redaction import redact
from sluice.truncation import truncate

DOMAIN = "sluice.v1"

# The most characters of caller input an error quotes back, and of any one
# ErrorInfo metadata value: trailers must stay well under a client's
# metadata limit (8 KiB by default), whatever the caller sent.
ECHO_LIMIT = 128
METADATA_VALUE_LIMIT = 1024


def truncated(text: str) -> str:
    """Caller input as an error may quote it."""
    return truncate(text, ECHO_LIMIT)


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


class Reason(enum.StrEnum):
    """ErrorInfo reasons: a contract with clients, each with one status."""

    # The request
    INVALID_REQUEST = "INVALID_REQUEST"  # a field is missing or out of range
    WRONG_ROUTE_TYPE = "WRONG_ROUTE_TYPE"  # e.g. Chat on an embeddings route
    ROUTE_NOT_FOUND = "ROUTE_NOT_FOUND"
    # Feedback for a call id that is unknown, expired or another caller's.
    CALL_NOT_FOUND = "CALL_NOT_FOUND"
    # The caller
    MISSING_API_KEY = "MISSING_API_KEY"
    MALFORMED_AUTHORIZATION = "MALFORMED_AUTHORIZATION"
    INVALID_API_KEY = "INVALID_API_KEY"
    # No key, and no configured identity in the client certificate or forwarded header.
    UNKNOWN_IDENTITY = "UNKNOWN_IDENTITY"
    ROUTE_NOT_ALLOWED = "ROUTE_NOT_ALLOWED"
    NAMESPACE_NOT_ALLOWED = "NAMESPACE_NOT_ALLOWED"  # a cache namespace the key may not claim
    # Sluice's own limits and state
    RATE_LIMITED = "RATE_LIMITED"
    TOKEN_LIMITED = "TOKEN_LIMITED"
    CONCURRENCY_LIMITED = "CONCURRENCY_LIMITED"
    BUDGET_EXHAUSTED = "BUDGET_EXHAUSTED"
    MODEL_UNPRICED = "MODEL_UNPRICED"
    STATE_UNAVAILABLE = "STATE_UNAVAILABLE"
    CIRCUIT_OPEN = "CIRCUIT_OPEN"
    GATEWAY_OVERLOADED = "GATEWAY_OVERLOADED"  # server.max_concurrent_calls are in flight
    # The reply is larger than server.max_send_message_bytes.
    RESPONSE_TOO_LARGE = "RESPONSE_TOO_LARGE"
    # The upstream
    UPSTREAM_BAD_REQUEST = "UPSTREAM_BAD_REQUEST"  # HTTP 400/413/422
    UPSTREAM_RATE_LIMITED = "UPSTREAM_RATE_LIMITED"  # HTTP 429
    UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"  # unreachable, reset, 5xx
    UPSTREAM_PROTOCOL_ERROR = "UPSTREAM_PROTOCOL_ERROR"  # undecodable or cut short
    # A unary body over the target's `max_response_bytes`.
    UPSTREAM_RESPONSE_TOO_LARGE = "UPSTREAM_RESPONSE_TOO_LARGE"
    # One stream event over the target's `max_event_bytes`.
    UPSTREAM_EVENT_TOO_LARGE = "UPSTREAM_EVENT_TOO_LARGE"
    UPSTREAM_TIMEOUT = "UPSTREAM_TIMEOUT"  # one of the target's own timeouts
    UPSTREAM_HTTP_TIMEOUT = "UPSTREAM_HTTP_TIMEOUT"  # the upstream answered 408/504
    UPSTREAM_NOT_FOUND = "UPSTREAM_NOT_FOUND"  # HTTP 404: the route's model or path
    UPSTREAM_PAYMENT_REQUIRED = "UPSTREAM_PAYMENT_REQUIRED"  # HTTP 402
    UPSTREAM_AUTH_FAILED = "UPSTREAM_AUTH_FAILED"  # HTTP 401/403: the gateway's credentials
    # Every connection to the upstream host (`model.max_connections`) stayed busy.
    UPSTREAM_CONNECTIONS_EXHAUSTED = "UPSTREAM_CONNECTIONS_EXHAUSTED"
    UNSUPPORTED_MODEL = "UNSUPPORTED_MODEL"  # the provider's wire format for it is unknown
    # A bug in Sluice (logged)
    INTERNAL = "INTERNAL"


STATUS_OF: Mapping[Reason, Status] = MappingProxyType(
    {
        Reason.INVALID_REQUEST: Status.INVALID_ARGUMENT,
        Reason.WRONG_ROUTE_TYPE: Status.INVALID_ARGUMENT,
        Reason.ROUTE_NOT_FOUND: Status.NOT_FOUND,
        Reason.CALL_NOT_FOUND: Status.NOT_FOUND,
        Reason.MISSING_API_KEY: Status.UNAUTHENTICATED,
        Reason.MALFORMED_AUTHORIZATION: Status.UNAUTHENTICATED,
        Reason.INVALID_API_KEY: Status.UNAUTHENTICATED,
        Reason.UNKNOWN_IDENTITY: Status.UNAUTHENTICATED,
        Reason.ROUTE_NOT_ALLOWED: Status.PERMISSION_DENIED,
        Reason.NAMESPACE_NOT_ALLOWED: Status.PERMISSION_DENIED,
        Reason.RATE_LIMITED: Status.RESOURCE_EXHAUSTED,
        Reason.TOKEN_LIMITED: Status.RESOURCE_EXHAUSTED,
        Reason.CONCURRENCY_LIMITED: Status.RESOURCE_EXHAUSTED,
        Reason.BUDGET_EXHAUSTED: Status.RESOURCE_EXHAUSTED,
        Reason.MODEL_UNPRICED: Status.FAILED_PRECONDITION,
        Reason.STATE_UNAVAILABLE: Status.UNAVAILABLE,
        Reason.CIRCUIT_OPEN: Status.UNAVAILABLE,
        Reason.GATEWAY_OVERLOADED: Status.RESOURCE_EXHAUSTED,
        Reason.RESPONSE_TOO_LARGE: Status.RESOURCE_EXHAUSTED,
        Reason.UPSTREAM_BAD_REQUEST: Status.INVALID_ARGUMENT,
        Reason.UPSTREAM_RATE_LIMITED: Status.RESOURCE_EXHAUSTED,
        Reason.UPSTREAM_UNAVAILABLE: Status.UNAVAILABLE,
        Reason.UPSTREAM_PROTOCOL_ERROR: Status.UNAVAILABLE,
        Reason.UPSTREAM_RESPONSE_TOO_LARGE: Status.UNAVAILABLE,
        Reason.UPSTREAM_EVENT_TOO_LARGE: Status.UNAVAILABLE,
        # Sluice's own timeouts are worth retrying elsewhere; an upstream's
        # 408/504 says the upstream itself gave up.
        Reason.UPSTREAM_TIMEOUT: Status.UNAVAILABLE,
        Reason.UPSTREAM_HTTP_TIMEOUT: Status.DEADLINE_EXCEEDED,
        Reason.UPSTREAM_NOT_FOUND: Status.FAILED_PRECONDITION,
        Reason.UPSTREAM_PAYMENT_REQUIRED: Status.FAILED_PRECONDITION,
        # The caller cannot fix the gateway's credentials.
        Reason.UPSTREAM_AUTH_FAILED: Status.INTERNAL,
        Reason.UPSTREAM_CONNECTIONS_EXHAUSTED: Status.RESOURCE_EXHAUSTED,
        Reason.UNSUPPORTED_MODEL: Status.FAILED_PRECONDITION,
        Reason.INTERNAL: Status.INTERNAL,
    }
)


class GatewayError(Exception):
    """A failure with the status, reason and details a caller receives."""

    def __init__(
        self,
        reason: Reason,
        message: str,
        *,
        metadata: Mapping[str, str] | None = None,
        field: str = "",
        retry_after: float | None = None,
        quota_subject: str = "",
    ) -> None:
        self.reason = reason
        self.status = STATUS_OF[reason]
        self.message = redact(message)
        self.metadata = {
            k: truncate(redact(v), METADATA_VALUE_LIMIT) for k, v in (metadata or {}).items() if v
        }
        self.field = field
        self.retry_after = retry_after
        # The limit a RESOURCE_EXHAUSTED refusal names (QuotaFailure).
        self.quota_subject = quota_subject
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"GatewayError({self.status.name}, {self.reason!r}, {self.message!r})"


def invalid_argument(field: str, message: str) -> GatewayError:
    return GatewayError(Reason.INVALID_REQUEST, message, field=field)


def quota_exceeded(
    reason: Reason, subject: str, message: str, retry_after: float | None = None
) -> GatewayError:
    """A limit or budget of the gateway refused the call. `subject` names the
    limit (e.g. "route:chat/requests"), as QuotaFailure reports it."""
    return GatewayError(
        reason,
        message,
        metadata={"limit": subject},
        retry_after=retry_after,
        quota_subject=subject,
    )


# A refused call's retry hint: a burst's overflow comes back once the calls
# ahead of it have had a moment to finish, instead of at once.
OVERLOADED_RETRY_AFTER = 0.1


def gateway_overloaded(limit: int) -> GatewayError:
    """The worker already runs `limit` calls (`server.max_concurrent_calls`)."""
    return quota_exceeded(
        Reason.GATEWAY_OVERLOADED,
        "server:max_concurrent_calls",
        f"the gateway is running its maximum of {limit} concurrent calls; retry shortly",
        retry_after=OVERLOADED_RETRY_AFTER,
    )


def state_unavailable(feature: str) -> GatewayError:
    """Shared state is down and the route's policy for `feature` is fail_closed."""
    return GatewayError(
        Reason.STATE_UNAVAILABLE,
        f"the gateway's shared state is unavailable and {feature} fail closed",
        metadata={"feature": feature},
    )


def route_not_found(route: str) -> GatewayError:
    """No route is named `route`, which is the caller's and may be of any length."""
    return GatewayError(
        Reason.ROUTE_NOT_FOUND,
        f"no route named {truncated(route)!r}",
        metadata={"route": truncated(route)},
    )


def call_not_found(call_id: str) -> GatewayError:
    """No call of this caller has `call_id` (one message for every case, so
    another caller's ids cannot be told from unknown ones)."""
    return GatewayError(
        Reason.CALL_NOT_FOUND,
        f"no call {truncated(call_id)!r} of this caller is retained",
        metadata={"call_id": truncated(call_id)},
    )


def response_too_large(size: int, limit: int) -> GatewayError:
    """The reply would exceed `server.max_send_message_bytes`: refused here, so
    the call is recorded as the caller sees it, not as OK."""
    return GatewayError(
        Reason.RESPONSE_TOO_LARGE,
        f"the reply is {size} bytes, over the gateway's limit of {limit} "
        "(server.max_send_message_bytes): ask for fewer inputs or dimensions",
        metadata={"limit": "server:max_send_message_bytes"},
        quota_subject="server:max_send_message_bytes",
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
            Reason.UPSTREAM_AUTH_FAILED,
            f"{provider} rejected the gateway's credentials (HTTP {http_status})",
            metadata=metadata,
        )
    reason = _HTTP_REASONS.get(http_status, Reason.UPSTREAM_UNAVAILABLE)
    return GatewayError(
        reason,
        f"{provider}: {message}",
        metadata=metadata,
        # Only a refusal that may pass later says when to come back.
        retry_after=retry_after if reason in _RETRY_LATER else None,
    )


# Upstream HTTP errors other than 401/403; anything unlisted (5xx) is UNAVAILABLE.
_HTTP_REASONS: Mapping[int, Reason] = MappingProxyType(
    {
        400: Reason.UPSTREAM_BAD_REQUEST,
        413: Reason.UPSTREAM_BAD_REQUEST,
        422: Reason.UPSTREAM_BAD_REQUEST,
        # Out of credit with the provider: the operator's to fix, not retryable.
        402: Reason.UPSTREAM_PAYMENT_REQUIRED,
        # The route's model or base URL is wrong: the operator's to fix.
        404: Reason.UPSTREAM_NOT_FOUND,
        408: Reason.UPSTREAM_HTTP_TIMEOUT,
        504: Reason.UPSTREAM_HTTP_TIMEOUT,
        429: Reason.UPSTREAM_RATE_LIMITED,
    }
)
_RETRY_LATER = frozenset({Reason.UPSTREAM_RATE_LIMITED, Reason.UPSTREAM_UNAVAILABLE})


def upstream_timeout(provider: str, kind: str, message: str) -> GatewayError:
    """An upstream exceeded one of its target's timeouts (`kind`: connect,
    first_token, idle, total): retryable, unlike the caller's own deadline."""
    return GatewayError(
        Reason.UPSTREAM_TIMEOUT,
        f"{provider}: {message}",
        metadata={"provider": provider, "timeout": kind},
    )


def upstream_unreachable(provider: str, message: str) -> GatewayError:
    return GatewayError(
        Reason.UPSTREAM_UNAVAILABLE,
        f"{provider}: {message}",
        metadata={"provider": provider},
    )


def upstream_protocol_error(provider: str, message: str) -> GatewayError:
    """The upstream sent something we cannot decode, or cut its stream short."""
    return GatewayError(
        Reason.UPSTREAM_PROTOCOL_ERROR,
        f"{provider}: {message}",
        metadata={"provider": provider},
    )


def upstream_too_large(
    provider: str, what: Literal["response", "event"], limit: int
) -> GatewayError:
    """The upstream sent more than a bound lets Sluice hold: `what` is
    "response" (`max_response_bytes`) or "event" (`max_event_bytes`)."""
    too_large = Reason.UPSTREAM_RESPONSE_TOO_LARGE, Reason.UPSTREAM_EVENT_TOO_LARGE
    reason = too_large[0] if what == "response" else too_large[1]
    return GatewayError(
        reason,
        f"{provider}: the upstream's {what} is larger than max_{what}_bytes ({limit} bytes)",
        metadata={"provider": provider, "limit": f"max_{what}_bytes"},
    )
