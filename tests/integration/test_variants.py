"""Variants and call ids through a real Sluice server to a real loopback
upstream replaying a recorded OpenAI stream: two prompt variants on one
model (each prompt, its variables filled, reaches the upstream), variables
refused when missing, a fallback that sends its own prompt, and the call id
every start event carries — the same as the response metadata and the access
log, new for a cache replay and when the upstream repeats its response ids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
import pytest

from sluice_client.v1 import gateway_pb2 as pb
from tests.gateway import RunningGateway, running_gateway
from tests.integration.test_request_bounds import details
from tests.recordings import recording
from tests.telemetry import Recorded
from tests.upstream import FakeUpstream, Reply

# The recorded stream: every answer has this one response id.
ANSWER = Reply(chunks=[recording("openai_chat_stream.txt")])
TERSE = "Be terse. The reader is {{ variables.audience }}, writing in {{variables.language}}."
VERBOSE = "Explain at length."


def model(upstream: FakeUpstream) -> dict[str, Any]:
    return {"provider": "openai", "name": "gpt-4o", "api_base": upstream.base_url, "api_key": "k"}


def experiment(first: FakeUpstream, second: FakeUpstream, **route: Any) -> dict[str, Any]:
    """Two variants of one model: `terse` prepends its prompt, `verbose`
    replaces the caller's and sets its own max_tokens. Metadata
    `x-variant: verbose` picks the second; fallback order otherwise."""
    return {
        "routes": [
            {
                "name": "exp",
                "route_type": "llm/v1/chat",
                "strategy": "rules",
                "rules": [{"when": {"metadata": {"x-variant": "verbose"}}, "target": 1}],
                "config": {"temperature": 0, "max_tokens": 100},
                "targets": [
                    {"name": "terse", "model": model(first), "prompt": {"system": TERSE}},
                    {
                        "name": "verbose",
                        "model": model(second),
                        "prompt": {"system": VERBOSE, "mode": "replace"},
                        "config": {"max_tokens": 50},
                    },
                ],
                **route,
            }
        ]
    }


def chat(variables: dict[str, str] | None = None) -> pb.ChatRequest:
    return pb.ChatRequest(
        route="exp",
        messages=[
            pb.Message(role=pb.ROLE_SYSTEM, parts=[pb.Part(text="caller's system")]),
            pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="weather in SF?")]),
        ],
        variables={"audience": "a child", "language": "English"}
        if variables is None
        else variables,
    )


async def ask(
    gateway: RunningGateway, request: pb.ChatRequest, metadata: Sequence[tuple[str, str]] = ()
) -> tuple[pb.Start, str]:
    """The call's start event and its sluice-call-id metadata."""
    call = gateway.stub.Chat(request, metadata=metadata, timeout=10)
    call_id = dict(await call.initial_metadata())["sluice-call-id"]
    assert isinstance(call_id, str)
    events = [event async for event in call]
    assert events[-1].HasField("finish")
    return events[0].start, call_id


def sent(upstream: FakeUpstream) -> list[dict[str, Any]]:
    return [seen.json() for seen in upstream.requests]


async def test_two_prompt_variants_of_one_model_each_send_their_own_prompt() -> None:
    recorded = Recorded()
    async with (
        FakeUpstream(ANSWER) as upstream,
        running_gateway(experiment(upstream, upstream), telemetry=recorded.telemetry) as gateway,
    ):
        terse, terse_id = await ask(gateway, chat())
        verbose, verbose_id = await ask(gateway, chat(), [("x-variant", "verbose")])

    first, second = sent(upstream)
    assert first["model"] == second["model"] == "gpt-4o"
    # prepend: the variant's prompt, variables filled, before the caller's system message.
    assert first["messages"] == [
        {"role": "system", "content": "Be terse. The reader is a child, writing in English."},
        {"role": "system", "content": "caller's system"},
        {"role": "user", "content": "weather in SF?"},
    ]
    assert first["max_completion_tokens"] == 100  # the route's default
    # replace: the caller's system message gone, the variant's own max_tokens.
    assert second["messages"] == [
        {"role": "system", "content": VERBOSE},
        {"role": "user", "content": "weather in SF?"},
    ]
    assert second["max_completion_tokens"] == 50
    assert (terse.variant, verbose.variant) == ("terse", "verbose")
    # The upstream repeats its response id; the call ids are Sluice's own, one per call.
    assert terse.id == verbose.id == "chatcmpl-ABfw031mOJeYCSHe4yI2ZjOA6kMJL"
    assert (terse.call_id, verbose.call_id) == (terse_id, verbose_id)
    assert terse_id != verbose_id
    logged = {line["call_id"]: line["variant"] for line in recorded.log_lines()}
    assert logged == {terse_id: "terse", verbose_id: "verbose"}
    served = {
        span.attributes["sluice.call_id"]: span.attributes["sluice.variant"]
        for span in recorded.finished()
        if span.kind.name == "SERVER" and span.attributes is not None
    }
    assert served == logged
    assert recorded.total("sluice.requests", sluice__variant="terse") == 1
    assert recorded.total("sluice.requests", sluice__variant="verbose") == 1


@pytest.mark.parametrize("metadata", [(), (("x-variant", "verbose"),)], ids=["terse", "verbose"])
async def test_a_missing_variable_is_refused_whichever_variant_is_chosen(
    metadata: Sequence[tuple[str, str]],
) -> None:
    async with (
        FakeUpstream(ANSWER) as upstream,
        running_gateway(experiment(upstream, upstream)) as gateway,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ask(gateway, chat({"audience": "a child"}), metadata)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, field = details(caught.value)
    assert field == "variables.language"
    assert upstream.requests == []


async def test_a_fallback_to_another_variant_sends_that_variants_prompt() -> None:
    async with (
        FakeUpstream(Reply.json(500, {"error": {"message": "down"}})) as down,
        FakeUpstream(ANSWER) as up,
        running_gateway(experiment(down, up)) as gateway,
    ):
        start, _ = await ask(gateway, chat())
    assert len(down.requests) == 1
    assert start.variant == "verbose"
    (request,) = sent(up)
    assert request["messages"][0] == {"role": "system", "content": VERBOSE}
    assert request["max_completion_tokens"] == 50


async def test_a_cache_replay_carries_its_own_call_id_and_each_variant_its_own_entry() -> None:
    recorded = Recorded()
    async with (
        FakeUpstream(ANSWER) as upstream,
        running_gateway(
            experiment(upstream, upstream, cache={"ttl": 60}), telemetry=recorded.telemetry
        ) as gateway,
    ):
        fresh, fresh_id = await ask(gateway, chat())
        replay, replay_id = await ask(gateway, chat())
        other, _ = await ask(gateway, chat(), [("x-variant", "verbose")])
        filled_otherwise, _ = await ask(gateway, chat({"audience": "an expert", "language": "Go"}))

    assert (fresh.cache_hit, replay.cache_hit) == (False, True)
    assert replay.call_id == replay_id != fresh_id == fresh.call_id
    assert replay.variant == "terse"
    # Another variant's prompt, or other variables in it: another entry.
    assert not other.cache_hit
    assert not filled_otherwise.cache_hit
    assert len(upstream.requests) == 3
    replayed = [line for line in recorded.log_lines() if line["cache_hit"]]
    assert [(line["call_id"], line["variant"]) for line in replayed] == [(replay_id, "terse")]
