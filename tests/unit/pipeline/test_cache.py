"""The response cache stage: keys, per-request control, the temperature rule,
stream replay, what is never stored, single flight and the failure policy."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any

import pytest

from sluice.coalesce import coalesce
from sluice.config.schema import CacheConfig, CacheNamespace, FailurePolicy
from sluice.domain import (
    CacheControl,
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    Embeddings,
    Event,
    Finish,
    FinishReason,
    GenerationParams,
    ImagePart,
    Message,
    Operation,
    Part,
    ReasoningDelta,
    Request,
    Role,
    Start,
    TextDelta,
    TextPart,
    Tool,
    ToolCallDelta,
    ToolCallPart,
    ToolChoice,
    ToolChoiceMode,
    ToolResultPart,
    Usage,
)
from sluice.errors import GatewayError, Status, upstream_unreachable
from sluice.identity import Caller
from sluice.pipeline import Call, build_pipeline
from sluice.pipeline.cache import ResponseCaching
from sluice.pipeline.cache_key import CACHE_CONTROL_HEADER, cache_key, parse_cache_control
from sluice.pipeline.call import Handler
from sluice.pipeline.namespace import CacheNamespaces, cache_namespace
from sluice.pipeline.routing import Routing
from sluice.pipeline.selection import TargetStats
from sluice.pipeline.variants import Variants, shaped
from sluice.providers.base import Adapter, ExchangeObserver
from sluice.routes import Route, RouteTable, Target
from sluice.state.answers import decode_events, encode_events
from sluice.state.base import ResponseCacheStore, StateUnavailableError, StateWait
from sluice.state.memory import MemoryState


class _NoAdapter(Adapter):
    """The tests' endpoint answers instead of an adapter."""

    provider = "openai"

    def stream(
        self,
        request: Request,
        *,
        observer: ExchangeObserver | None = None,
        coalesce_within: float | None = None,
    ) -> AsyncGenerator[Event, None]:
        raise AssertionError("not called")


TARGET = Target("openai", "gpt-4o-mini", _NoAdapter())
CHAT = Route("chat", Operation.CHAT, (TARGET,), GenerationParams(temperature=0.0))
COMPLETE = Route("complete", Operation.COMPLETION, (TARGET,), GenerationParams(temperature=0.0))
EMBED = Route("embed", Operation.EMBEDDING, (TARGET,), GenerationParams())
ROUTES = {route.name: route for route in (CHAT, COMPLETE, EMBED)}

CHAT_EVENTS: tuple[Event, ...] = (
    Start("resp-1", "gpt-4o-mini", "openai", "chat"),
    ReasoningDelta("thinking"),
    TextDelta("Hel"),
    TextDelta("lo"),
    ToolCallDelta(0, "call-1", "lookup", '{"q":'),
    ToolCallDelta(0, arguments='"x"}'),
    Usage(12, 7, cached_input_tokens=4, reasoning_tokens=3),
    Finish(FinishReason.TOOL_CALLS, "tool_calls"),
)
COMPLETE_EVENTS: tuple[Event, ...] = (
    Start("cmpl-1", "gpt-4o-mini", "openai", "complete"),
    TextDelta("def f():"),
    TextDelta("\n    return 1"),
    Usage(5, 6),
    Finish(FinishReason.LENGTH, "length"),
)
EMBED_EVENTS: tuple[Event, ...] = (
    Start("emb-1", "gpt-4o-mini", "openai", "embed"),
    Embeddings(((0.1, -2.5e-08, 3.0), (1e300, 0.0, -0.0))),
    Usage(4, 0, reported=False),
    Finish(FinishReason.STOP),
)


def chat(
    text: str = "Hi",
    *,
    headers: Mapping[str, str] | None = None,
    caller: Caller | None = None,
    **fields: Any,
) -> Call:
    """A chat call on route `chat`; `fields` replace the request's."""
    request = ChatRequest("chat", (Message(Role.USER, (TextPart(text),)),))
    return Call(dataclasses.replace(request, **fields), headers or {}, caller=caller)


def complete(prompt: str = "def f", **fields: Any) -> Call:
    return Call(dataclasses.replace(CompletionRequest("complete", prompt), **fields), {})


def embed(*inputs: str, headers: dict[str, str] | None = None) -> Call:
    return Call(EmbeddingRequest("embed", inputs or ("a", "b")), headers or {})


