"""Python client for the Sluice LLM gateway (sluice.v1).

    from sluice_client import Client, ConnectionOptions, system, user

    with Client(ConnectionOptions(target="sluice:50051", api_key="sk-...")) as client:
        reply = client.chat("chat", [system("Be brief."), user("Hi!")])
        print(reply.text)

`AsyncClient` has the same calls for asyncio. The generated protos and stubs
are in `sluice_client.v1`.
"""

from sluice_client._client import AsyncClient, Client
from sluice_client._config import (
    ConnectionOptions,
    KeepAliveConfig,
    PlaintextKeyWarning,
    TLSConfig,
)
from sluice_client._errors import (
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
from sluice_client._messages import (
    ContentLike,
    MessageLike,
    ToolCallLike,
    assistant,
    image,
    system,
    tool_result,
    user,
)
from sluice_client._requests import GenerationLike, ToolChoiceLike, ToolLike
from sluice_client._results import (
    Attempt,
    Embeddings,
    FinishReason,
    Reply,
    ReplyBuilder,
    ToolCall,
    Usage,
)

__all__ = [
    "AsyncClient",
    "Attempt",
    "Client",
    "ConnectionOptions",
    "ContentLike",
    "DeadlineExceededError",
    "Embeddings",
    "FailedPreconditionError",
    "FieldViolation",
    "FinishReason",
    "GenerationLike",
    "InternalError",
    "InvalidArgumentError",
    "KeepAliveConfig",
    "MessageLike",
    "NotFoundError",
    "PermissionDeniedError",
    "PlaintextKeyWarning",
    "QuotaViolation",
    "Reply",
    "ReplyBuilder",
    "RequestCancelledError",
    "ResourceExhaustedError",
    "SluiceError",
    "TLSConfig",
    "ToolCall",
    "ToolCallLike",
    "ToolChoiceLike",
    "ToolLike",
    "UnauthenticatedError",
    "UnavailableError",
    "Usage",
    "assistant",
    "image",
    "system",
    "tool_result",
    "user",
]
