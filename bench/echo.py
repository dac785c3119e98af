"""Scenario (a): the grpc.aio ceiling. A GatewayService that answers Chat with
the same 53 messages Sluice sends (start, 50 deltas, usage, finish) and Embed
with the same EmbedResponse, from prebuilt messages, with no upstream and no
other work: what Python grpc.aio itself costs on this machine.

Run: python -m bench.echo --port PORT
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import grpc
from google.protobuf import duration_pb2

from bench import workload
from bench.procs import stop_signal
from sluice_client.v1 import gateway_pb2 as pb
from sluice_client.v1 import gateway_pb2_grpc as pb_grpc


class EchoServicer(pb_grpc.GatewayServiceServicer):
    def __init__(self) -> None:
        self._chat = workload.chat_responses(workload.CHAT_ROUTE)
        # Sluice's start carries its call id (32 hex digits): send as many bytes.
        self._chat[0].start.call_id = "0" * 32
        # Sluice's finish reports its one attempt: send the same shape.
        self._chat[-1].finish.attempts.add(
            target=f"openai/{workload.CHAT_MODEL}",
            outcome=pb.ATTEMPT_OUTCOME_SUCCESS,
            duration=duration_pb2.Duration(nanos=5_000_000),
        )
        self._embed = workload.embed_response()

    async def Chat(  # noqa: N802 (gRPC method name)
        self,
        request: pb.ChatRequest,
        context: grpc.aio.ServicerContext[pb.ChatRequest, pb.ChatResponse],
    ) -> AsyncIterator[pb.ChatResponse]:
        for response in self._chat:
            yield response

    async def Embed(  # noqa: N802
        self,
        request: pb.EmbedRequest,
        context: grpc.aio.ServicerContext[pb.EmbedRequest, pb.EmbedResponse],
    ) -> pb.EmbedResponse:
        return self._embed

    async def Complete(  # noqa: N802
        self,
        request: pb.CompleteRequest,
        context: grpc.aio.ServicerContext[pb.CompleteRequest, pb.CompleteResponse],
    ) -> AsyncIterator[pb.CompleteResponse]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the echo server answers Chat")
        yield pb.CompleteResponse()  # unreachable: makes this an async generator

    async def ListRoutes(  # noqa: N802
        self,
        request: pb.ListRoutesRequest,
        context: grpc.aio.ServicerContext[pb.ListRoutesRequest, pb.ListRoutesResponse],
    ) -> pb.ListRoutesResponse:
        return pb.ListRoutesResponse()

    async def Feedback(  # noqa: N802
        self,
        request: pb.FeedbackRequest,
        context: grpc.aio.ServicerContext[pb.FeedbackRequest, pb.FeedbackResponse],
    ) -> pb.FeedbackResponse:
        return pb.FeedbackResponse()

    async def GetExperiment(  # noqa: N802
        self,
        request: pb.GetExperimentRequest,
        context: grpc.aio.ServicerContext[pb.GetExperimentRequest, pb.GetExperimentResponse],
    ) -> pb.GetExperimentResponse:
        return pb.GetExperimentResponse()


async def serve(host: str, port: int) -> None:
    server = grpc.aio.server()
    pb_grpc.add_GatewayServiceServicer_to_server(EchoServicer(), server)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    stopping = stop_signal()
    await stopping.wait()
    await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.echo")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