class Upstream:
    """A scripted endpoint that counts its calls. With a `gate`, it waits for
    the gate before event `pause_at`; at index `fail_at` it raises instead."""

    def __init__(
        self,
        events: Sequence[Event] = CHAT_EVENTS,
        *,
        gate: asyncio.Event | None = None,
        pause_at: int = 1,
        fail_at: int | None = None,
    ) -> None:
        self.events = events
        self.gate = gate
        self.pause_at = pause_at
        self.fail_at = fail_at
        self.calls = 0
        self.completed = 0
        self.abandoned = 0
        self.errors: list[GatewayError] = []

    def __call__(self, call: Call) -> AsyncGenerator[Event, None]:
        return self._stream()

    async def _stream(self) -> AsyncGenerator[Event, None]:
        self.calls += 1
        try:
            for index, event in enumerate(self.events):
                if index == self.pause_at and self.gate is not None:
                    await self.gate.wait()
                if index == self.fail_at:
                    self.errors.append(upstream_unreachable("openai", "connection reset"))
                    raise self.errors[-1]
                yield event
        except (GeneratorExit, asyncio.CancelledError):
            self.abandoned += 1
            raise
        self.completed += 1


def pipeline(
    upstream: Upstream,
    cache: CacheConfig | None = None,
    state: MemoryState | None = None,
) -> Handler:
    """Routing then the cache stages, every route cached with `cache`."""
    return cached_pipeline(upstream, dict.fromkeys(ROUTES, cache or CacheConfig()), state=state)


def cached_pipeline(
    upstream: Upstream,
    caches: Mapping[str, CacheConfig],
    routes: Sequence[Route] = tuple(ROUTES.values()),
    state: MemoryState | None = None,
) -> Handler:
    """Routing, then the stages of a cached route: its namespace, the cache."""
    namespaces = CacheNamespaces({name: cache.namespace for name, cache in caches.items()})
    stage = ResponseCaching(caches, state or MemoryState())
    return build_pipeline(
        [Routing(RouteTable(list(routes))), Variants(TargetStats()), namespaces, stage], upstream
    )


async def collect(handler: Handler, call: Call) -> list[Event]:
    return [event async for event in handler(call)]


def hit(events: Sequence[Event]) -> bool:
    start = events[0]
    assert isinstance(start, Start)
    return start.cache_hit


# --- replay ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "events"),
    [(chat, CHAT_EVENTS), (complete, COMPLETE_EVENTS), (embed, EMBED_EVENTS)],
    ids=["chat", "completion", "embedding"],
)
async def test_a_hit_replays_the_stored_events_coalesced(
    call: Callable[[], Call], events: tuple[Event, ...]
) -> None:
    upstream = Upstream(events)
    handler = pipeline(upstream)
    assert await collect(handler, call()) == list(events)
    replayed = await collect(handler, call())
    assert upstream.calls == 1
    start = events[0]
    assert isinstance(start, Start)
    # The whole answer is waiting: its runs of deltas leave merged.
    assert replayed == coalesce([dataclasses.replace(start, cache_hit=True), *events[1:]])


@pytest.mark.parametrize(
    ("call", "events"),
    [(chat, CHAT_EVENTS), (complete, COMPLETE_EVENTS), (embed, EMBED_EVENTS)],
    ids=["chat", "completion", "embedding"],
)
async def test_a_hit_on_a_route_that_does_not_coalesce_replays_one_by_one(
    call: Callable[[], Call], events: tuple[Event, ...]
) -> None:
    upstream = Upstream(events)
    routes = [dataclasses.replace(route, coalesce=False) for route in ROUTES.values()]
    handler = cached_pipeline(upstream, dict.fromkeys(ROUTES, CacheConfig()), routes)
    assert await collect(handler, call()) == list(events)
    replayed = await collect(handler, call())
    assert upstream.calls == 1
    assert len(replayed) == len(events)
    start = events[0]
    assert isinstance(start, Start)
    assert replayed == [dataclasses.replace(start, cache_hit=True), *events[1:]]


async def test_a_route_without_cache_config_is_not_cached() -> None:
    upstream = Upstream()
    stage = ResponseCaching({}, MemoryState())
    handler = build_pipeline([Routing(RouteTable([CHAT])), stage], upstream)
    for _ in range(2):
        assert await collect(handler, chat()) == list(CHAT_EVENTS)
    assert upstream.calls == 2


