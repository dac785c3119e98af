"""The server's own behaviour: health, request validation, draining."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import descriptor_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_status import rpc_status

from sluice_client.v1 import gateway_pb2 as pb
from tests.gateway import route, running_gateway

MOCK = {"routes": [route("chat", provider="mock", reply="a b c d e f", chunk_delay=0.05)]}
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def user(text: str) -> pb.Message:
    return pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text=text)])


async def test_health_is_serving_for_the_server_and_the_gateway_service() -> None:
    async with running_gateway(MOCK) as gateway:
        health = health_pb2_grpc.HealthStub(gateway.channel)
        for service in ("", "sluice.v1.GatewayService"):
            response = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == SERVING
        listed = await health.List(health_pb2.HealthListRequest())
        assert {name: s.status for name, s in listed.statuses.items()} == {
            "": SERVING,
            "sluice.v1.GatewayService": SERVING,
        }
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health.Check(health_pb2.HealthCheckRequest(service="nope"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_draining_reports_not_serving_and_lets_streams_finish() -> None:
    async with running_gateway(MOCK) as gateway:
        health = health_pb2_grpc.HealthStub(gateway.channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == SERVING

        stream = gateway.stub.Chat(pb.ChatRequest(route="chat", messages=[user("x")]))
        first = await stream.read()
        assert isinstance(first, pb.ChatResponse)
        assert first.HasField("start")
        stopping = asyncio.create_task(gateway.server.stop(grace=5))

        assert (await watch.read()).status == NOT_SERVING
        assert await watch.read() is grpc.aio.EOF, "the drain ends every Watch"
        rest: list[pb.ChatResponse] = []
        while isinstance(response := await stream.read(), pb.ChatResponse):
            rest.append(response)
        assert await stream.code() == grpc.StatusCode.OK
        await stopping
    text = "".join(r.delta.text for r in rest)
    assert text == "a b c d e f"
    assert rest[-1].finish.reason == pb.FINISH_REASON_STOP


def _bad_request(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            return str(bad_request.field_violations[0].field)
    raise AssertionError("no BadRequest detail")


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.ChatRequest(messages=[user("x")]), "route"),
        (pb.ChatRequest(route="chat"), "messages"),
        (pb.ChatRequest(route="chat", messages=[pb.Message(parts=[pb.Part(text="x")])]),
         "messages[0].role"),
        (pb.ChatRequest(route="chat", messages=[pb.Message(role=pb.ROLE_USER)]),
         "messages[0].parts"),
        (pb.ChatRequest(route="chat", messages=[pb.Message(role=pb.ROLE_USER, parts=[pb.Part()])]),
         "messages[0].parts[0]"),
        (pb.ChatRequest(route="chat", messages=[
            pb.Message(role=pb.ROLE_USER, parts=[pb.Part(tool_call=pb.ToolCall(id="1", name="f"))])]),
         "messages[0].parts[0].tool_call"),
        (pb.ChatRequest(route="chat", messages=[
            pb.Message(role=pb.ROLE_ASSISTANT,
                       parts=[pb.Part(tool_call=pb.ToolCall(id="1", name="f", arguments="[1]"))])]),
         "messages[0].parts[0].tool_call.arguments"),
        (pb.ChatRequest(route="chat", messages=[user("x")],
                        generation=pb.GenerationConfig(temperature=3.5)),
         "generation.temperature"),
        (pb.ChatRequest(route="chat", messages=[user("x")],
                        generation=pb.GenerationConfig(max_tokens=0)),
         "generation.max_tokens"),
        (pb.ChatRequest(route="chat", messages=[user("x")], tools=[pb.Tool()]),
         "tools[0].name"),
        (pb.ChatRequest(route="chat", messages=[user("x")], tools=[pb.Tool(name="f")],
                        tool_choice=pb.ToolChoice(tool_name="g")),
         "tool_choice.tool_name"),
        (pb.ChatRequest(route="chat", messages=[user("x")],
                        tool_choice=pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED)),
         "tool_choice.mode"),
    ],
)  # fmt: skip
async def test_bad_request_is_invalid_argument_naming_the_field(
    request_: pb.ChatRequest, field: str
) -> None:
    async with running_gateway(MOCK) as gateway:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gateway.stub.Chat(request_).read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _bad_request(caught.value) == field


async def test_unknown_route_is_not_found_with_error_info() -> None:
    async with running_gateway(MOCK) as gateway:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gateway.stub.Embed(pb.EmbedRequest(route="nope", inputs=["x"]))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    status = rpc_status.from_call(caught.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert (info.reason, info.metadata["route"]) == ("ROUTE_NOT_FOUND", "nope")


REFLECTION_SERVICES = (
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
)


@pytest.mark.parametrize("service", REFLECTION_SERVICES)
async def test_reflection_answers_and_lists_both_protocol_versions(service: str) -> None:
    async with running_gateway(MOCK) as gateway:
        info = gateway.channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            *(
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
                for symbol in ("sluice.v1.GatewayService", *REFLECTION_SERVICES)
            ),
        ]
        listed, *described = [response async for response in info(iter(requests), timeout=10)]
    names = {s.name for s in listed.list_services_response.service}
    assert {"sluice.v1.GatewayService", "grpc.health.v1.Health", *REFLECTION_SERVICES} <= names
    # Every listed service's schema can be fetched: clients describe them all.
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(
            response.file_descriptor_response.file_descriptor_proto[0]
        )
        for response in described
    ]
    assert [file.package for file in files] == [
        "sluice.v1",
        "grpc.reflection.v1",
        "grpc.reflection.v1alpha",
    ]
    v1 = files[1]
    assert v1.name == "grpc/reflection/v1/reflection.proto"
    (method,) = v1.service[0].method
    assert method.input_type == ".grpc.reflection.v1.ServerReflectionRequest"
