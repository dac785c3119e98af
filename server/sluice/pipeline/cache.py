"""Response caching stage: answer a repeated call from its route's cache.

A route with `cache:` keeps whole answers, as streams, under the key of
cache_key.py. A hit replays the stored events one by one, the start event
saying `cache_hit`. A miss passes the upstream's events on as they arrive and
stores them only once the stream ended cleanly after its `Finish`: a failed,
cancelled or unfinished stream is never stored. Storing happens before the
stream closes, so it costs the caller at most the state backend's timeout.

Which calls take part:
- Chat and completion calls only when their effective temperature (after
  route defaults) is exactly 0, or when the route says `allow_temperature`;
  an unset temperature means the provider's default, which samples, so such
  calls are not cached either. Embeddings are deterministic: always cached.
- Per request, `request.cache` and the `sluice-cache-control` metadata
  (`no-cache` = bypass, `no-store`, `max-age=<whole seconds>`; comma-separated,
  case-insensitive, unknown directives ignored) are merged: either one turns
  bypass or no-store on, and the shorter ttl wins. `max-age=0` keeps nothing,
  so it means no-store.
- Bypass skips the lookup; the fresh answer is still stored unless no-store.

Single flight (`single_flight: true`): concurrent identical misses that may
store share one upstream call, run in its own task; each caller receives every
event from the start, however late it joined, and the same error if the call
fails. The task outlives any one caller and is cancelled only when no caller
remains. It is per replica: two replicas may each make the call once.

Shared state failing (`StateUnavailableError`) on lookup follows the route's
`failure_policy`: `fail_open` calls the upstream and stores nothing,
`fail_closed` refuses with UNAVAILABLE. Failing to store never fails a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

from opentelemetry.trace import Span

from sluice.config.schema import CacheConfig
from sluice.domain import (
    CacheControl,
    EmbeddingRequest,
    Embeddings,
    Event,
    Finish,
    FinishReason,
    ReasoningDelta,
    Start,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from sluice.errors import invalid_argument, state_unavailable
from sluice.pipeline.cache_key import cache_key
from sluice.pipeline.call import Call, Next
from sluice.state.base import ResponseCacheStore, SharedState, StateUnavailableError
from sluice.telemetry.semconv import CACHE_RESULT, ROUTE

logger = logging.getLogger(__name__)

CACHE_CONTROL_HEADER = "sluice-cache-control"


class ResponseCaching:
    """The cache stage. `caches` maps a route name to its cache config (routes
    without one are not cached); `state` and `caches` may be swapped on
    reload."""

    def __init__(self, caches: Mapping[str, CacheConfig], state: SharedState) -> None:
        self.caches = caches
        self.state = state
        self._flights: dict[str, _Flight] = {}

    async def __call__(self, call: Call, next: Next) -> AsyncGenerator[Event, None]:
        plan = self._plan(call)
        if plan is None:
            async for event in next(call):
                yield event
            return
        config, control, entry = plan
        may_store = not control.no_store
        if not control.bypass:
            with call.trace.span("sluice.cache.lookup", {ROUTE: entry.route}) as span:
                try:
                    cached = await entry.store.get(entry.key)
                except StateUnavailableError:
                    _lookup_result(call, entry, span, "error")
                    if config.failure_policy == "fail_closed":
                        raise state_unavailable("cache") from None
                    logger.warning("response cache of route %r unavailable: not used", entry.route)
                    replay, may_store = None, False
                else:
                    replay = _replay(cached, entry.route) if cached is not None else None
                    _lookup_result(call, entry, span, "miss" if replay is None else "hit")
            if replay is not None:
                for event in replay:
                    yield event
                return
        if not may_store:
            async for event in next(call):
                yield event
            return
        shared = config.single_flight and not control.bypass
        source = self._shared(call, next, entry) if shared else _recorded(call, next, entry)
        # Closed at once when our caller leaves, so a flight knows who waits.
        async with contextlib.aclosing(source):
            async for event in source:
                yield event

    def _plan(self, call: Call) -> tuple[CacheConfig, CacheControl, _Entry] | None:
        """The route's cache config, the call's control and where its answer
        goes; None when the call is not cached."""
        route = call.route
        config = self.caches.get(route.name) if route is not None else None
        if route is None or config is None:
            return None
        control = cache_control(call)  # a malformed header is an error on every cached route
        if not _cacheable(call, config):
            return None
        ttl = config.ttl if control.ttl is None else control.ttl
        store = self.state.cache(route.name, config.max_entries)
        return config, control, _Entry(store, cache_key(call, config.namespace), ttl, route.name)

    async def _shared(self, call: Call, next: Next, entry: _Entry) -> AsyncGenerator[Event, None]:
        flight = self._flights.get(entry.key)
        if flight is None:
            flight = self._flights[entry.key] = _Flight()
            flight.task = asyncio.create_task(self._fly(flight, call, next, entry))
        flight.waiters += 1
        try:
            sent = 0
            while True:
                if sent < len(flight.events):
                    yield flight.events[sent]
                    sent += 1
                elif flight.error is not None:
                    raise flight.error
                elif flight.ended:
                    return
                else:
                    await flight.changed.wait()
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.ended:
                # Nobody wants the answer: stop the upstream call, and let the
                # next identical miss start a flight of its own.
                self._land(flight, entry.key)
                flight.task.cancel()

    async def _fly(self, flight: _Flight, call: Call, next: Next, entry: _Entry) -> None:
        try:
            async for event in _recorded(call, next, entry):
                flight.push(event)
        except BaseException as error:
            flight.end(error)
            if not isinstance(error, Exception):
                raise  # cancelled: whoever still waits ends the same way
        else:
            flight.end()
        finally:
            self._land(flight, entry.key)

    def _land(self, flight: _Flight, key: str) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]


@dataclasses.dataclass(frozen=True, slots=True)
class _Entry:
    """Where a miss's answer goes."""

    store: ResponseCacheStore
    key: str
    ttl: float
    route: str  # for logs