async def test_route_defaults_count_as_if_sent() -> None:
    upstream = Upstream()
    handler = pipeline(upstream)
    await collect(handler, chat())  # temperature 0 from the route's defaults
    assert hit(await collect(handler, chat(generation=GenerationParams(temperature=0.0))))
    assert upstream.calls == 1


async def test_labels_and_headers_do_not_split_the_cache() -> None:
    upstream = Upstream()
    handler = pipeline(upstream)
    await collect(handler, chat())
    other = chat(
        labels={"team": "search"}, headers={"authorization": "Bearer sk-1", "x-request-id": "7"}
    )
    assert hit(await collect(handler, other))
    assert upstream.calls == 1


async def test_a_key_does_not_read_another_keys_answer() -> None:
    upstream = Upstream()
    handler = pipeline(upstream)
    await collect(handler, chat(caller=Caller("ann", None)))
    assert not hit(await collect(handler, chat(caller=Caller("bob", None))))
    assert hit(await collect(handler, chat(caller=Caller("ann", None))))
    assert upstream.calls == 2


async def test_an_unreadable_entry_is_a_miss_and_is_replaced() -> None:
    state = MemoryState()
    upstream = Upstream()
    handler = pipeline(upstream, state=state)
    call = chat()
    await state.cache("chat", 1000).set(key(call), b'{"v":1,"events":[["nope",{}]]}', 60)
    assert not hit(await collect(handler, chat()))
    assert hit(await collect(handler, chat()))
    assert upstream.calls == 1


# --- the key -----------------------------------------------------------------------


def key(call: Call, namespace: CacheConfig | None = None, route: Route | None = None) -> str:
    call.route = route or ROUTES[call.request.route]
    call.targets, call.routed = list(call.route.targets), call.request
    call.request = shaped(call.request, call.route, call.targets[0])
    setting = (namespace or CacheConfig()).namespace
    call.cache_namespace = cache_namespace(setting, call.caller, call.headers)
    return cache_key(call)


def test_the_key_is_the_digest_of_the_canonical_document() -> None:
    # Changing this document means a new key format: bump KEY_VERSION with it.
    document = (
        '{"model":"gpt-4o-mini","operation":"llm/v1/chat","provider":"openai",'
        '"request":{"end_user":"","generation":{"frequency_penalty":null,"max_tokens":null,'
        '"presence_penalty":null,"reasoning_budget_tokens":null,"reasoning_effort":null,'
        '"seed":null,"stop":[],"temperature":0.0,"top_k":null,"top_p":null,'
        '"type":"GenerationParams"},"messages":[{"name":"","parts":[{"text":"Hi ✓",'
        '"type":"TextPart"}],"role":"user","type":"Message"}],"provider_options":{},'
        '"response_format":null,"tool_choice":null,"tools":[]},"route":"chat"}'
    )
    call = chat("Hi ✓", generation=GenerationParams(temperature=0))
    assert key(call) == "v2:" + hashlib.sha256(document.encode()).hexdigest()


IMAGE = ImagePart(data=b"\x89PNG-1", media_type="image/png")
TOOL = Tool("lookup", "Look it up", {"type": "object", "properties": {"q": {"type": "string"}}})
OTHER_TARGET = (Target("openai", "gpt-4o", TARGET.adapter),)


def _user(*parts: Part) -> tuple[Message, ...]:
    return (Message(Role.USER, parts),)


