"""Tenant isolation through a real server, a real gRPC client and both cache
backends (memory, a real Redis): under every `cache.namespace` setting, two
keys never read each other's cached answers; a key claiming a namespace it
may not is refused before limits, cache or upstream; an allowed claim shares
the tenant's entries; with auth off a metadata namespace is taken as sent.

Every upstream answer carries its own number, so an answer read from the
cache shows whose call stored it."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from sluice.auth import hash_key
from sluice_client.v1 import gateway_pb2 as pb
from tests.gateway import RunningGateway, route, running_gateway
from tests.recordings import recording
from tests.redis_server import RedisServer
from tests.upstream import FakeUpstream, Reply, SeenRequest

ACME_KEY = "sk-sluice-acme-Jw3kP9sLq2"
GLOBEX_KEY = "sk-sluice-globex-Tn6vB1xRm8"
ACME_TOO_KEY = "sk-sluice-acme-too-Fq4hZ7cWd5"
KEYS = [
    {"name": "acme-app", "sha256": hash_key(ACME_KEY), "namespaces": ["acme"]},
    {
        "name": "globex-app",
        "sha256": hash_key(GLOBEX_KEY),
        "namespaces": ["globex"],
        # One request a minute: a refused claim must not spend it.
        "limits": {"requests": "1/minute"},
    },
    {"name": "acme-batch", "sha256": hash_key(ACME_TOO_KEY), "namespaces": ["acme"]},
]
BY_TENANT = {"metadata": "x-tenant"}
# Every `cache.namespace` the schema takes.
SETTINGS = {"none": None, "key": "key", "metadata": BY_TENANT}

_ANSWERED = b'"content":"I\'m"'


def numbered_answers() -> Any:
    """An OpenAI stream whose first words are `answer-<n>`, n counting calls."""
    body = recording("openai_chat_stream.txt")
    assert _ANSWERED in body
    count = itertools.count(1)

    def answer(_request: SeenRequest) -> Reply:
        return Reply(chunks=[body.replace(_ANSWERED, f'"content":"answer-{next(count)}"'.encode())])

    return answer


@pytest.fixture(params=["memory", "redis"])
def state(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    if request.param == "memory":
        yield {"backend": "memory"}
    else:
        redis: RedisServer = request.getfixturevalue("redis_server")
        yield {"backend": "redis", "url": redis.url}


@asynccontextmanager
async def gateway_with_cache(
    state: dict[str, Any], namespace: object, auth: bool = True
) -> AsyncIterator[tuple[RunningGateway, FakeUpstream]]:
    async with FakeUpstream(numbered_answers()) as upstream:
        cache: dict[str, Any] = {"ttl": 60}
        if namespace is not None:
            cache["namespace"] = namespace
        config: dict[str, Any] = {
            "state": state,
            "routes": [
                route("chat", provider="openai", name="m", api_base=upstream.base_url)
                | {"cache": cache}
            ],
        }
        if auth:
            config["auth"] = {"keys": KEYS}
        async with running_gateway(config) as gateway:
            yield gateway, upstream


async def ask(
    gateway: RunningGateway, key: str = "", tenant: str | None = None
) -> tuple[str, bool]:
    """The answer's text to one fixed question, and whether it was a cache hit."""
    request = pb.ChatRequest(
        route="chat", messages=[pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="hi")])]
    )
    request.generation.temperature = 0.0
    metadata = [("authorization", f"Bearer {key}")] if key else []
    if tenant is not None:
        metadata.append(("x-tenant", tenant))
    responses = [r async for r in gateway.stub.Chat(request, metadata=metadata, timeout=10)]
    text = "".join(r.delta.text for r in responses)
    return text.split()[0], responses[0].start.cache_hit


def error_reason(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return str(info.reason)


@pytest.mark.parametrize("setting", SETTINGS.values(), ids=SETTINGS.keys())
async def test_two_keys_never_read_each_others_answers(
    state: dict[str, Any], setting: object
) -> None:
    # Each key's own claim where the setting takes one; no claim otherwise.
    acme, globex = ("acme", "globex") if setting == BY_TENANT else (None, None)
    async with gateway_with_cache(state, setting) as (gateway, _upstream):
        stored_by_acme, _ = await ask(gateway, ACME_KEY, acme)
        assert await ask(gateway, ACME_KEY, acme) == (stored_by_acme, True)  # the cache works
        stored_by_globex, hit = await ask(gateway, GLOBEX_KEY, globex)
        assert not hit
        assert stored_by_globex != stored_by_acme
        assert await ask(gateway, ACME_KEY, acme) == (stored_by_acme, True)


@pytest.mark.parametrize("setting", SETTINGS.values(), ids=SETTINGS.keys())
async def test_a_key_without_the_metadata_reads_only_its_own_answers(
    state: dict[str, Any], setting: object
) -> None:
    async with gateway_with_cache(state, setting) as (gateway, _upstream):
        by_acme, _ = await ask(gateway, ACME_KEY, "acme" if setting == BY_TENANT else None)
        # Neither another key nor acme's own key without its claim reads it.
        by_acme_batch, hit = await ask(gateway, ACME_TOO_KEY)
        assert (by_acme_batch != by_acme, hit) == (True, False)
        if setting == BY_TENANT:
            unclaimed, hit = await ask(gateway, ACME_KEY)
            assert (unclaimed != by_acme, hit) == (True, False)


async def test_keys_allowed_one_namespace_share_its_answers(state: dict[str, Any]) -> None:
    async with gateway_with_cache(state, BY_TENANT) as (gateway, upstream):
        stored, _ = await ask(gateway, ACME_KEY, "acme")
        assert await ask(gateway, ACME_TOO_KEY, "acme") == (stored, True)
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("claim", ["acme", "ACME", "globex-app", ""])
async def test_a_claim_outside_the_keys_namespaces_is_refused_before_any_work(
    state: dict[str, Any], claim: str
) -> None:
    async with gateway_with_cache(state, BY_TENANT) as (gateway, upstream):
        await ask(gateway, ACME_KEY, "acme")
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await ask(gateway, GLOBEX_KEY, claim)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert error_reason(refused.value) == "NAMESPACE_NOT_ALLOWED"
            assert "answer-1" not in str(refused.value.details())
        assert len(upstream.requests) == 1, "a refused claim reaches no upstream"
        # ...and takes nothing from the key's one request a minute.
        answer, hit = await ask(gateway, GLOBEX_KEY, "globex")
        assert (answer, hit) == ("answer-2", False)
    assert len(upstream.requests) == 2


async def test_with_auth_off_a_metadata_namespace_is_taken_as_sent(state: dict[str, Any]) -> None:
    async with gateway_with_cache(state, BY_TENANT, auth=False) as (gateway, upstream):
        stored, _ = await ask(gateway, tenant="acme")
        # Any caller sending the value reads the tenant's entries: a convenience.
        assert await ask(gateway, tenant="acme") == (stored, True)
        assert (await ask(gateway, tenant="globex"))[1] is False
        assert (await ask(gateway))[1] is False
    assert len(upstream.requests) == 3
