"""Response caching stage: answer a repeated call from its route's cache.

A route with `cache:` keeps whole answers, as streams, under the key of
cache_key.py. A hit replays the stored events, the start event saying
`cache_hit`, and its deltas coalesced (all of them are waiting) unless the
route says `stream: {coalesce: false}`. A miss passes the upstream's events on as they arrive and
stores them only once the stream ended cleanly after its `Finish`: a failed,
cancelled or unfinished stream is never stored. Storing happens before the
stream closes: with settling limits, it costs the caller at most one
`state.timeout` (the call's `state_after`), as the lookup and admission
share `state_before`.

Which calls take part:
- Chat and completion calls only when their effective temperature (after
  route defaults) is exactly 0, or when the route says `allow_temperature`;
  an unset temperature means the provider's default, which samples, so such
  calls are not cached either. Embeddings are deterministic: always cached.
- Per request, `request.cache` and the `sluice-cache-control` metadata
  (`no-cache` = bypass, `no-store`, `max-age=<whole seconds>`; parsed in
  cache_key.py) are merged: either one turns bypass or no-store on, and the
  shorter ttl wins. `max-age=0` keeps nothing, so it means no-store.
- Bypass skips the lookup; the fresh answer is still stored unless no-store.

Single flight (`single_flight: true`): concurrent identical misses that may
store share one upstream call (resilience/single_flight.py): each caller
receives every event from the start, however late it joined, and the same
error if the call fails; the call is cancelled only when no caller remains.
It is per replica: two replicas may each make the call once.

Semantic cache (`cache.semantic`, semantic_cache.py): on an exact miss of a
call that may read the cache (not bypassed, `CacheControl.semantic` not
false), its text is embedded and the nearest stored question of its
partition is looked up; one at or above the threshold whose answer is still
in the response cache is replayed like an exact hit, its `Start` also
carrying `cache_similarity`. A miss's answer, once stored, is indexed under
its exact key and shared with the other replicas, unless it holds tool
calls (an action is not reused for a question that merely resembles). A
failed embedding is a miss (counted as a semantic `error`); so is a
semantic lookup whose store fails.

Shared state failing (`StateUnavailableError`) on lookup follows the route's
`failure_policy`: `fail_open` calls the upstream and stores nothing,
`fail_closed` refuses with UNAVAILABLE. Failing to store never fails a call.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncGenerator, Mapping

from sluice.coalesce import coalesce
from sluice.config.schema import CacheConfig
from sluice.domain import CacheControl, EmbeddingRequest, Event, Finish, Start, ToolCallDelta
from sluice.errors import state_unavailable
from sluice.pipeline.cache_key import cache_control, cache_key
from sluice.pipeline.call import Call, EventStream, Next, Owning
from sluice.pipeline.semantic_cache import Probe, SemanticCache
from sluice.pipeline.semantic_key import semantic_query
from sluice.resilience.single_flight import SingleFlight
from sluice.state.answers import decode_events, encode_events
from sluice.state.base import ResponseCacheStore, SharedState, StateUnavailableError

logger = logging.getLogger(__name__)


class ResponseCaching:
    """The cache stage. `caches` maps a route name to its cache config (routes
    without one are not cached); `state` and `caches` may be swapped on
    reload. `semantic` maps a route with `cache.semantic` to its semantic cache."""

    def __init__(
        self,
        caches: Mapping[str, CacheConfig],
        state: SharedState,
        semantic: Mapping[str, SemanticCache] | None = None,
    ) -> None:
        self.caches = caches
        self.state = state
        self.semantic = semantic or {}
        self._flights: SingleFlight[Event] = SingleFlight()

    def __call__(self, call: Call, next: Next) -> EventStream:
        plan = self._plan(call)
        if plan is None:
            return next(call)
        return self._cached(call, next, *plan)

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
        return config, control, _Entry(store, cache_key(call), ttl, route.name)

    async def _cached(
        self, call: Call, next: Next, config: CacheConfig, control: CacheControl, entry: _Entry
    ) -> AsyncGenerator[Event, None]:
        may_store = not control.no_store
        if not control.bypass:
            replay, entry, answered = await self._read(call, config, control, entry)
            may_store = may_store and answered
            if replay is not None:
                # The whole answer is waiting: its deltas leave coalesced.
                for event in coalesce(replay) if call.route and call.route.coalesce else replay:
                    yield event
                return
        if not may_store:
            source = next(call)
        elif config.single_flight and not control.bypass:
            # The flight outlives this caller: it owns a Next of its own.
            fork = next.fork()
            source = self._flights.join(
                entry.key, lambda: Owning(_recorded(call, fork, entry), fork)
            )
        else:
            source = _recorded(call, next, entry)
        async for event in source:
            yield event

    async def _read(
        self, call: Call, config: CacheConfig, control: CacheControl, entry: _Entry
    ) -> tuple[list[Event] | None, _Entry, bool]:
        """What a hit replays (exact, else semantic; None on a miss), where a
        miss's answer goes (with the probe that indexes it), and whether the
        store answered."""
        try:
            replay = await _lookup(call, entry)
        except StateUnavailableError:
            if config.failure_policy == "fail_closed":
                raise state_unavailable("cache") from None
            logger.warning("response cache of route %r unavailable: not used", entry.route)
            return None, entry, False
        semantic = self.semantic.get(entry.route)
        if replay is None and semantic is not None and control.semantic is not False:
            replay, probe = await _semantic_lookup(call, entry, semantic)
            entry = dataclasses.replace(entry, probe=probe, semantic=semantic)
        return replay, entry, True


@dataclasses.dataclass(frozen=True, slots=True)
class _Entry:
    """Where a miss's answer goes."""

    store: ResponseCacheStore
    key: str
    ttl: float
    route: str  # for logs
    # The call's embedded text, indexed once its answer is stored.
    probe: Probe | None = None
    semantic: SemanticCache | None = None