async def _recorded(call: Call, next: Next, entry: _Entry) -> AsyncGenerator[Event, None]:
    """The upstream's events, stored once the stream ended cleanly."""
    events: list[Event] = []
    async for event in next(call):
        events.append(event)
        yield event
    if not events or not isinstance(events[-1], Finish):
        return
    # The answer is stored, not this call's attempts: a replay makes none.
    events[-1] = dataclasses.replace(events[-1], attempts=())
    try:
        with call.trace.span("sluice.cache.store", {ROUTE: entry.route}):
            await entry.store.set(entry.key, encode_events(events), entry.ttl)
    except StateUnavailableError as error:
        # The error's text may name the backend's URL: log its type only.
        logger.warning(
            "response cache of route %r: answer not stored (%s)",
            entry.route,
            type(error).__name__,
        )


class _Flight:
    """One upstream call shared by concurrent identical misses."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.ended = False
        self.error: BaseException | None = None
        self.waiters = 0
        self.changed = asyncio.Event()  # replaced on every change
        self.task: asyncio.Task[None]

    def push(self, event: Event) -> None:
        self.events.append(event)
        self._wake()

    def end(self, error: BaseException | None = None) -> None:
        self.ended, self.error = True, error
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


def _lookup_result(call: Call, entry: _Entry, span: Span, result: str) -> None:
    span.set_attribute(CACHE_RESULT, result)
    call.trace.telemetry.instruments.cache_lookups.add(
        1, {ROUTE: entry.route, CACHE_RESULT: result}
    )


def _cacheable(call: Call, config: CacheConfig) -> bool:
    if isinstance(call.request, EmbeddingRequest) or config.allow_temperature:
        return True
    return call.request.generation.temperature == 0


def _replay(data: bytes, route: str) -> list[Event] | None:
    """A stored answer as a hit replays it; None if it cannot be read."""
    try:
        events = decode_events(data)
    except ValueError:
        logger.warning("response cache of route %r: unreadable entry ignored", route)
        return None
    return [
        dataclasses.replace(event, cache_hit=True) if isinstance(event, Start) else event
        for event in events
    ]


# --- per-request control ---------------------------------------------------------

_SECONDS = re.compile(r"[0-9]+")


def cache_control(call: Call) -> CacheControl:
    """The call's cache control: its request's merged with its metadata's."""
    header = parse_cache_control(call.headers.get(CACHE_CONTROL_HEADER, ""))
    if isinstance(call.request, EmbeddingRequest):
        return header
    request = call.request.cache
    ttls = [ttl for ttl in (request.ttl, header.ttl) if ttl is not None]
    return CacheControl(
        bypass=request.bypass or header.bypass,
        no_store=request.no_store or header.no_store,
        ttl=min(ttls) if ttls else None,
    )


def parse_cache_control(value: str) -> CacheControl:
    """`sluice-cache-control` metadata, e.g. `no-cache, max-age=60`."""
    bypass = no_store = False
    ttls: list[float] = []
    for directive in value.split(","):
        name, _, argument = directive.partition("=")
        name = name.strip().lower()
        if name == "no-cache":
            bypass = True
        elif name == "no-store":
            no_store = True
        elif name == "max-age":
            seconds = argument.strip()
            if not _SECONDS.fullmatch(seconds):
                raise invalid_argument(
                    CACHE_CONTROL_HEADER,
                    f"{CACHE_CONTROL_HEADER}: max-age must be whole seconds, got {seconds[:32]!r}",
                )
            ttls.append(float(seconds))
    ttl = min(ttls) if ttls else None
    if ttl == 0:
        return CacheControl(bypass=bypass, no_store=True)
    return CacheControl(bypass=bypass, no_store=no_store, ttl=ttl)


# --- stored answers ----------------------------------------------------------------

# Bump when the stored format changes: entries of another version are misses.
ENTRY_VERSION = 1
_TAGS: dict[type[Any], str] = {
    Start: "start",
    TextDelta: "text",
    ReasoningDelta: "reasoning",
    ToolCallDelta: "tool_call",
    Embeddings: "embeddings",
    Usage: "usage",
    Finish: "finish",
}
_TYPES = {tag: cls for cls, tag in _TAGS.items()}


def encode_events(events: Sequence[Event]) -> bytes:
    """`{"v":1,"events":[[tag,{field:value}],...]}`, fields at their default
    left out."""
    return json.dumps(
        {"v": ENTRY_VERSION, "events": [[_TAGS[type(e)], _changed_fields(e)] for e in events]},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


def _changed_fields(event: Event) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(event):
        value = getattr(event, field.name)
        if value != field.default:
            fields[field.name] = value.value if isinstance(value, FinishReason) else value
    return fields


def decode_events(data: bytes) -> tuple[Event, ...]:
    """The events `encode_events` stored; ValueError if `data` is not such an
    entry of this version."""
    try:
        entry = json.loads(data)
        if entry["v"] != ENTRY_VERSION:
            raise ValueError(f"cache entry version {entry['v']!r}")
        return tuple(_event(tag, fields) for tag, fields in entry["events"])
    except (KeyError, TypeError) as error:
        raise ValueError(f"malformed cache entry: {error!r}") from None


def _event(tag: str, fields: dict[str, Any]) -> Event:
    if tag == "finish":
        fields["reason"] = FinishReason(fields["reason"])
    elif tag == "embeddings":
        fields["vectors"] = tuple(tuple(vector) for vector in fields["vectors"])
    event: Event = _TYPES[tag](**fields)
    return event
