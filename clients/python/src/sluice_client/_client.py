"""`Client` (blocking) and `AsyncClient` (asyncio): thin call wrappers around
the shared request building (`_requests`), aggregation (`_results`) and error
mapping (`_errors`)."""

# The `timeout` of a call is its gRPC deadline, which the server sees and
# stops its upstream work at, not a local asyncio.timeout.
# ruff: noqa: ASYNC109

from __future__ import annotations

from typing import TYPE_CHECKING, Self, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from sluice_client._config import (
    ConnectionOptions,
    call_metadata,
    channel_credentials,
    channel_options,
)
from sluice_client._errors import error_from_rpc
from sluice_client._requests import chat_request, complete_request, embed_request
from sluice_client._results import Embeddings, ReplyBuilder
from sluice_client.v1 import gateway_pb2 as pb
from sluice_client.v1 import gateway_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import (
        AsyncGenerator,
        AsyncIterator,
        Generator,
        Iterable,
        Mapping,
        Sequence,
    )
    from types import TracebackType

    from sluice_client._messages import MessageLike
    from sluice_client._requests import GenerationLike, ToolChoiceLike, ToolLike
    from sluice_client._results import Reply

_Request = TypeVar("_Request", bound=Message)
_Response = TypeVar("_Response", bound=Message)


class _BaseClient:
    def __init__(self, options: ConnectionOptions | None) -> None:
        self.options = options or ConnectionOptions()
        self._metadata = call_metadata(self.options)

    def _timeout(self, timeout: float | None) -> float | None:
        return self.options.timeout if timeout is None else timeout


