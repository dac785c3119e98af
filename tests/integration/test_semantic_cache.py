"""The semantic cache through a real server and a real gRPC client: a chat
upstream numbering its answers and an embeddings upstream on loopback
returning hashed bags of words (normalised), so questions sharing words are
near and unrelated ones far. Every answer carries its own number, so a
replay shows which call stored it."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import pytest

from sluice_client.v1 import gateway_pb2 as pb
from sluice_client.v1 import gateway_pb2_grpc
from tests.gateway import RunningGateway, route, running_gateway
from tests.recordings import recording
from tests.upstream import FakeUpstream, Reply, SeenRequest

DIMS = 64
THRESHOLD = 0.8
_ANSWERED = b'"content":"I\'m"'


def bag_of_words(text: str) -> list[float]:
    vector = [0.0] * DIMS
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        vector[int(hashlib.sha256(word.encode()).hexdigest(), 16) % DIMS] += 1.0
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


def cosine(a: str, b: str) -> float:
    return sum(x * y for x, y in zip(bag_of_words(a), bag_of_words(b), strict=True))


def embeddings(request: SeenRequest) -> Reply:
    body = json.loads(recording("openai_embeddings_response.json"))
    inputs = request.json()["input"]
    texts = [inputs] if isinstance(inputs, str) else inputs
    body["data"] = [
        {"object": "embedding", "index": i, "embedding": bag_of_words(text)}
        for i, text in enumerate(texts)
    ]
    return Reply.json(200, body)


def numbered_answers(tool_calls: bool = False) -> Any:
    """An OpenAI stream whose first word is `answer-<n>`, n counting calls
    (or a tool call's, with `tool_calls`)."""
    body = recording("openai_chat_stream.txt")
    count = itertools.count(1)

    def answer(_request: SeenRequest) -> Reply:
        if tool_calls:
            next(count)
            return Reply(chunks=[recording("openai_chat_tool_calls_stream.txt")])
        return Reply(chunks=[body.replace(_ANSWERED, f'"content":"answer-{next(count)}"'.encode())])

    return answer


def semantic_config(
    chat: FakeUpstream,
    embedder: FakeUpstream,
    semantic: dict[str, Any] | None = None,
    max_entries: int = 100,
) -> dict[str, Any]:
    cache = {
        "ttl": 60,
        "max_entries": max_entries,
        "namespace": {"metadata": "x-tenant"},
        "semantic": {"embeddings_route": "embed", "threshold": THRESHOLD, **(semantic or {})},
    }
    return {
        "routes": [
            route("chat", provider="openai", name="m", api_base=chat.base_url) | {"cache": cache},
            route(
                "embed",
                "llm/v1/embeddings",
                provider="openai",
                name="e",
                api_base=embedder.base_url,
            ),
        ]
    }


@asynccontextmanager
async def gateway(
    semantic: dict[str, Any] | None = None,
    embed: Any = embeddings,
    tool_calls: bool = False,
    max_entries: int = 100,
) -> AsyncIterator[tuple[RunningGateway, FakeUpstream, FakeUpstream]]:
    async with (
        FakeUpstream(numbered_answers(tool_calls)) as chat,
        FakeUpstream(embed) as embedder,
    ):
        config = semantic_config(chat, embedder, semantic, max_entries)
        async with running_gateway(config) as running:
            yield running, chat, embedder


class Reaching(Protocol):
    """A running gateway, in this process or another."""

    stub: gateway_pb2_grpc.GatewayServiceAsyncStub


@dataclass
class Answer:
    word: str
    hit: bool
    similarity: float | None


async def ask(
    running: Reaching,
    question: str,
    *,
    history: tuple[str, ...] = (),
    system: str = "",
    tenant: str = "a",
    tools: bool = False,
    control: pb.CacheControl | None = None,
    header: str = "",
) -> Answer:
    messages = [pb.Message(role=pb.ROLE_SYSTEM, parts=[pb.Part(text=system)])] if system else []
    roles = itertools.cycle([pb.ROLE_USER, pb.ROLE_ASSISTANT])
    messages += [pb.Message(role=next(roles), parts=[pb.Part(text=text)]) for text in history]
    messages.append(pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text=question)]))
    request = pb.ChatRequest(route="chat", messages=messages)
    request.generation.temperature = 0.0
    if tools:
        request.tools.append(pb.Tool(name="lookup", description="Look it up"))
    if control is not None:
        request.cache.CopyFrom(control)
    metadata = [("x-tenant", tenant)] + ([("sluice-cache-control", header)] if header else [])
    replies = [r async for r in running.stub.Chat(request, metadata=metadata, timeout=10)]
    start = replies[0].start
    text = "".join(r.delta.text for r in replies)
    similarity = start.cache_similarity if start.HasField("cache_similarity") else None
    return Answer(text.split()[0] if text else "", start.cache_hit, similarity)


QUESTION = "what is the capital of france"
PARAPHRASE = "what is the capital of france please"
FAR = "tell me a joke about cats"


