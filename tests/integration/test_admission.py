"""A burst of calls opened at once on one channel: every call is served or
refused with a retry hint, none is lost as CANCELLED."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from sluice_client.v1 import gateway_pb2 as pb
from tests.gateway import RunningGateway, route, running_gateway

SERVED = "served"


def chat_config(**server: Any) -> dict[str, Any]:
    # Streams long enough that the whole burst arrives while the first still
    # run, even on a loaded machine.
    chat = route("chat", provider="mock", reply="a b c", chunk_delay=1.0)
    return {"server": server, "routes": [chat]}


async def outcome(gateway: RunningGateway) -> str:
    """SERVED, or the status, ErrorInfo reason and whether RetryInfo came."""
    request = pb.ChatRequest(
        route="chat", messages=[pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="hi")])]
    )
    try:
        async for _ in gateway.stub.Chat(request, timeout=30):
            pass
    except grpc.aio.AioRpcError as error:
        reason, retry = "", False
        status = rpc_status.from_call(error)
        for detail in status.details if status is not None else ():
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
            retry = retry or detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR)
        return f"{error.code().name} {reason} retry={retry}"
    return SERVED


async def burst(gateway: RunningGateway, calls: int) -> Counter[str]:
    await gateway.channel.channel_ready()
    return Counter(await asyncio.gather(*(outcome(gateway) for _ in range(calls))))


async def test_a_burst_of_2000_calls_on_one_channel_loses_none() -> None:
    # Before grpc's pending-call queue was sized, ~8% came back CANCELLED.
    async with running_gateway(chat_config()) as gateway:
        outcomes = await burst(gateway, 2000)
    refused = "RESOURCE_EXHAUSTED GATEWAY_OVERLOADED retry=True"
    assert set(outcomes) <= {SERVED, refused}, outcomes
    assert outcomes[SERVED] >= 1000


async def test_calls_beyond_max_concurrent_calls_are_refused_with_a_retry_hint() -> None:
    async with running_gateway(chat_config(max_concurrent_calls=50)) as gateway:
        outcomes = await burst(gateway, 500)
        assert outcomes == {
            SERVED: 50,
            "RESOURCE_EXHAUSTED GATEWAY_OVERLOADED retry=True": 450,
        }
        # The bound counts calls in flight: once they end, calls are served again.
        assert await outcome(gateway) == SERVED