# Every call here asks for a different answer: all keys differ.
DIFFERENT: dict[str, Callable[[], str]] = {
    "base": lambda: key(chat()),
    "text": lambda: key(chat("Hi!")),
    "role": lambda: key(chat(messages=(Message(Role.SYSTEM, (TextPart("Hi"),)),))),
    "name": lambda: key(chat(messages=(Message(Role.USER, (TextPart("Hi"),), name="ann"),))),
    "two messages": lambda: key(chat(messages=_user(TextPart("Hi")) * 2)),
    "two parts": lambda: key(chat(messages=_user(TextPart("H"), TextPart("i")))),
    "image": lambda: key(chat(messages=_user(IMAGE))),
    "image bytes": lambda: key(chat(messages=_user(dataclasses.replace(IMAGE, data=b"other")))),
    "image url": lambda: key(chat(messages=_user(ImagePart(url="https://x/y.png")))),
    "tool call": lambda: key(chat(messages=_user(ToolCallPart("c1", "lookup", "{}")))),
    "tool result": lambda: key(chat(messages=_user(ToolResultPart("c1", "Hi")))),
    "tool error": lambda: key(chat(messages=_user(ToolResultPart("c1", "Hi", is_error=True)))),
    "tools": lambda: key(chat(tools=(TOOL,))),
    "tool description": lambda: key(chat(tools=(dataclasses.replace(TOOL, description="?"),))),
    "tool schema": lambda: key(chat(tools=(dataclasses.replace(TOOL, parameters={}),))),
    "tool choice auto": lambda: key(
        chat(tools=(TOOL,), tool_choice=ToolChoice(ToolChoiceMode.AUTO))
    ),
    "tool choice required": lambda: key(
        chat(tools=(TOOL,), tool_choice=ToolChoice(ToolChoiceMode.REQUIRED))
    ),
    "tool choice named": lambda: key(
        chat(tools=(TOOL,), tool_choice=ToolChoice(tool_name="lookup"))
    ),
    "max_tokens": lambda: key(chat(generation=GenerationParams(max_tokens=10))),
    "temperature": lambda: key(chat(generation=GenerationParams(temperature=0.5))),
    "top_p": lambda: key(chat(generation=GenerationParams(top_p=0.5))),
    "top_k": lambda: key(chat(generation=GenerationParams(top_k=5))),
    "stop": lambda: key(chat(generation=GenerationParams(stop=("\n",)))),
    "presence_penalty": lambda: key(chat(generation=GenerationParams(presence_penalty=0.5))),
    "frequency_penalty": lambda: key(chat(generation=GenerationParams(frequency_penalty=0.5))),
    "seed": lambda: key(chat(generation=GenerationParams(seed=1))),
    "reasoning budget": lambda: key(chat(generation=GenerationParams(reasoning_budget_tokens=64))),
    "model": lambda: key(chat(), route=dataclasses.replace(CHAT, targets=OTHER_TARGET)),
    "route name": lambda: key(chat(), route=dataclasses.replace(CHAT, name="chat-2")),
    "completion": lambda: key(complete("Hi")),
    "prompt": lambda: key(complete("def g")),
    "suffix": lambda: key(complete("Hi", suffix="}")),
    "embedding": lambda: key(embed("Hi")),
    "inputs": lambda: key(embed("Hi", "there")),
    "dimensions": lambda: key(
        Call(EmbeddingRequest("embed", ("Hi",), dimensions=256), {}),
    ),
    "namespaced": lambda: key(chat(), CacheConfig(namespace="key")),
}


def test_every_difference_in_what_is_asked_changes_the_key() -> None:
    keys = {name: make() for name, make in DIFFERENT.items()}
    assert len(set(keys.values())) == len(keys), keys


@pytest.mark.parametrize(
    "call",
    [
        chat(labels={"team": "search"}),
        chat(cache=CacheControl(bypass=True, no_store=True, ttl=5.0)),
        chat(headers={"authorization": "Bearer sk-1", CACHE_CONTROL_HEADER: "no-cache"}),
    ],
    ids=["labels", "cache control", "headers"],
)
def test_what_does_not_change_the_answer_keeps_the_key(call: Call) -> None:
    assert key(call) == key(chat())


BY_KEY = CacheConfig(namespace="key")
BY_TENANT = CacheConfig(namespace=CacheNamespace(metadata="X-Tenant"))
ANN = Caller("ann", None, namespaces=frozenset({"a"}))
BOB = Caller("bob", None, namespaces=frozenset({"a", "b"}))


