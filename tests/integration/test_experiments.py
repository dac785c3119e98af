"""Feedback and GetExperiment through real servers: feedback is the calling
key's alone, a replaced value counts once, an unknown id is NOT_FOUND, and
with Redis feedback given to one `sluice serve` process counts for a call
another one served."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from sluice.auth import hash_key
from sluice.cli import main
from sluice_client.v1 import gateway_pb2 as pb
from sluice_client.v1 import gateway_pb2_grpc
from tests.gateway import running_gateway
from tests.integration.test_auth import chat, error_info
from tests.integration.test_shared_state import sluice_processes, state
from tests.redis_server import RedisServer

ALICE_KEY = "sk-sluice-alice-Pw3nQ8rTz5"
BOB_KEY = "sk-sluice-bob-Lm6vK2xYc9"
CAROL_KEY = "sk-sluice-carol-Rt4bN7hJs1"


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def variants_route(**extra: Any) -> dict[str, Any]:
    return {
        "name": "ab",
        "route_type": "llm/v1/chat",
        "strategy": "weighted",
        "targets": [
            {"name": "terse", "model": {"provider": "mock", "reply": "ok"}},
            {"name": "chatty", "model": {"provider": "mock", "reply": "well hello there"}},
        ],
        **extra,
    }


CONFIG = {
    "auth": {
        "keys": [
            {"name": "alice", "sha256": hash_key(ALICE_KEY)},
            {"name": "bob", "sha256": hash_key(BOB_KEY)},
            {"name": "carol", "sha256": hash_key(CAROL_KEY), "routes": ["plain"]},
        ]
    },
    "routes": [
        variants_route(),
        {"name": "plain", "route_type": "llm/v1/chat", "model": {"provider": "mock"}},
    ],
}


async def call_id_of(
    stub: gateway_pb2_grpc.GatewayServiceAsyncStub, key: str | None = None
) -> tuple[str, str]:
    """Make one call on route ab; its call id and the variant that answered."""
    call: Any = stub.Chat(chat("ab"), metadata=bearer(key) if key else None)
    responses = [response async for response in call]
    metadata = dict(await call.initial_metadata())
    variant = "terse" if "".join(r.delta.text for r in responses) == "ok" else "chatty"
    return str(metadata["sluice-call-id"]), variant


def feedback(call_id: str, name: str = "good", **value: Any) -> pb.FeedbackRequest:
    return pb.FeedbackRequest(call_id=call_id, name=name, **(value or {"bool_value": True}))


def by_name(response: pb.GetExperimentResponse) -> dict[str, pb.VariantResult]:
    return {variant.name: variant for variant in response.variants}


async def test_feedback_is_the_callers_own_and_a_replacement_counts_once() -> None:
    async with running_gateway(CONFIG) as gw:
        call_id, variant = await call_id_of(gw.stub, ALICE_KEY)

        with pytest.raises(grpc.aio.AioRpcError) as others:
            await gw.stub.Feedback(feedback(call_id), metadata=bearer(BOB_KEY))
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await gw.stub.Feedback(feedback("0" * 32), metadata=bearer(ALICE_KEY))

        first = await gw.stub.Feedback(feedback(call_id), metadata=bearer(ALICE_KEY))
        second = await gw.stub.Feedback(
            feedback(call_id, bool_value=False), metadata=bearer(ALICE_KEY)
        )
        await gw.stub.Feedback(
            feedback(call_id, "stars", number_value=4.0), metadata=bearer(ALICE_KEY)
        )
        results = await gw.stub.GetExperiment(
            pb.GetExperimentRequest(route="ab"), metadata=bearer(BOB_KEY)
        )
        with pytest.raises(grpc.aio.AioRpcError) as not_allowed:
            await gw.stub.GetExperiment(
                pb.GetExperimentRequest(route="ab"), metadata=bearer(CAROL_KEY)
            )
        with pytest.raises(grpc.aio.AioRpcError) as no_experiment:
            await gw.stub.GetExperiment(
                pb.GetExperimentRequest(route="plain"), metadata=bearer(CAROL_KEY)
            )

    for refused in (others.value, unknown.value):
        assert refused.code() == grpc.StatusCode.NOT_FOUND
        assert error_info(refused).reason == "CALL_NOT_FOUND"
    # Another key's id reads exactly like an unknown one.
    assert others.value.details() == str(unknown.value.details()).replace("0" * 32, call_id)
    assert (first.replaced, second.replaced) == (False, True)
    answered = by_name(results)[variant]
    assert (answered.calls, answered.errors) == (1, 0)
    good = {item.name: item for item in answered.feedback}
    assert (good["good"].count, good["good"].mean) == (1, 0.0)  # False replaced True
    assert (good["stars"].count, good["stars"].mean) == (1, 4.0)
    assert answered.output_tokens_mean == (1 if variant == "terse" else 3)
    assert {v.name for v in results.variants} == {"terse", "chatty"}
    assert sum(v.traffic_share for v in results.variants) == pytest.approx(1.0)
    for refused in (not_allowed.value, no_experiment.value):
        assert refused.code() == grpc.StatusCode.NOT_FOUND
        assert error_info(refused).reason == "ROUTE_NOT_FOUND"


async def test_feedback_is_checked_and_the_window_bounds_results() -> None:
    async with running_gateway({"routes": [variants_route()]}) as gw:
        call_id, _ = await call_id_of(gw.stub)
        refusals = []
        for request in (
            pb.FeedbackRequest(call_id=call_id, name="good"),  # no value
            feedback(call_id, "bad name!"),
            feedback(call_id, number_value=float("nan")),
            feedback(call_id, text_value="x" * 1025),
            pb.FeedbackRequest(call_id=call_id, name="good", bool_value=True, comment="c" * 1025),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await gw.stub.Feedback(request)
            refusals.append(refused.value)
        await gw.stub.Feedback(feedback(call_id, "note", text_value="nice"))
        recent = await gw.stub.GetExperiment(
            pb.GetExperimentRequest(route="ab", window=Duration(seconds=3600))
        )
    assert {error.code() for error in refusals} == {grpc.StatusCode.INVALID_ARGUMENT}
    assert sum(v.calls for v in recent.variants) == 1
    # Text feedback is kept with the call, not averaged.
    assert all(not v.feedback for v in recent.variants)


async def test_feedback_on_one_replica_counts_for_a_call_another_served(
    redis_server: RedisServer, tmp_path: Any
) -> None:
    config = {"state": state(redis_server), "routes": [variants_route()]}
    with sluice_processes(config, tmp_path, 2) as targets:
        channels = [grpc.aio.insecure_channel(target) for target in targets]
        try:
            for channel in channels:
                await asyncio.wait_for(channel.channel_ready(), 15)
            stubs: list[gateway_pb2_grpc.GatewayServiceAsyncStub] = [
                gateway_pb2_grpc.GatewayServiceStub(channel) for channel in channels
            ]
            one, two = stubs
            served = [await call_id_of(one) for _ in range(4)]
            for call_id, _ in served:
                await two.Feedback(feedback(call_id))
            # Replaced on the first replica: still one value per call.
            await one.Feedback(feedback(served[0][0], bool_value=False))
            results = by_name(await two.GetExperiment(pb.GetExperimentRequest(route="ab")))
        finally:
            for channel in channels:
                await channel.close()
    counts: dict[str, int] = {}
    for _, variant in served:
        counts[variant] = counts.get(variant, 0) + 1
    for name, result in results.items():
        assert result.calls == counts.get(name, 0)
        good = [item for item in result.feedback if item.name == "good"]
        assert sum(item.count for item in good) == counts.get(name, 0)
    trues = sum(round(i.mean * i.count) for v in results.values() for i in v.feedback)
    assert trues == 3


async def test_the_cli_prints_a_routes_results(capsys: pytest.CaptureFixture[str]) -> None:
    async with running_gateway(CONFIG) as gw:
        call_id, variant = await call_id_of(gw.stub, ALICE_KEY)
        await gw.stub.Feedback(feedback(call_id), metadata=bearer(ALICE_KEY))
        show = ["experiments", "show", "ab", "--address", gw.target, "--window", "hour"]
        code = await asyncio.to_thread(main, [*show, "--key", ALICE_KEY])
        refused = await asyncio.to_thread(main, [*show, "--key", CAROL_KEY])
    out, err = capsys.readouterr()
    assert (code, refused) == (0, 1)
    assert out.splitlines()[0].split()[:3] == ["variant", "calls", "errors"]
    assert f"{variant} good: n=1 mean=1" in out
    assert "leader on good: " + variant in out
    assert "NOT_FOUND" in err
