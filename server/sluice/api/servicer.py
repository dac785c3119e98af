"""The sluice.v1.GatewayService implementation."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing, contextmanager
from typing import Any, NoReturn, TypeVar

import grpc

from sluice import domain
from sluice.api import experiments, requests, responses
from sluice.api.decoding import MalformedRequest
from sluice.api.status import to_grpc_status
from sluice.config.schema import RequestLimits
from sluice.errors import (
    GatewayError,
    Reason,
    Status,
    gateway_overloaded,
    response_too_large,
    route_not_found,
)
from sluice.gateway import Gateway
from sluice.identity import Caller, allows
from sluice.pipeline import Call
from sluice.redaction import redact
from sluice.reload import GatewayHolder
from sluice.resilience.circuit_breaker import CircuitState
from sluice.routes import RouteTable
from sluice.state.experiments import CallRecord
from sluice.telemetry import Telemetry, semconv
from sluice.telemetry.call import CallFacts, CallObservation
from sluice.telemetry.feedback import report_feedback
from sluice_client.v1 import gateway_pb2 as pb
from sluice_client.v1 import gateway_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

# The call's id in its initial metadata, as in its access log line and span.
CALL_ID_METADATA = "sluice-call-id"

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")

_CIRCUIT_STATES = {
    CircuitState.CLOSED: pb.CIRCUIT_STATE_CLOSED,
    CircuitState.OPEN: pb.CIRCUIT_STATE_OPEN,
    CircuitState.HALF_OPEN: pb.CIRCUIT_STATE_HALF_OPEN,
}


class GatewayServicer(pb_grpc.GatewayServiceServicer):
    """Chat, Complete and Embed calls beyond `max_calls` in flight are
    refused at once (GATEWAY_OVERLOADED, with a retry hint). A request that
    did not parse arrives as a `MalformedRequest` and is refused like any
    invalid one; an Embed reply over `max_send_bytes` is refused
    (RESPONSE_TOO_LARGE) before grpc would fail to send it."""

    def __init__(
        self, gateways: GatewayHolder, telemetry: Telemetry, *, max_calls: int, max_send_bytes: int
    ) -> None:
        self._gateways = gateways
        self._telemetry = telemetry
        self._max_calls = max_calls
        self._max_send_bytes = max_send_bytes
        self._calls = 0
        self._recording: set[asyncio.Task[None]] = set()

    @property
    def _gateway(self) -> Gateway:
        """The gateway of the running config: a reload replaces it."""
        return self._gateways.current

    async def Chat(  # noqa: N802 (gRPC method name)
        self,
        request: pb.ChatRequest | MalformedRequest,
        context: grpc.aio.ServicerContext[pb.ChatRequest, pb.ChatResponse],
    ) -> AsyncIterator[pb.ChatResponse]:
        async for response in self._stream(
            context, "Chat", _decoder(request, requests.chat_request), responses.chat_response
        ):
            yield response

    async def Complete(  # noqa: N802
        self,
        request: pb.CompleteRequest | MalformedRequest,
        context: grpc.aio.ServicerContext[pb.CompleteRequest, pb.CompleteResponse],
    ) -> AsyncIterator[pb.CompleteResponse]:
        async for response in self._stream(
            context,
            "Complete",
            _decoder(request, requests.completion_request),
            responses.completion_response,
        ):
            yield response

    async def Embed(  # noqa: N802
        self,
        request: pb.EmbedRequest | MalformedRequest,
        context: grpc.aio.ServicerContext[pb.EmbedRequest, pb.EmbedResponse],
    ) -> pb.EmbedResponse:
        reply = pb.EmbedResponse()
        async for _ in self._stream(
            context,
            "Embed",
            _decoder(request, requests.embedding_request),
            lambda event: self._add_to_reply(reply, event),
        ):
            pass
        return reply

    async def ListRoutes(  # noqa: N802
        self,
        request: pb.ListRoutesRequest | MalformedRequest,
        context: grpc.aio.ServicerContext[pb.ListRoutesRequest, pb.ListRoutesResponse],
    ) -> pb.ListRoutesResponse:
        """The routes the caller may use (every route when auth is off), with
        each target's circuit state."""
        return await self._unary(context, "ListRoutes", request, self._list_routes)

    async def Feedback(  # noqa: N802
        self,
        request: pb.FeedbackRequest | MalformedRequest,
        context: grpc.aio.ServicerContext[pb.FeedbackRequest, pb.FeedbackResponse],
    ) -> pb.FeedbackResponse:
        """Feedback on one of the caller's own earlier calls."""
        return await self._unary(context, "Feedback", request, self._feedback)

    async def GetExperiment(  # noqa: N802
        self,
        request: pb.GetExperimentRequest | MalformedRequest,
        context: grpc.aio.ServicerContext[pb.GetExperimentRequest, pb.GetExperimentResponse],
    ) -> pb.GetExperimentResponse:
        """An experiment route's results; NOT_FOUND for a route the caller
        may not use, as for one that is no experiment or does not exist."""
        return await self._unary(context, "GetExperiment", request, self._experiment)

    async def _unary(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
        request: _Request | MalformedRequest,
        answer: Callable[[Gateway, Caller | None, _Request], Awaitable[_Response]],
    ) -> _Response:
        """Identify the caller and answer `request`; a GatewayError ends the
        RPC with its status and details."""
        gateway = self._gateway
        headers = _headers(context)
        observation = CallObservation(self._telemetry, method, headers)
        error: GatewayError | None = None
        try:
            await _send_call_id(context, observation)
            caller = self._identify(gateway, headers, observation, context)
            if isinstance(request, MalformedRequest):
                raise request.refusal()
            return await answer(gateway, caller, request)
        except GatewayError as refused:
            error = refused
            await _abort(context, refused)
        finally:
            observation.end(None, error.status if error else None, error)

    @staticmethod
    async def _list_routes(
        gateway: Gateway, caller: Caller | None, request: pb.ListRoutesRequest
    ) -> pb.ListRoutesResponse:
        return pb.ListRoutesResponse(
            routes=[
                pb.Route(
                    name=route.name,
                    route_type=responses.ROUTE_TYPES[route.operation],
                    targets=[
                        pb.Target(
                            provider=t.provider,
                            model=t.model,
                            weight=t.weight,
                            name=t.variant,
                            circuit_state=_CIRCUIT_STATES[gateway.breakers.state(route, t)],
                        )
                        for t in route.targets
                    ],
                    strategy=route.strategy,
                )
                for route in gateway.routes
                if allows(caller, route.name)
            ]
        )

    async def _feedback(
        self, gateway: Gateway, caller: Caller | None, request: pb.FeedbackRequest
    ) -> pb.FeedbackResponse:
        given = experiments.feedback(request)
        owner = caller.name if caller is not None else ""
        taken = await gateway.experiments.feedback(given.call_id, owner, given.name, given.value)
        report_feedback(
            self._telemetry, given.call_id, given.name, given.value, taken, comment=given.comment
        )
        return pb.FeedbackResponse(replaced=taken.replaced)

    @staticmethod
    async def _experiment(
        gateway: Gateway, caller: Caller | None, request: pb.GetExperimentRequest
    ) -> pb.GetExperimentResponse:
        window = experiments.window(request)
        name = request.route
        route = gateway.routes.get(name) if name in gateway.routes else None
        if route is None or not route.is_experiment or not allows(caller, name):
            raise route_not_found(name)
        since = None if window is None else time.time() - window
        return experiments.experiment_response(await gateway.experiments.results(route, since))

    async def _stream(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
        decode: Callable[[RequestLimits], domain.Request],
        encode: Callable[[domain.Event], _Response],
    ) -> AsyncIterator[_Response]:
        """Run one call through the pipeline; a GatewayError, before or after
        the first event, ends the RPC with its status and details."""
        headers = _headers(context)
        observation = CallObservation(self._telemetry, method, headers)
        call: Call | None = None
        status: Status | None = None
        error: GatewayError | None = None
        gateway = self._gateway
        try:
            await _send_call_id(context, observation)
            # The gateway a call starts on serves it to the end, across reloads.
            with self._admitted(), self._gateways.lease() as gateway:
                # Identify the caller first: without a valid key, nothing else is answered.
                caller = self._identify(gateway, headers, observation, context)
                limits = gateway.config.server.request_limits
                call = Call(decode(limits), headers, caller=caller, trace=observation.trace)
                async with aclosing(gateway.handle(call)) as events:
                    async for event in events:
                        sent = _with_call_id(event, observation.call_id)
                        observation.observe(sent)
                        yield encode(sent)
        except GatewayError as failure:
            status, error = failure.status, failure
            await _abort(context, failure)
        except Exception:
            logger.exception("unexpected error in %s", type(self).__name__)
            status = Status.INTERNAL
            error = GatewayError(Reason.INTERNAL, "internal gateway error")
            await _abort(context, error)
        except BaseException:  # the caller left (cancelled, or its deadline passed)
            remaining = context.time_remaining()
            expired = remaining is not None and remaining <= 0
            status = Status.DEADLINE_EXCEEDED if expired else Status.CANCELLED
            raise
        finally:
            observation.end(_facts(call, self._gateways.current.routes), status, error)
            await self._record(gateway, call, observation, status)

    async def _record(
        self,
        gateway: Gateway,
        call: Call | None,
        observation: CallObservation,
        status: Status | None,
    ) -> None:
        """Record an experiment route's call before its status reaches the
        caller, so feedback sent right after finds it; a call the caller left
        is recorded in the background instead (awaiting would be cancelled)."""
        variant = None if call is None else gateway.experiments.variant_of(call)
        if call is None or call.route is None or variant is None:
            return
        usage = observation.usage
        trace_id, span_id = observation.trace_ids
        record = gateway.experiments.record(
            CallRecord(
                call_id=observation.call_id,
                route=call.route.name,
                variant=variant,
                caller=call.caller.name if call.caller is not None else "",
                failed=status not in (None, Status.CANCELLED),
                ttft=observation.time_to_first_chunk,
                output_tokens=usage.output_tokens if usage is not None else None,
                cost=call.cost,
                trace_id=trace_id,
                span_id=span_id,
            )
        )
        if status in (Status.CANCELLED, Status.DEADLINE_EXCEEDED):
            task = asyncio.get_running_loop().create_task(record)
            self._recording.add(task)
            task.add_done_callback(self._recording.discard)
        else:
            await record

    def _add_to_reply(self, reply: pb.EmbedResponse, event: domain.Event) -> None:
        """Add `event` to an Embed reply. One over `max_send_bytes` is refused
        here, in the call's stream, so the call is recorded as refused: grpc
        would fail to send it after the handler returned, unseen."""
        if isinstance(event, domain.Start):
            reply.model, reply.provider, reply.route = event.model, event.provider, event.route
        elif isinstance(event, domain.Embeddings):
            reply.embeddings.extend(pb.Embedding(values=vector) for vector in event.vectors)
        elif isinstance(event, domain.Usage):
            reply.usage.CopyFrom(responses.usage(event))
        else:
            return
        if (size := reply.ByteSize()) > self._max_send_bytes:
            raise response_too_large(size, self._max_send_bytes)

    @contextmanager
    def _admitted(self) -> Iterator[None]:
        """Count the call in flight, or refuse it if `max_calls` already are."""
        if self._calls >= self._max_calls:
            raise gateway_overloaded(self._max_calls)
        self._calls += 1
        try:
            yield
        finally:
            self._calls -= 1

    @staticmethod
    def _identify(
        gateway: Gateway,
        headers: dict[str, str],
        observation: CallObservation,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> Caller | None:
        if not gateway.callers.enabled:
            return None  # auth is off: no work, no span
        with observation.trace.authenticating() as span:
            caller = gateway.callers.identify(headers, context)
            if caller is not None:
                span.identified(caller.name)
            return caller


def _facts(call: Call | None, routes: RouteTable) -> CallFacts | None:
    """What the pipeline decided about `call`; None if it never started."""
    if call is None:
        return None
    return CallFacts(
        operation=call.request.operation,
        route=_route_label(call, routes),
        key_name=call.caller.name if call.caller is not None else None,
        target=call.answered_by,
        attempts=len(call.attempts),
        cost=call.cost,
        upstream_seconds=call.trace.upstream_seconds,
    )


def _with_call_id(event: domain.Event, call_id: str) -> domain.Event:
    """A start event names the call by Sluice's own id, whoever answers it:
    an upstream may repeat its response ids, a replay is another call's."""
    if isinstance(event, domain.Start):
        return dataclasses.replace(event, call_id=call_id)
    return event


def _decoder(
    request: _Request | MalformedRequest,
    convert: Callable[[_Request, RequestLimits], domain.Request],
) -> Callable[[RequestLimits], domain.Request]:
    """The conversion of `request` under the running config's limits; a
    malformed one is refused."""

    def decode(limits: RequestLimits) -> domain.Request:
        if isinstance(request, MalformedRequest):
            raise request.refusal()
        return convert(request, limits)

    return decode


def _route_label(call: Call, routes: RouteTable) -> str:
    """The route a call is recorded under: one of `routes`, never a name the
    caller made up (each would be a new metric series)."""
    if call.route is not None:
        return call.route.name
    return call.request.route if call.request.route in routes else semconv.UNKNOWN_ROUTE


def _headers(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    return {
        key.lower(): value
        for key, value in (context.invocation_metadata() or ())
        if isinstance(value, str)
    }


async def _send_call_id(
    context: grpc.aio.ServicerContext[Any, Any], observation: CallObservation
) -> None:
    """Initial metadata at once, so that a refused call carries the id too."""
    await context.send_initial_metadata(((CALL_ID_METADATA, observation.call_id),))


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: GatewayError) -> NoReturn:
    if error.status is Status.INTERNAL:
        logger.error("call failed: %s %s", error.reason, redact(error.message))
    status = to_grpc_status(error)
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("context.abort returns only by raising")
