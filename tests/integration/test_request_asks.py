"""Structured output, reasoning effort, provider options and end user
through a running gateway: refused as INVALID_ARGUMENT naming the field and
the target's provider where a route's target cannot honour them (before any
upstream request), and the end user settled by the route's `end_user`."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from pydantic import ValidationError

from sluice.auth import hash_key
from sluice.config.schema import RouteConfig
from sluice_client.v1 import gateway_pb2 as pb
from tests.gateway import route, running_gateway
from tests.recordings import recording
from tests.upstream import FakeUpstream, Reply

CALLER_KEY = "sk-sluice-carol-P4wQ8zLm"


def chat(route_name: str, **fields: Any) -> pb.ChatRequest:
    message = pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="hi")])
    return pb.ChatRequest(route=route_name, messages=[message], **fields)


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def schema_format() -> pb.ResponseFormat:
    return pb.ResponseFormat(
        type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, schema=struct({"type": "object"})
    )


def bad_request(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad) for detail in status.details)
    field: str = bad.field_violations[0].field
    return field


async def refused(stub: Any, request: pb.ChatRequest, **call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.Chat(request, timeout=10, **call):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value


def upstream_route(name: str, base_url: str, provider: str, **keys: Any) -> dict[str, Any]:
    return {**route(name, provider=provider, name="m", api_key="k", api_base=base_url), **keys}


ANTHROPIC_SSE = Reply(
    chunks=[recording("anthropic_messages_tool_use_stream.txt")],
    headers={"content-type": "text/event-stream"},
)


async def test_each_ask_is_refused_where_a_target_cannot_honour_it() -> None:
    async with FakeUpstream(ANTHROPIC_SSE) as upstream:
        base = upstream.base_url
        config = {
            "routes": [
                route("mock", provider="mock"),
                upstream_route("claude", base, "anthropic", allow_provider_options=True),
                upstream_route("mistral", base, "mistral"),
                {
                    "name": "fallback",
                    "route_type": "llm/v1/chat",
                    "targets": [
                        {"model": {"provider": "openai", "name": "m", "api_base": base}},
                        {"model": {"provider": "mock"}},
                    ],
                },
            ]
        }
        async with running_gateway(config) as gateway:
            stub = gateway.stub
            error = await refused(stub, chat("mock", response_format=schema_format()))
            assert bad_request(error) == "response_format.schema"
            assert "'mock'" in (error.details() or "")
            # Anthropic takes a schema, but has no JSON mode without one.
            json_object = pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT)
            error = await refused(stub, chat("claude", response_format=json_object))
            assert bad_request(error) == "response_format"
            assert "'anthropic'" in (error.details() or "")
            effort = pb.GenerationConfig(reasoning_effort=pb.REASONING_EFFORT_HIGH)
            error = await refused(stub, chat("mistral", generation=effort))
            assert bad_request(error) == "generation.reasoning_effort"
            assert "'mistral'" in (error.details() or "")
            # A fallback target that would drop the ask refuses the call up front.
            error = await refused(stub, chat("fallback", response_format=schema_format()))
            assert "mock/mock" in (error.details() or "")
            # Free text is every provider's default: nothing to refuse.
            text = pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_TEXT)
            replies = [r async for r in stub.Chat(chat("mock", response_format=text), timeout=10)]
            assert replies[-1].HasField("finish")
        assert upstream.requests == []  # no refused call went upstream


async def test_provider_options_need_the_route_and_never_set_what_the_gateway_owns() -> None:
    async with FakeUpstream(ANTHROPIC_SSE) as upstream:
        base = upstream.base_url
        config = {
            "routes": [
                upstream_route("open", base, "anthropic", allow_provider_options=True),
                upstream_route("closed", base, "anthropic"),
            ]
        }
        async with running_gateway(config) as gateway:
            stub = gateway.stub
            top_k = struct({"anthropic": {"top_k": 5}})
            error = await refused(stub, chat("closed", provider_options=top_k))
            assert bad_request(error) == "provider_options"
            assert "allow_provider_options" in (error.details() or "")
            for key in ("model", "stream", "api_key", "headers", "url", "Authorization"):
                options = struct({"anthropic": {key: "x"}})
                error = await refused(stub, chat("open", provider_options=options))
                assert bad_request(error) == f"provider_options.anthropic.{key}"
            error = await refused(stub, chat("open", provider_options=struct({"nope": {}})))
            assert bad_request(error) == "provider_options.nope"
            # A provider no target of the route is: its options would go nowhere.
            options = struct({"openai": {"n": 1}})
            error = await refused(stub, chat("open", provider_options=options))
            assert bad_request(error) == "provider_options.openai"
            replies = [r async for r in stub.Chat(chat("open", provider_options=top_k))]
            assert replies[-1].HasField("finish")
        (seen,) = upstream.requests
        assert seen.json()["top_k"] == 5


@pytest.mark.parametrize(
    ("setting", "sent"),
    [("from_request", "user-7"), ("from_key", "carol"), ("off", None)],
)
async def test_the_route_says_which_end_user_goes_upstream(setting: str, sent: str | None) -> None:
    async with FakeUpstream(ANTHROPIC_SSE) as upstream:
        config = {
            "auth": {"keys": [{"name": "carol", "sha256": hash_key(CALLER_KEY)}]},
            "routes": [upstream_route("claude", upstream.base_url, "anthropic", end_user=setting)],
        }
        async with running_gateway(config) as gateway:
            metadata = (("authorization", f"Bearer {CALLER_KEY}"),)
            request = chat("claude", end_user="user-7")
            replies = [r async for r in gateway.stub.Chat(request, metadata=metadata, timeout=10)]
            assert replies[-1].HasField("finish")
        (seen,) = upstream.requests
        assert seen.json().get("metadata", {}).get("user_id") == sent


async def test_a_bad_response_format_is_refused_naming_its_field() -> None:
    async with running_gateway({"routes": [route("mock", provider="mock")]}) as gateway:
        stub = gateway.stub
        cases = {
            "response_format.type": pb.ResponseFormat(),
            "response_format.schema": pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA),
            "response_format.schema_name": pb.ResponseFormat(
                type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
                schema_name="no spaces",
                schema=struct({"type": "object"}),
            ),
            "response_format": pb.ResponseFormat(
                type=pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT, schema=struct({"type": "object"})
            ),
        }
        for field, format in cases.items():
            error = await refused(stub, chat("mock", response_format=format))
            assert bad_request(error) == field
        deep: list[Any] = []
        for _ in range(33):  # lists nest in fewer protobuf levels than objects
            deep = [deep]
        schema = struct({"enum": deep})
        nested = pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, schema=schema)
        error = await refused(stub, chat("mock", response_format=nested))
        assert bad_request(error) == "response_format.schema"
        huge = struct({"type": "object", "description": "x" * 70_000})
        big = pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, schema=huge)
        error = await refused(stub, chat("mock", response_format=big))
        assert "max_response_format_bytes" in (error.details() or "")


def test_a_route_sending_an_end_user_needs_targets_that_take_one() -> None:
    config = route("g", provider="gemini", name="m", api_key="k")
    with pytest.raises(ValidationError, match="'gemini' takes no end-user id"):
        RouteConfig.model_validate({**config, "end_user": "from_key"})
    assert RouteConfig.model_validate({**config, "end_user": "off"}).end_user == "off"
