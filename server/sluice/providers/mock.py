"""The built-in mock provider: a deterministic reply streamed word by word,
with no network. It backs the embedded default config, so Sluice runs
offline, and gives tests and benchmarks an upstream with no I/O.

Tokens are whitespace-separated words (the mock has no tokenizer); usage
counts them the same way.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import struct
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from sluice.domain import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    Embeddings,
    Event,
    Finish,
    FinishReason,
    Operation,
    Request,
    Start,
    TextDelta,
    Usage,
)
from sluice.providers.base import Adapter, ExchangeObserver
from sluice.providers.bounds import DEFAULT_BOUNDS, BodyBounds
from sluice.providers.settings import ProviderSettings

if TYPE_CHECKING:
    from sluice.providers.http import HttpClientPool

DEFAULT_REPLY = (
    "Hello from Sluice! This reply comes from the built-in mock provider, "
    "streamed one word at a time."
)
_WORD = re.compile(r"\s*\S+")


class MockSettings(ProviderSettings):
    operations = frozenset(Operation)
    accepts_images = False  # it replies with words; it would ignore an image

    provider: Literal["mock"]
    name: str = "mock"
    # The reply to every chat and completion call.
    reply: str = Field(default=DEFAULT_REPLY, min_length=1)
    # Seconds between streamed words.
    chunk_delay: float = Field(default=0.0, ge=0.0, le=60.0)
    # Length of mock embedding vectors when the request does not say.
    dimensions: int = Field(default=8, ge=1, le=4096)

    def create_adapter(
        self,
        pool: HttpClientPool,
        *,
        connect_timeout: float | None = None,
        bounds: BodyBounds = DEFAULT_BOUNDS,
    ) -> Adapter:
        """No network: neither the pool, a connect timeout nor body bounds have a part."""
        return MockAdapter(self)


class MockAdapter(Adapter):
    provider = "mock"

    def __init__(self, settings: MockSettings) -> None:
        self._settings = settings
        self._words = tuple(_WORD.findall(settings.reply))

    async def stream(
        self,
        request: Request,
        *,
        observer: ExchangeObserver | None = None,  # no HTTP exchange to report
        coalesce_within: float | None = None,  # words are made as they are read: none waits
    ) -> AsyncGenerator[Event, None]:
        yield Start(id=_response_id(request), model=self._settings.name)
        if isinstance(request, EmbeddingRequest):
            size = request.dimensions or self._settings.dimensions
            yield Embeddings(tuple(_vector(text, size) for text in request.inputs))
            yield Usage(input_tokens=sum(_count_words(text) for text in request.inputs))
            yield Finish(FinishReason.STOP, "stop")
            return
        limit = request.generation.max_tokens
        words = self._words if limit is None else self._words[:limit]
        for word in words:
            if self._settings.chunk_delay:
                await asyncio.sleep(self._settings.chunk_delay)
            yield TextDelta(word)
        yield Usage(input_tokens=_prompt_words(request), output_tokens=len(words))
        truncated = len(words) < len(self._words)
        yield Finish(
            FinishReason.LENGTH if truncated else FinishReason.STOP,
            "length" if truncated else "stop",
        )


def _prompt_words(request: ChatRequest | CompletionRequest) -> int:
    if isinstance(request, CompletionRequest):
        return _count_words(request.prompt)
    return sum(_count_words(message.text) for message in request.messages)


def _count_words(text: str) -> int:
    return len(text.split())


def _response_id(request: Request) -> str:
    return "mock-" + hashlib.sha256(repr(request).encode()).hexdigest()[:24]


def _vector(text: str, size: int) -> tuple[float, ...]:
    """A deterministic unit-free vector in [-1, 1) derived from the text."""
    seed = hashlib.sha256(text.encode()).digest()
    raw = b"".join(
        hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(-(-size * 4 // 32))
    )
    return tuple(v / 2**31 for v in struct.unpack(f">{size}i", raw[: size * 4]))
