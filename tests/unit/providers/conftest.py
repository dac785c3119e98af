"""The HTTP pool adapters under test send through, closed after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sluice.providers.http import HttpClientPool


@pytest.fixture
async def pool() -> AsyncIterator[HttpClientPool]:
    pool = HttpClientPool()
    yield pool
    await pool.aclose()
