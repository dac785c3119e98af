"""What callers choose never becomes a metric series: a route that is not
configured is recorded under one `sluice.route` value, `(unknown)`; request
labels are never attributes; and what is recorded of a caller's string is
truncated."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from sluice.telemetry.semconv import UNKNOWN_ROUTE
from sluice_client.v1 import gateway_pb2 as pb
from tests.gateway import route, running_gateway
from tests.telemetry import Recorded

METRICS = ("sluice.requests", "gen_ai.server.request.duration", "sluice.gateway.overhead")


def chat(route_name: str, **labels: str) -> pb.ChatRequest:
    message = pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="hi")])
    return pb.ChatRequest(route=route_name, messages=[message], labels=labels)


def attribute_values(recorded: Recorded) -> list[Any]:
    return [
        value
        for metric in METRICS
        for labels, _ in recorded.points(metric)
        for value in labels.values()
    ]


async def test_made_up_routes_and_labels_add_no_metric_series() -> None:
    recorded = Recorded()
    config = {"routes": [route("chat", provider="mock", name="m", reply="ok")]}
    made_up = [f"route-{i}-" + "x" * 1_000 for i in range(3)]  # fits the error trailers
    async with running_gateway(config, telemetry=recorded.telemetry) as gateway:
        for name in made_up:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                async for _ in gateway.stub.Chat(chat(name)):
                    pass
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        async for _ in gateway.stub.Chat(chat("chat", tenant="acme", run="r-123")):
            pass

    requests = {
        labels["sluice.route"]: point.value for labels, point in recorded.points(METRICS[0])
    }
    assert requests == {UNKNOWN_ROUTE: 3, "chat": 1}
    values = attribute_values(recorded)
    assert not {"acme", "r-123"} & set(values)
    assert not [value for value in values if isinstance(value, str) and "xxxx" in value]
    assert [line["route"] for line in recorded.log_lines()] == [UNKNOWN_ROUTE] * 3 + ["chat"]
    requested = [
        str(dict(span.attributes or {})["sluice.requested_route"])
        for span in recorded.named("sluice.route")
    ]
    assert [len(name) for name in requested[:3]] == [256] * 3
    assert all(name.endswith("…") for name in requested[:3])