@pytest.mark.parametrize(
    ("config", "one", "other", "same"),
    [
        (CacheConfig(), chat(headers={"x-tenant": "a"}), chat(), True),
        (CacheConfig(), chat(caller=ANN), chat(caller=BOB), False),
        (CacheConfig(), chat(), chat(caller=ANN), False),
        (CacheConfig(), chat(caller=ANN), chat(caller=Caller("ann", frozenset())), True),
        (BY_KEY, chat(caller=ANN), chat(caller=BOB), False),
        (BY_KEY, chat(), chat(caller=Caller("anonymous", None)), False),
        (
            BY_KEY,
            chat(caller=ANN, headers={"x-tenant": "a"}),
            chat(caller=ANN, headers={"x-tenant": "b"}),
            True,
        ),
        (BY_TENANT, chat(headers={"x-tenant": "a"}), chat(headers={"x-tenant": "b"}), False),
        (BY_TENANT, chat(headers={"x-tenant": "a"}), chat(), False),
        (
            BY_TENANT,
            chat(headers={"x-tenant": "a"}, caller=ANN),
            chat(headers={"x-tenant": "a", "x-other": "1"}, caller=BOB),
            True,
        ),
        (BY_TENANT, chat(caller=ANN), chat(caller=BOB), False),
        (BY_TENANT, chat(caller=ANN), chat(caller=ANN, headers={"x-tenant": "a"}), False),
        (
            BY_TENANT,
            chat(caller=Caller("a", None)),
            chat(caller=ANN, headers={"x-tenant": "a"}),
            False,
        ),
    ],
    ids=[
        "no namespace: anonymous callers share",
        "no namespace: keys differ",
        "no namespace: anonymous is not a key",
        "no namespace: same key name",
        "key names differ",
        "anonymous is not a key named anonymous",
        "key ignores metadata",
        "tenants differ",
        "tenant or none",
        "keys allowed one tenant share it",
        "keys without the metadata differ",
        "a key's own is not its tenant's",
        "a key named like a tenant is not the tenant",
    ],
)
def test_namespaces(config: CacheConfig, one: Call, other: Call, same: bool) -> None:
    assert (key(one, config) == key(other, config)) is same


# --- per-request control ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "control"),
    [
        ("", CacheControl()),
        ("no-cache", CacheControl(bypass=True)),
        ("no-store", CacheControl(no_store=True)),
        ("max-age=60", CacheControl(ttl=60.0)),
        (" NO-CACHE , No-Store,MAX-AGE = 5 ", CacheControl(bypass=True, no_store=True, ttl=5.0)),
        ("max-age=60, max-age=30", CacheControl(ttl=30.0)),
        ("max-age=0", CacheControl(no_store=True)),
        ("private, must-revalidate, no-transform=1", CacheControl()),
    ],
)
def test_parse_cache_control(value: str, control: CacheControl) -> None:
    assert parse_cache_control(value) == control


@pytest.mark.parametrize(
    "value", ["max-age", "max-age=", "max-age=ten", "max-age=-1", "max-age=1.5"]
)
async def test_a_malformed_max_age_is_an_invalid_argument_naming_the_header(value: str) -> None:
    upstream = Upstream()
    with pytest.raises(GatewayError) as caught:
        await collect(pipeline(upstream), chat(headers={CACHE_CONTROL_HEADER: value}))
    assert caught.value.status is Status.INVALID_ARGUMENT
    assert caught.value.field == CACHE_CONTROL_HEADER
    assert CACHE_CONTROL_HEADER in caught.value.message
    assert upstream.calls == 0


CONTROLLED: list[tuple[str, Callable[[], Call], bool, bool]] = [
    # (id, the controlled call, answered from the cache, stores its answer)
    ("none", chat, True, True),
    ("request bypass", lambda: chat(cache=CacheControl(bypass=True)), False, True),
    ("request no_store", lambda: chat(cache=CacheControl(no_store=True)), True, False),
    ("header no-cache", lambda: chat(headers={CACHE_CONTROL_HEADER: "no-cache"}), False, True),
    ("header no-store", lambda: chat(headers={CACHE_CONTROL_HEADER: "no-store"}), True, False),
    ("header max-age=0", lambda: chat(headers={CACHE_CONTROL_HEADER: "max-age=0"}), True, False),
    (
        "both sources",
        lambda: chat(cache=CacheControl(bypass=True), headers={CACHE_CONTROL_HEADER: "no-store"}),
        False,
        False,
    ),
    ("embedding header", lambda: embed(headers={CACHE_CONTROL_HEADER: "no-cache"}), False, True),
]


@pytest.mark.parametrize(
    ("controlled", "answered", "stores"),
    [row[1:] for row in CONTROLLED],
    ids=[row[0] for row in CONTROLLED],
)
async def test_cache_control_from_request_and_metadata(
    controlled: Callable[[], Call], answered: bool, stores: bool
) -> None:
    plain: Callable[[], Call] = (
        embed if isinstance(controlled().request, EmbeddingRequest) else chat
    )
    events = EMBED_EVENTS if plain is embed else CHAT_EVENTS
    # Looked up: a stored answer is replayed, or not.
    primed = pipeline(Upstream(events))
    await collect(primed, plain())
    assert hit(await collect(primed, controlled())) is answered
    # Stored: a plain call afterwards is a hit, or not.
    fresh = pipeline(Upstream(events))
    await collect(fresh, controlled())
    assert hit(await collect(fresh, plain())) is stores