async def _lookup(call: Call, entry: _Entry) -> list[Event] | None:
    """The stored answer as a hit replays it; None on a miss. Raises
    StateUnavailableError when the store does not answer."""
    with call.trace.cache_lookup(entry.route) as span:
        try:
            cached = await entry.store.get(entry.key, within=call.state_before)
        except StateUnavailableError:
            span.cache_result(entry.route, "error")
            raise
        replay = _replay(cached, entry.route) if cached is not None else None
        span.cache_result(entry.route, "miss" if replay is None else "hit")
        return replay


async def _semantic_lookup(
    call: Call, entry: _Entry, semantic: SemanticCache
) -> tuple[list[Event] | None, Probe | None]:
    """The replay of a semantic hit, if any, and the call's probe to index
    its own answer with (None when the call has no query or its text could
    not be embedded)."""
    query = semantic_query(call, semantic.config)
    if query is None:
        return None, None
    with call.trace.semantic_lookup(entry.route) as span:
        probe = await semantic.probe(call, query)
        if probe is None:
            span.cache_result(entry.route, "error", kind="semantic")
            return None, None
        replay = None
        if (match := probe.match) is not None:
            try:
                cached = await entry.store.get(match.key, within=call.state_before)
            except StateUnavailableError:
                span.cache_result(entry.route, "error", kind="semantic")
                return None, None
            replay = _replay(cached, entry.route, match.similarity) if cached else None
            if replay is None:  # expired or evicted from the response cache
                semantic.index.remove(match.key)
        span.cache_result(entry.route, "miss" if replay is None else "hit", kind="semantic")
        return replay, probe


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
    answered_by = call.answered_by
    fallback = answered_by is not None and answered_by is not call.targets[0]
    # A fallback's answer is its own variant's: kept under that variant's key.
    key = cache_key(call, answered_by) if fallback else entry.key
    try:
        with call.trace.cache_storing(entry.route):
            await entry.store.set(key, encode_events(events), entry.ttl, within=call.state_after)
    except StateUnavailableError as error:
        # The error's text may name the backend's URL: log its type only.
        logger.warning(
            "response cache of route %r: answer not stored (%s)",
            entry.route,
            type(error).__name__,
        )
        return
    tool_calls = any(isinstance(event, ToolCallDelta) for event in events)
    if entry.probe is not None and entry.semantic is not None and not tool_calls:
        await entry.semantic.remember(entry.probe, entry.key, entry.ttl, within=call.state_after)


def _cacheable(call: Call, config: CacheConfig) -> bool:
    if isinstance(call.request, EmbeddingRequest) or config.allow_temperature:
        return True
    return call.request.generation.temperature == 0


def _replay(data: bytes, route: str, similarity: float | None = None) -> list[Event] | None:
    """A stored answer as a hit replays it (a semantic hit with its
    similarity); None if it cannot be read."""
    try:
        events = decode_events(data)
    except ValueError:
        logger.warning("response cache of route %r: unreadable entry ignored", route)
        return None
    return [
        dataclasses.replace(event, cache_hit=True, cache_similarity=similarity)
        if isinstance(event, Start)
        else event
        for event in events
    ]
