"""One Redis operation within a deadline, its failures made one error."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from redis.exceptions import RedisClusterException, RedisError

from sluice.state.unavailable import StateUnavailableError

_T = TypeVar("_T")


async def answer_within(seconds: float, operation: Awaitable[_T]) -> _T:
    """The result of one Redis operation within `seconds`, else
    StateUnavailableError. Its message names only the kind of failure:
    Redis's own may carry the host, and the URL may carry a password."""
    try:
        async with asyncio.timeout(seconds):
            return await operation
    except (RedisError, RedisClusterException, OSError, TimeoutError) as error:
        raise StateUnavailableError(f"Redis is unavailable ({type(error).__name__})") from None