class RecordingStore:
    def __init__(self) -> None:
        self.ttls: list[float] = []

    async def get(self, key: str, *, within: StateWait | None = None) -> bytes | None:
        return None

    async def set(
        self, key: str, value: bytes, ttl: float, *, within: StateWait | None = None
    ) -> None:
        self.ttls.append(ttl)


class StateWithStore(MemoryState):
    """Memory state whose response caches are the one `store` given."""

    def __init__(self, store: ResponseCacheStore) -> None:
        super().__init__()
        self.store = store

    def cache(self, namespace: str, max_entries: int) -> ResponseCacheStore:
        return self.store


@pytest.mark.parametrize(
    ("request_ttl", "header", "ttl"),
    [
        (None, "", 3600.0),
        (60.0, "", 60.0),
        (None, "max-age=30", 30.0),
        (60.0, "max-age=30", 30.0),
        (20.0, "max-age=30", 20.0),
        (7200.0, "", 7200.0),
    ],
)
async def test_the_shorter_ttl_override_wins(
    request_ttl: float | None, header: str, ttl: float
) -> None:
    store = RecordingStore()
    handler = pipeline(Upstream(), state=StateWithStore(store))
    await collect(
        handler, chat(cache=CacheControl(ttl=request_ttl), headers={CACHE_CONTROL_HEADER: header})
    )
    assert store.ttls == [ttl]


async def test_an_entry_expires_after_its_ttl() -> None:
    upstream = Upstream()
    handler = pipeline(upstream)
    await collect(handler, chat(cache=CacheControl(ttl=0.05)))
    assert hit(await collect(handler, chat()))
    await asyncio.sleep(0.2)
    assert not hit(await collect(handler, chat()))
    assert upstream.calls == 2


# --- the temperature rule --------------------------------------------------------------


@pytest.mark.parametrize(
    ("default", "sent", "allow", "cached"),
    [
        (0.0, None, False, True),
        (None, 0.0, False, True),
        (0.7, 0.0, False, True),
        (None, None, False, False),  # the provider's default samples
        (None, 0.7, False, False),
        (0.7, None, False, False),
        (None, 0.7, True, True),
        (None, None, True, True),
    ],
)
async def test_only_temperature_zero_is_cached_unless_the_route_allows(
    default: float | None, sent: float | None, allow: bool, cached: bool
) -> None:
    route = dataclasses.replace(CHAT, defaults=GenerationParams(temperature=default))
    upstream = Upstream()
    handler = cached_pipeline(upstream, {"chat": CacheConfig(allow_temperature=allow)}, [route])
    for _ in range(2):
        await collect(handler, chat(generation=GenerationParams(temperature=sent)))
    assert upstream.calls == (1 if cached else 2)


# --- what is never stored --------------------------------------------------------------


async def test_a_failed_stream_is_not_stored() -> None:
    upstream = Upstream(fail_at=3)
    handler = pipeline(upstream)
    for _ in range(2):
        with pytest.raises(GatewayError) as caught:
            await collect(handler, chat())
        assert caught.value is upstream.errors[-1]
    assert upstream.calls == 2


async def test_a_stream_without_finish_is_not_stored() -> None:
    upstream = Upstream(CHAT_EVENTS[:-1])
    handler = pipeline(upstream)
    await collect(handler, chat())
    assert not hit(await collect(handler, chat()))
    assert upstream.calls == 2


async def test_a_stream_left_early_is_not_stored() -> None:
    upstream = Upstream()
    handler = pipeline(upstream)
    stream = handler(chat())
    assert isinstance(await anext(stream), Start)
    await stream.aclose()
    await until(lambda: upstream.abandoned == 1)
    assert not hit(await collect(handler, chat()))


async def test_a_cancelled_stream_is_not_stored() -> None:
    gate = asyncio.Event()
    upstream = Upstream(gate=gate)
    handler = pipeline(upstream)
    reader = Reader(handler, chat())
    await until(lambda: len(reader.events) == 1)
    reader.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader.task
    assert upstream.abandoned == 1
    gate.set()
    assert not hit(await collect(handler, chat()))


# --- single flight ---------------------------------------------------------------------


