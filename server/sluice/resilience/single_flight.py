"""Single flight: concurrent identical requests share one producer.

The first `join` for a key starts the producer in a task of its own; every
joiner, however late, receives every item from the first, and the same
error if the producer fails. The task outlives any one joiner and is
cancelled only when no joiner remains; then the next `join` for that key
starts afresh. The flight owns the producer's stream and closes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Generic, TypeVar

from sluice.streams import Stream

_T = TypeVar("_T")


class SingleFlight(Generic[_T]):
    def __init__(self) -> None:
        self._flights: dict[str, _Flight[_T]] = {}

    async def join(self, key: str, produce: Callable[[], Stream[_T]]) -> AsyncGenerator[_T, None]:
        """The items of the flight for `key`, started with `produce` if none
        is in the air."""
        flight = self._flights.get(key)
        if flight is None:
            flight = self._flights[key] = _Flight()
            flight.task = asyncio.create_task(self._fly(flight, key, produce))
        flight.waiters += 1
        try:
            sent = 0
            while True:
                if sent < len(flight.items):
                    yield flight.items[sent]
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
                # Nobody wants the items: stop the producer, and let the next
                # identical request start a flight of its own.
                self._land(flight, key)
                flight.task.cancel()

    async def _fly(self, flight: _Flight[_T], key: str, produce: Callable[[], Stream[_T]]) -> None:
        try:
            async with aclosing(produce()) as items:
                async for item in items:
                    flight.push(item)
        except BaseException as error:
            flight.end(error)
            if not isinstance(error, Exception):
                raise  # cancelled: whoever still waits ends the same way
        else:
            flight.end()
        finally:
            self._land(flight, key)

    def _land(self, flight: _Flight[_T], key: str) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]


class _Flight(Generic[_T]):
    """One producer shared by concurrent identical requests."""

    def __init__(self) -> None:
        self.items: list[_T] = []
        self.ended = False
        self.error: BaseException | None = None
        self.waiters = 0
        self.changed = asyncio.Event()  # replaced on every change
        self.task: asyncio.Task[None]

    def push(self, item: _T) -> None:
        self.items.append(item)
        self._wake()

    def end(self, error: BaseException | None = None) -> None:
        self.ended, self.error = True, error
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()
