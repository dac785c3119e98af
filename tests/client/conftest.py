"""A scripted in-process gateway, and drivers that run one test against both
`Client` and `AsyncClient`.

The gateway is a real grpc.aio server on 127.0.0.1 in its own thread and
event loop, so a blocking `Client` can call it from a test's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import grpc
import grpc.aio
import pytest
from google.protobuf import any_pb2
from google.rpc import status_pb2
from grpc_status import rpc_status

from sluice_client import AsyncClient, Client, ConnectionOptions, Embeddings, Reply
from sluice_client.v1 import gateway_pb2 as pb
from sluice_client.v1 import gateway_pb2_grpc

if TYPE_CHECKING:
    from google.protobuf.message import Message


@dataclass(frozen=True)
class Fail:
    """Script step: end the call with this status and google.rpc details."""

    code: grpc.StatusCode
    message: str
    details: Sequence[Message] = ()

    def status(self) -> grpc.Status:
        packed = []
        for detail in self.details:
            packed.append(any_pb2.Any())
            packed[-1].Pack(detail)
        code: int = self.code.value[0]
        status: grpc.Status = rpc_status.to_status(
            status_pb2.Status(code=code, message=self.message, details=packed)
        )
        return status


@dataclass(frozen=True)
class Pause:
    """Script step: wait, e.g. for the client's deadline or cancellation."""

    seconds: float


Event = pb.Start | pb.Delta | pb.Usage | pb.Finish
Step = Event | Fail | Pause

START = pb.Start(id="resp-1", model="gpt-test", provider="openai", route="chat")
FINISH = pb.Finish(reason=pb.FINISH_REASON_TOOL_CALLS, provider_reason="tool_calls")
FIRST_DELTA = pb.Delta(reasoning="The user ")
CHAT_SCRIPT: list[Step] = [
    START,
    FIRST_DELTA,
    pb.Delta(text="Let me "),
    pb.Delta(reasoning="wants weather."),
    pb.Delta(tool_call=pb.ToolCallDelta(index=0, id="call_a", name="weather", arguments='{"ci')),
    pb.Delta(tool_call=pb.ToolCallDelta(index=1, id="call_b", name="clock", arguments="")),
    pb.Delta(tool_call=pb.ToolCallDelta(index=0, arguments='ty": "Paris"}')),
    pb.Delta(tool_call=pb.ToolCallDelta(index=1, arguments="{}")),
    pb.Delta(text="check."),
    pb.Usage(input_tokens=12, output_tokens=30, cached_input_tokens=4, reasoning_tokens=9),
    FINISH,
]


@dataclass
class Received:
    """What the gateway saw of one call."""

    request: Message
    metadata: dict[str, str | bytes]
    time_remaining: float | None