class Reader:
    """Reads one call's stream in a task, keeping the events so far."""

    def __init__(self, handler: Handler, call: Call) -> None:
        self.events: list[Event] = []
        self.task = asyncio.create_task(self._read(handler, call))

    async def _read(self, handler: Handler, call: Call) -> None:
        async for event in handler(call):
            self.events.append(event)


async def until(condition: Callable[[], bool]) -> None:
    """Let other tasks run until `condition` holds (within 5 s)."""
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 (the code under test signals nothing)
            await asyncio.sleep(0)


SINGLE_FLIGHT = CacheConfig(single_flight=True)


async def test_concurrent_identical_misses_share_one_upstream_call() -> None:
    gate = asyncio.Event()
    upstream = Upstream(gate=gate)
    handler = pipeline(upstream, SINGLE_FLIGHT)
    readers = [Reader(handler, chat()) for _ in range(5)]
    await until(lambda: all(reader.events for reader in readers))
    gate.set()
    await asyncio.gather(*(reader.task for reader in readers))
    assert upstream.calls == 1
    assert [reader.events for reader in readers] == [list(CHAT_EVENTS)] * 5
    assert hit(await collect(handler, chat()))


async def test_a_late_follower_gets_every_event_from_the_start() -> None:
    gate = asyncio.Event()
    upstream = Upstream(COMPLETE_EVENTS, gate=gate, pause_at=3)
    handler = pipeline(upstream, SINGLE_FLIGHT)
    leader = Reader(handler, complete())
    await until(lambda: len(leader.events) == 3)
    follower = Reader(handler, complete())
    await until(lambda: len(follower.events) == 3)
    gate.set()
    await asyncio.gather(leader.task, follower.task)
    assert upstream.calls == 1
    assert leader.events == follower.events == list(COMPLETE_EVENTS)


async def test_a_cancelled_leader_does_not_cancel_the_followers_call() -> None:
    gate = asyncio.Event()
    upstream = Upstream(gate=gate)
    handler = pipeline(upstream, SINGLE_FLIGHT)
    leader = Reader(handler, chat())
    followers = [Reader(handler, chat()) for _ in range(2)]
    await until(lambda: all(reader.events for reader in [leader, *followers]))
    leader.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader.task
    gate.set()
    await asyncio.gather(*(follower.task for follower in followers))
    assert [follower.events for follower in followers] == [list(CHAT_EVENTS)] * 2
    assert (upstream.calls, upstream.completed, upstream.abandoned) == (1, 1, 0)
    assert hit(await collect(handler, chat()))


async def test_the_upstream_call_stops_when_no_caller_waits() -> None:
    gate = asyncio.Event()
    upstream = Upstream(gate=gate)
    handler = pipeline(upstream, SINGLE_FLIGHT)
    readers = [Reader(handler, chat()) for _ in range(2)]
    await until(lambda: all(reader.events for reader in readers))
    for reader in readers:
        reader.task.cancel()
    await asyncio.gather(*(reader.task for reader in readers), return_exceptions=True)
    await until(lambda: upstream.abandoned == 1)
    gate.set()
    # Nothing stored, and the next identical miss makes a call of its own.
    assert not hit(await collect(handler, chat()))
    assert (upstream.calls, upstream.completed) == (2, 1)


async def test_a_failed_flight_fails_every_caller_with_the_same_error() -> None:
    gate = asyncio.Event()
    upstream = Upstream(gate=gate, fail_at=3)
    handler = pipeline(upstream, SINGLE_FLIGHT)
    readers = [Reader(handler, chat()) for _ in range(3)]
    await until(lambda: all(reader.events for reader in readers))
    gate.set()
    results = await asyncio.gather(*(reader.task for reader in readers), return_exceptions=True)
    assert upstream.calls == 1
    assert results == [upstream.errors[0]] * 3
    assert [reader.events for reader in readers] == [list(CHAT_EVENTS[:3])] * 3
    # Nothing stored: the next call goes upstream again.
    with pytest.raises(GatewayError):
        await collect(handler, chat())
    assert upstream.calls == 2


@pytest.mark.parametrize(
    "control",
    [CacheControl(bypass=True), CacheControl(no_store=True)],
    ids=["bypass", "no_store"],
)
async def test_calls_that_skip_lookup_or_store_fly_alone(control: CacheControl) -> None:
    gate = asyncio.Event()
    upstream = Upstream(gate=gate)
    handler = pipeline(upstream, SINGLE_FLIGHT)
    readers = [Reader(handler, chat()), Reader(handler, chat(cache=control))]
    await until(lambda: all(reader.events for reader in readers))
    gate.set()
    await asyncio.gather(*(reader.task for reader in readers))
    assert upstream.calls == 2


