"""The bench's `sluice-semantic` row against a real Sluice: its config, its
load generator's check (only semantic hits count), and its failing when the
semantic cache does not answer. A loopback HTTP server plays the bench's
nginx: the same SSE body for every chat, the same vector for every text."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from bench import loadgen, report, workload
from bench.scenarios import GROUPS, SCENARIOS, Outcome, sluice_config
from sluice_client.v1 import gateway_pb2 as pb
from tests.gateway import running_gateway
from tests.upstream import FakeUpstream, Reply, SeenRequest

ROUTE = workload.SEMANTIC_ROUTE


def _nginx(embeddings_status: int = 200) -> Callable[[SeenRequest], Reply]:
    def answer(request: SeenRequest) -> Reply:
        if request.path.endswith("/embeddings"):
            return Reply.json(embeddings_status, workload.embeddings_body())
        return Reply(chunks=[workload.sse_body()])

    return answer


def _config(tmp_path: Path, upstream: FakeUpstream, semantic: bool = True) -> dict[str, Any]:
    path = tmp_path / "sluice.json"
    port = int(upstream.base_url.rpartition(":")[2])
    sluice_config(path, port, "memory", semantic=semantic)
    config: dict[str, Any] = json.loads(path.read_text())
    return config


def _paths(upstream: FakeUpstream, suffix: str) -> list[SeenRequest]:
    return [request for request in upstream.requests if request.path.endswith(suffix)]


@pytest.fixture
async def nginx(request: pytest.FixtureRequest) -> AsyncIterator[FakeUpstream]:
    status = getattr(request, "param", 200)
    async with FakeUpstream(_nginx(status)) as upstream:
        yield upstream


@pytest.fixture
async def target(nginx: FakeUpstream, tmp_path: Path) -> AsyncIterator[str]:
    async with running_gateway(_config(tmp_path, nginx)) as gateway:
        yield gateway.target


async def _replies(target: str, payloads: Callable[[], bytes], calls: int) -> list[bool | None]:
    async with grpc.aio.insecure_channel(target) as channel:
        chat: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
            loadgen.CHAT_METHOD
        )
        request = loadgen.checked_chat(chat, payloads, ROUTE, accept_hits=True)
        return [(await request()).cache_hit for _ in range(calls)]


def test_only_the_semantic_row_has_the_semantic_route(tmp_path: Path) -> None:
    path = tmp_path / "sluice.json"
    sluice_config(path, 9, "memory")
    assert ROUTE not in [route["name"] for route in json.loads(path.read_text())["routes"]]
    assert SCENARIOS["sluice-semantic"].semantic
    assert SCENARIOS["sluice-semantic"].cached
    assert not SCENARIOS["sluice-cache"].semantic
    assert "sluice-semantic" not in GROUPS["standard"]
    assert {"sluice", "sluice-semantic"} <= set(GROUPS["semantic"])


def test_every_call_has_a_user_text_of_its_own() -> None:
    payloads = workload.chat_payloads(ROUTE)
    texts = {pb.ChatRequest.FromString(payloads()).messages[0].parts[0].text for _ in range(50)}
    assert len(texts) == 50
    fixed = workload.chat_payloads(workload.CACHE_ROUTE)
    assert fixed() == fixed()


async def test_calls_after_the_first_are_semantic_hits(target: str, nginx: FakeUpstream) -> None:
    hits = await _replies(target, workload.chat_payloads(ROUTE), calls=4)

    assert hits == [False, True, True, True]
    assert len(_paths(nginx, "/chat/completions")) == 1  # the first call's, stored
    inputs = [request.json()["input"][0] for request in _paths(nginx, "/embeddings")]
    assert len(inputs) == 4
    assert len(set(inputs)) == 4


async def test_an_exact_hit_is_not_counted_as_a_semantic_one(
    target: str, nginx: FakeUpstream
) -> None:
    same = workload.chat_request(ROUTE).SerializeToString()

    hits = await _replies(target, lambda: same, calls=2)

    # The second call is answered by the exact cache: no embedding, no similarity.
    assert hits == [False, False]
    assert len(_paths(nginx, "/embeddings")) == 1


async def _outcome(target: str) -> Outcome:
    load = await loadgen.run(
        mode="grpc-chat",
        target=target,
        route=ROUTE,
        concurrency=2,
        warmup=0.3,
        duration=0.5,
        watch={},
        accept_hits=True,
    )
    return Outcome(SCENARIOS["sluice-semantic"], 2, load=load)


async def test_the_row_is_clean_when_the_semantic_cache_answers(target: str) -> None:
    outcome = await _outcome(target)

    assert outcome.load is not None
    assert outcome.load["cache_hits"] > 0
    assert outcome.load["cache_misses"] == 0
    assert outcome.clean


@pytest.mark.parametrize("nginx", [500], indirect=True)
async def test_the_row_fails_when_embeddings_fail(target: str) -> None:
    # A failed embedding is a semantic miss, never the call's error: every
    # call is answered, from upstream, and the row must say it measured no hit.
    outcome = await _outcome(target)

    assert outcome.load is not None
    assert outcome.load["errors"] == 0
    assert outcome.load["cache_hits"] == 0
    assert outcome.load["cache_misses"] > 0
    assert not outcome.clean
    assert "sluice-semantic**: cache hit ratio 0.0%" in report.failures([outcome])