@dataclass
class FakeGateway(gateway_pb2_grpc.GatewayServiceServicer):
    """Plays `script` for Chat and Complete; Embed and ListRoutes answer
    canned results, or `unary_failure`."""

    script: list[Step] = field(default_factory=lambda: list(CHAT_SCRIPT))
    unary_failure: Fail | None = None
    received: list[Received] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def last(self) -> Received:
        return self.received[-1]

    async def Chat(  # noqa: N802 (the generated servicer's name)
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.ChatResponse]:
        self._receive(request, context)
        async for event in self._play(context):
            response = pb.ChatResponse()
            getattr(response, event.DESCRIPTOR.name.lower()).CopyFrom(event)
            yield response

    async def Complete(  # noqa: N802
        self, request: pb.CompleteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.CompleteResponse]:
        self._receive(request, context)
        async for event in self._play(context):
            response = pb.CompleteResponse()
            getattr(response, event.DESCRIPTOR.name.lower()).CopyFrom(event)
            yield response

    async def Embed(  # noqa: N802
        self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.EmbedResponse:
        self._receive(request, context)
        if self.unary_failure is not None:
            await context.abort_with_status(self.unary_failure.status())
        return pb.EmbedResponse(
            embeddings=[pb.Embedding(values=[i, 0.5]) for i, _ in enumerate(request.inputs)],
            usage=pb.Usage(input_tokens=len(request.inputs)),
            model="embed-test",
            provider="mock",
            route=request.route,
        )

    async def ListRoutes(  # noqa: N802
        self, request: pb.ListRoutesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListRoutesResponse:
        self._receive(request, context)
        if self.unary_failure is not None:
            await context.abort_with_status(self.unary_failure.status())
        target = pb.Target(provider="openai", model="gpt-test")
        return pb.ListRoutesResponse(
            routes=[pb.Route(name="chat", route_type=pb.ROUTE_TYPE_CHAT, targets=[target])]
        )

    async def Feedback(  # noqa: N802
        self, request: pb.FeedbackRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.FeedbackResponse:
        self._receive(request, context)
        return pb.FeedbackResponse()

    async def GetExperiment(  # noqa: N802
        self, request: pb.GetExperimentRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetExperimentResponse:
        self._receive(request, context)
        return pb.GetExperimentResponse()

    def _receive(self, request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        metadata = dict(context.invocation_metadata() or ())
        self.received.append(Received(request, metadata, context.time_remaining()))

    async def _play(
        self, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncGenerator[Event, None]:
        try:
            for step in self.script:
                if isinstance(step, Fail):
                    await context.abort_with_status(step.status())
                elif isinstance(step, Pause):
                    await asyncio.sleep(step.seconds)
                else:
                    yield step
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


@dataclass(frozen=True)
class Gateway:
    servicer: FakeGateway
    target: str


@contextlib.contextmanager
def serve(
    servicer: FakeGateway, credentials: grpc.ServerCredentials | None = None
) -> Iterator[Gateway]:
    """Run `servicer` on a free port of 127.0.0.1 in a thread of its own."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, server)
        if credentials is None:
            port = server.add_insecure_port("127.0.0.1:0")
        else:
            port = server.add_secure_port("127.0.0.1:0", credentials)
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    try:
        yield Gateway(servicer, f"127.0.0.1:{port}")
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(None), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    with serve(FakeGateway()) as running:
        yield running


class Driver(Protocol):
    """One client, sync or async, called the same way: each call of the
    client, and `*_events`, which read a stream into `into` as it arrives (so
    a test sees the events before a failure)."""

    async def chat(self, *args: Any, **kwargs: Any) -> Reply: ...
    async def complete(self, *args: Any, **kwargs: Any) -> Reply: ...
    async def embed(self, *args: Any, **kwargs: Any) -> Embeddings: ...
    async def list_routes(self, **kwargs: Any) -> list[pb.Route]: ...
    async def chat_events(self, into: list[pb.ChatResponse], *args: Any, **kwargs: Any) -> None: ...
    async def complete_events(
        self, into: list[pb.CompleteResponse], *args: Any, **kwargs: Any
    ) -> None: ...
    async def first_event_then_close(self, *args: Any) -> pb.ChatResponse: ...
    async def close(self) -> None: ...


class SyncDriver:
    def __init__(self, client: Client) -> None:
        self.client = client

    async def chat(self, *args: Any, **kwargs: Any) -> Reply:
        return self.client.chat(*args, **kwargs)

    async def complete(self, *args: Any, **kwargs: Any) -> Reply:
        return self.client.complete(*args, **kwargs)

    async def embed(self, *args: Any, **kwargs: Any) -> Embeddings:
        return self.client.embed(*args, **kwargs)

    async def list_routes(self, **kwargs: Any) -> list[pb.Route]:
        return self.client.list_routes(**kwargs)

    async def chat_events(self, into: list[pb.ChatResponse], *args: Any, **kwargs: Any) -> None:
        into.extend(self.client.chat_stream(*args, **kwargs))

    async def complete_events(
        self, into: list[pb.CompleteResponse], *args: Any, **kwargs: Any
    ) -> None:
        into.extend(self.client.complete_stream(*args, **kwargs))

    async def first_event_then_close(self, *args: Any) -> pb.ChatResponse:
        with contextlib.closing(self.client.chat_stream(*args)) as stream:
            return next(stream)

    async def close(self) -> None:
        self.client.close()


class AsyncDriver:
    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def chat(self, *args: Any, **kwargs: Any) -> Reply:
        return await self.client.chat(*args, **kwargs)

    async def complete(self, *args: Any, **kwargs: Any) -> Reply:
        return await self.client.complete(*args, **kwargs)

    async def embed(self, *args: Any, **kwargs: Any) -> Embeddings:
        return await self.client.embed(*args, **kwargs)

    async def list_routes(self, **kwargs: Any) -> list[pb.Route]:
        return await self.client.list_routes(**kwargs)

    async def chat_events(self, into: list[pb.ChatResponse], *args: Any, **kwargs: Any) -> None:
        async for event in self.client.chat_stream(*args, **kwargs):
            into.append(event)

    async def complete_events(
        self, into: list[pb.CompleteResponse], *args: Any, **kwargs: Any
    ) -> None:
        async for event in self.client.complete_stream(*args, **kwargs):
            into.append(event)

    async def first_event_then_close(self, *args: Any) -> pb.ChatResponse:
        async with contextlib.aclosing(self.client.chat_stream(*args)) as stream:
            return await anext(stream)

    async def close(self) -> None:
        await self.client.close()


Connect = Callable[..., Driver]


@pytest.fixture(params=["sync", "async"])
async def connect(request: pytest.FixtureRequest, gateway: Gateway) -> AsyncIterator[Connect]:
    """Connect a `Client` or an `AsyncClient` to `gateway` with the given
    ConnectionOptions fields."""
    drivers: list[Driver] = []

    def connect(**options: Any) -> Driver:
        connection = ConnectionOptions(target=gateway.target, **options)
        driver: Driver
        if request.param == "sync":
            driver = SyncDriver(Client(connection))
        else:
            driver = AsyncDriver(AsyncClient(connection))
        drivers.append(driver)
        return driver

    yield connect
    for driver in drivers:
        await driver.close()


@pytest.fixture
def client(connect: Connect) -> Driver:
    return connect()