# --- shared state failing --------------------------------------------------------------

# What a backend's error might say; it must never reach a log.
SECRET_URL = "redis://:hunter2-secret@10.0.0.1:6379/0"


class DownStore:
    def __init__(self, get_fails: bool) -> None:
        self.get_fails = get_fails
        self.sets = 0

    async def get(self, key: str, *, within: StateWait | None = None) -> bytes | None:
        if self.get_fails:
            raise StateUnavailableError(f"timed out talking to {SECRET_URL}")
        return None

    async def set(
        self, key: str, value: bytes, ttl: float, *, within: StateWait | None = None
    ) -> None:
        self.sets += 1
        raise StateUnavailableError(f"timed out talking to {SECRET_URL}")


async def test_fail_open_calls_upstream_and_stores_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = DownStore(get_fails=True)
    upstream = Upstream()
    handler = pipeline(upstream, CacheConfig(failure_policy="fail_open"), StateWithStore(store))
    with caplog.at_level(logging.WARNING, "sluice.pipeline.cache"):
        assert await collect(handler, chat()) == list(CHAT_EVENTS)
    assert (upstream.calls, store.sets) == (1, 0)
    assert "'chat'" in caplog.text
    assert "hunter2" not in caplog.text


async def test_fail_closed_refuses_without_calling_upstream() -> None:
    upstream = Upstream()
    handler = pipeline(
        upstream, CacheConfig(failure_policy="fail_closed"), StateWithStore(DownStore(True))
    )
    with pytest.raises(GatewayError) as caught:
        await collect(handler, chat())
    assert (caught.value.status, caught.value.reason) == (Status.UNAVAILABLE, "STATE_UNAVAILABLE")
    assert caught.value.metadata == {"feature": "cache"}
    assert upstream.calls == 0


@pytest.mark.parametrize("policy", ["fail_open", "fail_closed"])
async def test_a_failed_store_never_fails_the_call(
    policy: FailurePolicy, caplog: pytest.LogCaptureFixture
) -> None:
    store = DownStore(get_fails=False)
    handler = pipeline(Upstream(), CacheConfig(failure_policy=policy), StateWithStore(store))
    with caplog.at_level(logging.WARNING, "sluice.pipeline.cache"):
        assert await collect(handler, chat()) == list(CHAT_EVENTS)
    assert store.sets == 1
    assert "not stored" in caplog.text
    assert "hunter2" not in caplog.text


# --- the stored format -----------------------------------------------------------------

EVERY_EVENT: tuple[Event, ...] = (
    Start("id-ü", "m", "p", "r"),
    Start("id", "m", cache_hit=True),
    TextDelta(""),
    TextDelta('a "quoted"\nline ✓'),
    ReasoningDelta("why"),
    ToolCallDelta(2),
    ToolCallDelta(0, "c", "n", "{}"),
    Embeddings(()),
    Embeddings(((0.1, 1 / 3, -0.0, 1e-320),)),
    Usage(),
    Usage(1, 2, 3, 4, reported=False),
    *(Finish(reason, "native") for reason in FinishReason),
    Finish(FinishReason.STOP),
)


@pytest.mark.parametrize("event", EVERY_EVENT, ids=repr)
def test_every_event_round_trips(event: Event) -> None:
    (decoded,) = decode_events(encode_events([event]))
    assert decoded == event
    assert type(decoded) is type(event)


def test_a_stream_round_trips_compactly() -> None:
    data = encode_events(CHAT_EVENTS)
    assert decode_events(data) == CHAT_EVENTS
    assert b" " not in data.replace(b'"thinking"', b"")
    assert data.startswith(b'{"v":1,"events":[["start",{"id":"resp-1"')


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        b'{"v":2,"events":[]}',
        b'{"events":[]}',
        b'{"v":1,"events":[["text"]]}',
        b'{"v":1,"events":[["text",{"words":"x"}]]}',
        b'{"v":1,"events":[["finish",{"reason":"bored"}]]}',
        b"\xff",
    ],
)
def test_anything_else_is_not_an_entry(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"."):
        decode_events(data)