class Client(_BaseClient):
    """A blocking Sluice client over one gRPC channel; safe to share between threads.

    Use it as a context manager, or call `close()`, to close the channel.
    """

    def __init__(self, options: ConnectionOptions | None = None) -> None:
        super().__init__(options)
        target, arguments = self.options.target, channel_options(self.options)
        if self.options.tls is None:
            self._channel = grpc.insecure_channel(target, arguments)
        else:
            credentials = channel_credentials(self.options.tls)
            self._channel = grpc.secure_channel(target, credentials, arguments)
        self._stub = gateway_pb2_grpc.GatewayServiceStub(self._channel)

    def chat_stream(
        self,
        route: str,
        messages: str | Iterable[MessageLike],
        *,
        generation: GenerationLike | None = None,
        tools: Iterable[ToolLike] | None = None,
        tool_choice: ToolChoiceLike | None = None,
        labels: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Generator[pb.ChatResponse]:
        """Stream a chat reply: `start`, `delta`s, `usage`, then `finish`.

        `messages` is a list of messages (see `user`, `system`, ...) or one
        user text. `labels` tag the call in the gateway's telemetry.
        The call starts on the first `next()`; closing the iterator early
        cancels it. Failures raise `SluiceError` from the iteration.
        """
        request = chat_request(
            route,
            messages,
            generation=generation,
            tools=tools,
            tool_choice=tool_choice,
            labels=labels,
        )
        return self._stream(self._stub.Chat, request, timeout)

    def chat(
        self,
        route: str,
        messages: str | Iterable[MessageLike],
        *,
        generation: GenerationLike | None = None,
        tools: Iterable[ToolLike] | None = None,
        tool_choice: ToolChoiceLike | None = None,
        labels: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Reply:
        """The complete reply of `chat_stream`."""
        return _collect(
            self.chat_stream(
                route,
                messages,
                generation=generation,
                tools=tools,
                tool_choice=tool_choice,
                labels=labels,
                timeout=timeout,
            )
        )

    def complete_stream(
        self,
        route: str,
        prompt: str,
        *,
        suffix: str = "",
        generation: GenerationLike | None = None,
        labels: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Generator[pb.CompleteResponse]:
        """Stream a continuation of `prompt`, as `chat_stream` streams a reply.
        `suffix`, for fill-in-the-middle models, is the text after the gap."""
        request = complete_request(
            route, prompt, suffix=suffix, generation=generation, labels=labels
        )
        return self._stream(self._stub.Complete, request, timeout)

    def complete(
        self,
        route: str,
        prompt: str,
        *,
        suffix: str = "",
        generation: GenerationLike | None = None,
        labels: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Reply:
        """The complete reply of `complete_stream`."""
        return _collect(
            self.complete_stream(
                route,
                prompt,
                suffix=suffix,
                generation=generation,
                labels=labels,
                timeout=timeout,
            )
        )

    def embed(
        self,
        route: str,
        inputs: Sequence[str],
        *,
        dimensions: int | None = None,
        labels: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Embeddings:
        """One vector per input, in input order."""
        request = embed_request(route, inputs, dimensions=dimensions, labels=labels)
        return Embeddings.from_proto(self._unary(self._stub.Embed, request, timeout))

    def list_routes(self, *, timeout: float | None = None) -> list[pb.Route]:
        """The routes this client's API key may use."""
        response = self._unary(self._stub.ListRoutes, pb.ListRoutesRequest(), timeout)
        return list(response.routes)

    def close(self) -> None:
        """Close the channel, cancelling calls still open."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _stream(
        self,
        method: grpc.UnaryStreamMultiCallable[_Request, _Response],
        request: _Request,
        timeout: float | None,
    ) -> Generator[_Response]:
        call = method(request, timeout=self._timeout(timeout), metadata=self._metadata)
        try:
            yield from call
        except grpc.RpcError as error:
            raise error_from_rpc(error) from error
        finally:
            # Stops the server's work at once when the caller stops reading
            # early, instead of when the call is garbage collected.
            call.cancel()

    def _unary(
        self,
        method: grpc.UnaryUnaryMultiCallable[_Request, _Response],
        request: _Request,
        timeout: float | None,
    ) -> _Response:
        try:
            return method(request, timeout=self._timeout(timeout), metadata=self._metadata)
        except grpc.RpcError as error:
            raise error_from_rpc(error) from error


class AsyncClient(_BaseClient):
    """An asyncio Sluice client over one gRPC channel; the same calls as `Client`.

    Create it inside the event loop that uses it. Use it as an async context
    manager, or await `close()`, to close the channel. To stop reading a
    stream early, close it (`async with contextlib.aclosing(stream)`), which
    cancels the call at once.
    """

    def __init__(self, options: ConnectionOptions | None = None) -> None:
        super().__init__(options)
        target, arguments = self.options.target, channel_options(self.options)
        if self.options.tls is None:
            self._channel = grpc.aio.insecure_channel(target, arguments)
        else:
            credentials = channel_credentials(self.options.tls)
            self._channel = grpc.aio.secure_channel(target, credentials, arguments)
        self._stub = gateway_pb2_grpc.GatewayServiceStub(self._channel)

    def chat_stream(
        self,
        route: str,
        messages: str | Iterable[MessageLike],
        *,
        generation: GenerationLike | None = None,
        tools: Iterable[ToolLike] | None = None,
        tool_choice: ToolChoiceLike | None = None,
        labels: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> AsyncGenerator[pb.ChatResponse]:
        """Stream a chat reply; see `Client.chat_stream`."""
        request = chat_request(
            route,
            messages,
            generation=generation,
            tools=tools,
            tool_choice=tool_choice,
            labels=labels,
        )
        return self._stream(self._stub.Chat, request, timeout)

    async def chat(
        self,
        route: str,
        messages: str | Iterable[MessageLike],
        *,
        generation: GenerationLike | None = None,
        tools: Iterable[ToolLike] | None = None,
        tool_choice: ToolChoiceLike | None = None,
        labels: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Reply:
        """The complete reply of `chat_stream`."""
        return await _collect_async(
            self.chat_stream(
                route,
                messages,
                generation=generation,
                tools=tools,
                tool_choice=tool_choice,
                labels=labels,
                timeout=timeout,
            )
        )

    def complete_stream(
        self,
        route: str,
        prompt: str,
        *,
        suffix: str = "",
        generation: GenerationLike | None = None,
        labels: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> AsyncGenerator[pb.CompleteResponse]:
        """Stream a continuation of `prompt`; see `Client.complete_stream`."""
        request = complete_request(
            route, prompt, suffix=suffix, generation=generation, labels=labels
        )
        return self._stream(self._stub.Complete, request, timeout)

    async def complete(
        self,
        route: str,
        prompt: str,
        *,
        suffix: str = "",
        generation: GenerationLike | None = None,
        labels: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Reply:
        """The complete reply of `complete_stream`."""
        return await _collect_async(
            self.complete_stream(
                route,
                prompt,
                suffix=suffix,
                generation=generation,
                labels=labels,
                timeout=timeout,
            )
        )

    async def embed(
        self,
        route: str,
        inputs: Sequence[str],
        *,
        dimensions: int | None = None,
        labels: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Embeddings:
        """One vector per input, in input order."""
        request = embed_request(route, inputs, dimensions=dimensions, labels=labels)
        return Embeddings.from_proto(await self._unary(self._stub.Embed, request, timeout))

    async def list_routes(self, *, timeout: float | None = None) -> list[pb.Route]:
        """The routes this client's API key may use."""
        response = await self._unary(self._stub.ListRoutes, pb.ListRoutesRequest(), timeout)
        return list(response.routes)

    async def close(self) -> None:
        """Close the channel, cancelling calls still open."""
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _stream(
        self,
        method: grpc.aio.UnaryStreamMultiCallable[_Request, _Response],
        request: _Request,
        timeout: float | None,
    ) -> AsyncGenerator[_Response]:
        call = method(request, timeout=self._timeout(timeout), metadata=self._metadata)
        try:
            async for response in call:
                yield response
        except grpc.RpcError as error:
            raise error_from_rpc(error) from error
        finally:
            call.cancel()

    async def _unary(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[_Request, _Response],
        request: _Request,
        timeout: float | None,
    ) -> _Response:
        try:
            return await method(request, timeout=self._timeout(timeout), metadata=self._metadata)
        except grpc.RpcError as error:
            raise error_from_rpc(error) from error


def _collect(stream: Iterable[pb.ChatResponse | pb.CompleteResponse]) -> Reply:
    builder = ReplyBuilder()
    for response in stream:
        builder.add(response)
    return builder.reply()


async def _collect_async(stream: AsyncIterator[pb.ChatResponse | pb.CompleteResponse]) -> Reply:
    builder = ReplyBuilder()
    async for response in stream:
        builder.add(response)
    return builder.reply()