async def test_a_paraphrase_at_the_threshold_replays_the_stored_answer(
    capfd: pytest.CaptureFixture[str],
) -> None:
    assert cosine(QUESTION, PARAPHRASE) >= THRESHOLD > cosine(QUESTION, FAR)
    async with gateway() as (running, chat, embedder):
        stored = await ask(running, QUESTION)
        assert (stored.hit, stored.similarity) == (False, None)
        hit = await ask(running, PARAPHRASE)
        assert (hit.word, hit.hit) == (stored.word, True)
        assert hit.similarity == pytest.approx(cosine(QUESTION, PARAPHRASE), abs=1e-5)
        # The access log (on stdout, written as the call ends) tells a
        # semantic hit by its similarity.
        lines: list[str] = []
        for _ in range(100):
            lines += capfd.readouterr().out.splitlines()
            if len(lines) == 2:
                break
            await asyncio.sleep(0.01)
        logged = json.loads(lines[-1])
        assert (logged["cache_hit"], logged["cache_similarity"]) == (True, hit.similarity)
        exact = await ask(running, QUESTION)  # the exact cache answers first: no similarity
        assert (exact.word, exact.hit, exact.similarity) == (stored.word, True, None)
        far = await ask(running, FAR)
        assert (far.hit, far.word) == (False, "answer-2")
        assert len(chat.requests) == 2
        # Each lookup that missed the exact cache embedded its question.
        assert [r.json()["input"] for r in embedder.requests] == [[QUESTION], [PARAPHRASE], [FAR]]


async def test_below_the_threshold_is_a_miss() -> None:
    async with gateway({"threshold": 0.95}) as (running, chat, _embedder):
        assert cosine(QUESTION, PARAPHRASE) < 0.95
        await ask(running, QUESTION)
        assert not (await ask(running, PARAPHRASE)).hit
        assert len(chat.requests) == 2


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"tenant": "a"}, {"tenant": "b"}),
        ({"system": "You answer in French."}, {"system": "You answer in German."}),
        ({}, {"tools": True}),
        # "yes, do it" after two different conversations.
        ({"history": ("delete my files", "Sure?")}, {"history": ("send the email", "Sure?")}),
    ],
    ids=["namespace", "system prompt", "tools", "earlier messages"],
)
async def test_never_across_partitions(first: dict[str, Any], second: dict[str, Any]) -> None:
    async with gateway() as (running, chat, _embedder):
        await ask(running, "yes, do it", **first)
        assert (await ask(running, "yes, do it please", **first)).hit  # the same partition hits
        assert not (await ask(running, "yes, do it please", **second)).hit
        assert len(chat.requests) == 2


async def test_conversation_scope_embeds_every_message() -> None:
    async with gateway({"scope": "conversation"}) as (running, chat, embedder):
        await ask(running, "and its population", history=(QUESTION, "Paris"))
        hit = await ask(running, "and its population please", history=(QUESTION, "Paris"))
        assert hit.hit
        assert embedder.requests[0].json()["input"] == [
            f"user: {QUESTION}\nassistant: Paris\nuser: and its population"
        ]
        assert len(chat.requests) == 1


@pytest.mark.parametrize(
    "opt_out",
    [
        {"control": pb.CacheControl(semantic=False)},
        {"control": pb.CacheControl(bypass=True)},
        {"header": "no-cache"},
    ],
    ids=["semantic false", "bypass", "no-cache"],
)
async def test_a_call_may_opt_out(opt_out: dict[str, Any]) -> None:
    async with gateway() as (running, chat, _embedder):
        await ask(running, QUESTION)
        assert not (await ask(running, PARAPHRASE, **opt_out)).hit
        assert len(chat.requests) == 2


async def test_a_failing_embeddings_route_is_a_miss_not_an_error() -> None:
    async with gateway(embed=Reply.json(500, {"error": {"message": "down"}})) as (
        running,
        chat,
        embedder,
    ):
        first = await ask(running, QUESTION)
        second = await ask(running, PARAPHRASE)
        assert (first.word, second.word, second.hit) == ("answer-1", "answer-2", False)
        assert embedder.requests
        assert len(chat.requests) == 2


async def test_answers_with_tool_calls_are_never_stored_semantically() -> None:
    async with gateway(tool_calls=True) as (running, chat, _embedder):
        await ask(running, QUESTION)
        assert (await ask(running, QUESTION)).hit  # the exact cache keeps it
        assert not (await ask(running, PARAPHRASE)).hit
        assert len(chat.requests) == 2


async def test_the_index_keeps_max_entries() -> None:
    async with gateway({"max_entries": 1}) as (running, chat, _embedder):
        await ask(running, QUESTION)
        await ask(running, FAR)  # evicts the first question from the index
        assert (await ask(running, f"{FAR} please")).hit
        # Its answer is still in the response cache, but no longer indexed.
        assert not (await ask(running, PARAPHRASE)).hit
        assert len(chat.requests) == 3
