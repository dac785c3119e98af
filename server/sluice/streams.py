"""The one shape of a stream that can be closed early: what pipeline stages
return, and what a single flight runs. An async generator is one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import Protocol, TypeVar

_T_co = TypeVar("_T_co", covariant=True)


class Stream(Protocol[_T_co]):
    def __aiter__(self) -> AsyncIterator[_T_co]: ...

    def __anext__(self) -> Awaitable[_T_co]: ...

    async def aclose(self) -> None: ...
