"""One pooled HTTP client per upstream origin, shared by every route."""

from __future__ import annotations

import httpx

# Long streams are normal for LLMs: `read` bounds the silence between chunks,
# not the whole call.
DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=300.0, write=30.0, pool=10.0)
DEFAULT_LIMITS = httpx.Limits(
    max_connections=1000, max_keepalive_connections=200, keepalive_expiry=60.0
)


class HttpClientPool:
    def __init__(self) -> None:
        self._clients: dict[str, httpx.AsyncClient] = {}

    def client_for(self, base_url: str) -> httpx.AsyncClient:
        origin = str(httpx.URL(base_url).copy_with(path="/", query=None, fragment=None))
        client = self._clients.get(origin)
        if client is None:
            client = httpx.AsyncClient(
                timeout=DEFAULT_TIMEOUT, limits=DEFAULT_LIMITS, follow_redirects=False
            )
            self._clients[origin] = client
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
