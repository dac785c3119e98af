"""Keeps this replica's semantic indexes in step with the shared state's
log of entries (`SharedState.semantic`): entries this replica stores are
shared; those any replica stored are learned, the ones already stored when a
route's index is first followed (a replica starting rebuilds its index) and
each one shared from then on (within about a second). In memory there is
nothing to learn: the index is the replica's own.

Each index stays bounded by its `max_entries`, least recently used first;
the shared log keeps each route's newest `max_entries`. A lost backend is
followed again, and every route's log read again, after a pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from sluice.semantic_index import SemanticEntry, SemanticIndex
from sluice.state.base import SemanticEntryStore, StateUnavailableError, StateWait

logger = logging.getLogger(__name__)

_RETRY_SECONDS = 1.0


class SemanticSharing:
    def __init__(self, log: SemanticEntryStore) -> None:
        self._log = log
        self._indexes: dict[str, SemanticIndex] = {}
        self._read: set[str] = set()  # routes whose log is in their index
        self._following: asyncio.Task[None] | None = None
        self._reading: set[asyncio.Task[None]] = set()

    def follow(self, indexes: Mapping[str, SemanticIndex]) -> None:
        """Keep these routes' indexes (the serving config's) in step. Called
        on the event loop, by each gateway as it is built."""
        self._indexes = dict(indexes)
        if self._following is None:
            self._following = asyncio.get_running_loop().create_task(self._follow())
            return
        for route in self._indexes.keys() - self._read:
            task = asyncio.get_running_loop().create_task(self._read_new(route))
            self._reading.add(task)
            task.add_done_callback(self._reading.discard)

    async def share(
        self, entry: SemanticEntry, ttl: float, *, within: StateWait | None = None
    ) -> None:
        """Store `entry` for every replica. Raises StateUnavailableError."""
        index = self._indexes.get(entry.route)
        if index is not None:
            await self._log.share(entry, ttl, index.max_entries, within=within)

    def _learn(self, entry: SemanticEntry) -> None:
        index = self._indexes.get(entry.route)
        if index is not None:
            index.add(entry.partition, entry.key, entry.vector)

    async def _follow(self) -> None:
        while True:
            self._read.clear()  # entries may have been missed: read again
            try:
                await self._log.follow(self._learn, self._read_logs)
                return  # nothing to follow
            except StateUnavailableError as error:
                logger.warning(
                    "semantic cache: shared entries not followed (%s), again in %.0fs",
                    error,
                    _RETRY_SECONDS,
                )
            await asyncio.sleep(_RETRY_SECONDS)

    async def _read_logs(self) -> None:
        for route in list(self._indexes):
            await self._read_log(route)

    async def _read_new(self, route: str) -> None:
        """A route new to this replica's config: its log read (after a
        failure, read when the log is followed again)."""
        with contextlib.suppress(StateUnavailableError):
            await self._read_log(route)

    async def _read_log(self, route: str) -> None:
        index = self._indexes.get(route)
        if index is None or route in self._read:
            return
        self._read.add(route)
        try:
            entries = await self._log.entries(route, index.max_entries)
        except StateUnavailableError:
            self._read.discard(route)
            raise
        for entry in entries:  # oldest first: the newest end most recently used
            index.add(entry.partition, entry.key, entry.vector)

    async def aclose(self) -> None:
        for task in (self._following, *self._reading):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
