"""Request bytes -> request messages, where grpc.aio parses them.

grpc.aio runs a method's request deserializer before the handler; if it
raises, grpc answers UNKNOWN with the exception's name and logs a traceback,
per request. Here a message that does not parse (corrupt wire format, bad
UTF-8 in a string, nesting past protobuf's depth limit) becomes a
`MalformedRequest` instead, which the handler refuses as INVALID_ARGUMENT
like any other bad request; the cause is logged once per interval.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from sluice.errors import GatewayError, invalid_argument
from sluice.log_throttle import ThrottledLog
from sluice_client.v1 import gateway_pb2 as pb
from sluice_client.v1 import gateway_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)
_malformed_log = ThrottledLog(logger)

SERVICE = pb.DESCRIPTOR.services_by_name["GatewayService"].full_name

_Message = TypeVar("_Message", bound=Message)


@dataclass(frozen=True, slots=True)
class MalformedRequest:
    """Bytes that are no valid request message, and why."""

    cause: str

    def refusal(self) -> GatewayError:
        return invalid_argument("", f"the request is not a valid message: {self.cause}")


def lenient(message: type[_Message]) -> Callable[[bytes], _Message | MalformedRequest]:
    """`message`'s deserializer that returns a `MalformedRequest` instead of raising."""
    name = message.DESCRIPTOR.full_name

    def deserialize(data: bytes) -> _Message | MalformedRequest:
        try:
            return message.FromString(data)
        except DecodeError as exc:
            # upb says "Error parsing message with type '<name>': <cause>";
            # the cause alone is a short, fixed phrase.
            cause = str(exc).rpartition(": ")[2] or "unparseable"
            _malformed_log.report(cause, "refused a malformed %s: %s", name, cause)
            return MalformedRequest(cause)

    return deserialize


# Each method of the service: how grpc calls it, its request and response.
_METHODS: dict[
    str, tuple[Callable[..., grpc.RpcMethodHandler[Any, Any]], type[Message], type[Message]]
] = {
    "Chat": (grpc.unary_stream_rpc_method_handler, pb.ChatRequest, pb.ChatResponse),
    "Complete": (grpc.unary_stream_rpc_method_handler, pb.CompleteRequest, pb.CompleteResponse),
    "Embed": (grpc.unary_unary_rpc_method_handler, pb.EmbedRequest, pb.EmbedResponse),
    "ListRoutes": (
        grpc.unary_unary_rpc_method_handler,
        pb.ListRoutesRequest,
        pb.ListRoutesResponse,
    ),
    "Feedback": (grpc.unary_unary_rpc_method_handler, pb.FeedbackRequest, pb.FeedbackResponse),
    "GetExperiment": (
        grpc.unary_unary_rpc_method_handler,
        pb.GetExperimentRequest,
        pb.GetExperimentResponse,
    ),
}


def add_gateway_service(servicer: pb_grpc.GatewayServiceServicer, server: grpc.aio.Server) -> None:
    """Serve `servicer` on `server` as the generated
    add_GatewayServiceServicer_to_server does, with lenient deserializers."""
    handlers = {
        name: handler(
            getattr(servicer, name),
            request_deserializer=lenient(request),
            response_serializer=response.SerializeToString,
        )
        for name, (handler, request, response) in _METHODS.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
