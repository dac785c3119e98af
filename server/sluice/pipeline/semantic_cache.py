"""One route's semantic cache: embed a call's text, find the nearest stored
question in its partition (semantic_key.py, semantic_index.py).

The text is embedded by a call to the route's `embeddings_route` through the
gateway's whole pipeline, made as the caller with the call's metadata: the
caller's key must be allowed that route, and its limits, budget, pricing,
tracing and the embeddings route's own cache apply to it as to any call. Any
refusal or failure of that call is a semantic miss, never the call's error.

An answer stored is indexed here and shared with every replica through the
shared state (semantic_sharing.py); failing to share it fails nothing.
"""

from __future__ import annotations

import logging
from contextlib import aclosing
from dataclasses import dataclass

from sluice.config.schema import SemanticCacheConfig
from sluice.domain import EmbeddingRequest, Embeddings
from sluice.errors import GatewayError
from sluice.pipeline.call import Call, Handler
from sluice.pipeline.semantic_key import SemanticQuery
from sluice.semantic_index import Match, SemanticEntry, SemanticIndex, Vector, normalised
from sluice.semantic_sharing import SemanticSharing
from sluice.state.base import StateUnavailableError, StateWait

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Probe:
    """A call's embedded text, and the stored answer it may take."""

    partition: str
    vector: Vector
    match: Match | None  # the nearest entry, when at or above the threshold


class SemanticCache:
    def __init__(
        self,
        route: str,
        config: SemanticCacheConfig,
        index: SemanticIndex,
        sharing: SemanticSharing,
        handle: Handler,
    ) -> None:
        self.route = route
        self.config = config
        self.index = index
        self._sharing = sharing
        self._handle = handle

    async def probe(self, call: Call, query: SemanticQuery) -> Probe | None:
        """`query` embedded and looked up; None when it could not be embedded."""
        vector = await self._embed(call, query.text)
        if vector is None:
            return None
        match = self.index.nearest(query.partition, vector)
        if match is not None and match.similarity < self.config.threshold:
            match = None
        return Probe(query.partition, vector, match)

    async def remember(
        self, probe: Probe, key: str, ttl: float, *, within: StateWait | None = None
    ) -> None:
        """Index the answer stored under `key` as `probe`'s, and share it."""
        self.index.add(probe.partition, key, probe.vector)
        entry = SemanticEntry(self.route, probe.partition, key, probe.vector)
        try:
            await self._sharing.share(entry, ttl, within=within)
        except StateUnavailableError as error:
            logger.warning("semantic cache of route %r: entry not shared (%s)", self.route, error)

    async def _embed(self, call: Call, text: str) -> Vector | None:
        request = EmbeddingRequest(route=self.config.embeddings_route, inputs=(text,))
        embedding = Call(request, call.headers, caller=call.caller, trace=call.trace)
        values: tuple[float, ...] = ()
        try:
            async with aclosing(self._handle(embedding)) as events:
                async for event in events:
                    if isinstance(event, Embeddings) and event.vectors:
                        values = event.vectors[0]
        except GatewayError as error:
            # Its message may quote the upstream: the reason says enough.
            logger.info(
                "semantic cache: embeddings route %r failed (%s): a miss",
                self.config.embeddings_route,
                error.reason,
            )
            return None
        return normalised(values) if values else None
