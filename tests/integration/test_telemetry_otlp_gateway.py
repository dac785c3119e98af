"""A gateway's call, traced end to end: the caller's trace context continues
in Sluice's server span, and the upstream call is a GenAI client span."""

from __future__ import annotations

from sluice_client.v1 import gateway_pb2 as pb
from tests.gateway import route, running_gateway
from tests.otlp_receiver import OtlpGrpcReceiver, ReceivedSpan

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"
SERVER_SPAN = "sluice.v1.GatewayService/Chat"
CLIENT_SPAN = "chat mock-1"


def has_both_spans(spans: list[ReceivedSpan]) -> bool:
    return {SERVER_SPAN, CLIENT_SPAN} <= {span.name for span in spans}


async def test_a_chat_call_exports_its_server_and_upstream_spans() -> None:
    async with OtlpGrpcReceiver() as receiver:
        config = {
            "telemetry": {
                "traces_exporter": "otlp",
                "otlp": {"endpoint": receiver.endpoint, "protocol": "grpc"},
            },
            "routes": [route("chat", provider="mock", name="mock-1", reply="a b c")],
        }
        async with running_gateway(config) as gateway:
            request = pb.ChatRequest(
                route="chat", messages=[pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="hi")])]
            )
            traceparent = f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"
            responses = [
                response
                async for response in gateway.stub.Chat(
                    request, metadata=(("traceparent", traceparent),)
                )
            ]
            assert responses
        # Stopping the gateway flushed its spans.
        spans = await receiver.wait_for_spans(has_both_spans)

    [server] = [span for span in spans if span.name == SERVER_SPAN]
    assert server.kind == "SERVER"
    assert (server.trace_id, server.parent_span_id) == (TRACE_ID, CALLER_SPAN_ID)

    [client] = [span for span in spans if span.name == CLIENT_SPAN]
    assert client.kind == "CLIENT"
    assert client.trace_id == TRACE_ID
    assert server.span_id in ancestors(client, spans)
    assert client.attributes["gen_ai.operation.name"] == "chat"
    assert client.attributes["gen_ai.request.model"] == "mock-1"
    assert client.attributes["sluice.route"] == "chat"
    # The mock counts words: "hi" in, "a b c" out.
    assert client.attributes["gen_ai.usage.input_tokens"] == 1
    assert client.attributes["gen_ai.usage.output_tokens"] == 3


def ancestors(span: ReceivedSpan, spans: list[ReceivedSpan]) -> list[str]:
    """The span ids from `span`'s parent up to its trace's first span here."""
    by_id = {each.span_id: each for each in spans}
    found: list[str] = []
    parent = span.parent_span_id
    while parent in by_id:
        found.append(parent)
        parent = by_id[parent].parent_span_id
    return found
