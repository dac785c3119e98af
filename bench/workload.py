"""The one workload every scenario serves: the same request, the same 50-token
reply, in each system's own wire format.

- gRPC (echo server, Sluice): `start`, 50 `delta`, `usage`, `finish` (a
  gateway that coalesces may put several tokens in one `delta`).
- OpenAI SSE (nginx upstream): a role chunk, 50 content chunks, a finish
  chunk, a usage chunk with empty `choices`, `data: [DONE]` (the shape of
  tests/fixtures/providers/openai_chat_stream.txt).
- Embeddings (the unary pair): one input, one 8-float vector.

The shared-state rows use the same request and reply on routes of their own:
`CACHE_ROUTE` (a response cache; the request sets temperature 0, so every
call is cacheable and all but the first are hits, whose start says
`cache_hit`) and `LIMITS_ROUTE` (limits far above what a run can reach).
`SEMANTIC_ROUTE` adds a semantic cache on `EMBED_ROUTE`: every call's user
text is new (`chat_payloads`), so every call misses the exact cache, but nginx
gives every text the same vector, so all calls after the first are semantic
hits, whose start also carries `cache_similarity`.
The paced rows use `PACED_ROUTE` (and `PACED_DELAY_ROUTE`, with a flush
window), on the paced upstream that spaces the same stream's tokens in time.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

from sluice_client.v1 import gateway_pb2 as pb

CHUNKS = 50
PROMPT = "Benchmark prompt: answer with exactly fifty words, please."
PROMPT_TOKENS = 9
RESPONSE_ID = "chatcmpl-bench0000000000000000000"
CHAT_MODEL = "gpt-4o-mini"
EMBED_MODEL = "text-embedding-3-small"
EMBED_INPUT = "Benchmark input for the embeddings route."
VECTOR = (0.0123, -0.0456, 0.0789, -0.0112, 0.0345, -0.0678, 0.0901, -0.0234)
CHAT_ROUTE = "bench-chat"
EMBED_ROUTE = "bench-embed"
MOCK_ROUTE = "bench-mock"
CACHE_ROUTE = "bench-chat-cache"
LIMITS_ROUTE = "bench-chat-limits"
SEMANTIC_ROUTE = "bench-chat-semantic"
# The same chat on the paced upstream (tokens spaced in time), and with a
# flush window: the gateway may hold a delta up to 20 ms to send more in one.
PACED_ROUTE = "bench-chat-paced"
PACED_DELAY_ROUTE = "bench-chat-paced-delay"
MAX_DELAY_MS = 20
# Routes whose answer is known message for message (nginx's or the paced upstream's).
NGINX_CHAT_ROUTES = (CHAT_ROUTE, CACHE_ROUTE, LIMITS_ROUTE, SEMANTIC_ROUTE)
# Routes whose answers come from Sluice's response cache (the request sets temperature 0).
CACHED_ROUTES = (CACHE_ROUTE, SEMANTIC_ROUTE)
KNOWN_CHAT_ROUTES = (*NGINX_CHAT_ROUTES, PACED_ROUTE, PACED_DELAY_ROUTE)
# The cache of CACHE_ROUTE: concurrent first misses share one upstream call,
# so nginx sees one request however many workers start at once.
CACHE = {"ttl": 3600, "max_entries": 1000, "single_flight": True}
# Any threshold below 1 will do: nginx answers every text with VECTOR (similarity 1).
SEMANTIC_THRESHOLD = 0.9
# The cache of SEMANTIC_ROUTE: the exact one's, and on an exact miss the text
# embedded through EMBED_ROUTE (uncached, so every call makes that nginx call).
SEMANTIC_CACHE = {
    **CACHE,
    "semantic": {"embeddings_route": EMBED_ROUTE, "threshold": SEMANTIC_THRESHOLD},
}
# Limits of LIMITS_ROUTE: every kind checked on every call, none ever reached
# (a run makes well under a million calls of about 60 tokens, 16 at once).
LIMITS = {
    "requests": "1000000000/minute",
    "tokens": "1000000000000/minute",
    "concurrent": 100000,
}
API_KEY = "sk-bench"

_TEXT = (
    "Sluice is a streaming first gateway for large language models and this reply is "
    "exactly fifty words long so that every scenario of the benchmark streams the same "
    "number of chunks whether it comes from the echo server the mock provider or the "
    "nginx upstream that plays OpenAI on loopback"
)
# Tokens as an OpenAI model streams them: every word after the first with its space.
TOKENS: tuple[str, ...] = tuple(
    word if i == 0 else f" {word}" for i, word in enumerate(_TEXT.split())
)
assert len(TOKENS) == CHUNKS, len(TOKENS)
REPLY = "".join(TOKENS)
# Characters of REPLY up to the end of each token: how many tokens a
# coalesced stream has delivered once it delivered so much text.
TOKEN_ENDS: tuple[int, ...] = tuple(
    sum(len(token) for token in TOKENS[: i + 1]) for i in range(CHUNKS)
)

# Proto messages: tag byte of each ChatResponse event (field number << 3 | 2).
TAG_START = 0x0A
TAG_DELTA = 0x12
TAG_USAGE = 0x1A
TAG_FINISH = 0x22
CHAT_MESSAGES = CHUNKS + 3


def chat_request(route: str, prompt: str = PROMPT) -> pb.ChatRequest:
    """The one chat request; on the cached routes with temperature 0 (cacheable)."""
    generation = pb.GenerationConfig(temperature=0.0) if route in CACHED_ROUTES else None
    return pb.ChatRequest(
        route=route,
        messages=[pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text=prompt)])],
        generation=generation,
    )


def chat_payloads(route: str) -> Callable[[], bytes]:
    """Each call's serialized request: always the same one, but on
    SEMANTIC_ROUTE, where the user text is numbered so that no two calls of a
    run (all workers share the counter) have the same exact cache key."""
    if route != SEMANTIC_ROUTE:
        payload = chat_request(route).SerializeToString()
        return lambda: payload
    numbers = itertools.count()
    return lambda: chat_request(route, f"{PROMPT} (question {next(numbers)})").SerializeToString()


def embed_request(route: str) -> pb.EmbedRequest:
    return pb.EmbedRequest(route=route, inputs=[EMBED_INPUT])


def chat_responses(route: str, cache_hit: bool = False) -> list[pb.ChatResponse]:
    """What Sluice answers on an nginx route, message for message (a cache
    hit differs only in `start.cache_hit`, and a semantic one in its
    `start.cache_similarity` too)."""
    start = pb.Start(
        id=RESPONSE_ID,
        model=CHAT_MODEL,
        provider="openai",
        route=route,
        cache_hit=cache_hit,
        variant=f"openai/{CHAT_MODEL}",  # an unnamed target's variant is its label
    )
    return [
        pb.ChatResponse(start=start),
        *(pb.ChatResponse(delta=pb.Delta(text=token)) for token in TOKENS),
        pb.ChatResponse(usage=pb.Usage(input_tokens=PROMPT_TOKENS, output_tokens=CHUNKS)),
        pb.ChatResponse(finish=pb.Finish(reason=pb.FINISH_REASON_STOP, provider_reason="stop")),
    ]


def _framed(message: pb.ChatResponse | pb.EmbedResponse) -> int:
    return 5 + len(message.SerializeToString())  # gRPC's 5-byte length prefix


def chat_minimum_bytes() -> int:
    """The fewest response bytes a good chat stream has: every delta
    coalesced into one, no attempts in the finish (h2load's coarse check)."""
    start, *_, usage, finish = chat_responses(CHAT_ROUTE)
    delta = pb.ChatResponse(delta=pb.Delta(text=REPLY))
    return sum(_framed(message) for message in (start, delta, usage, finish))


def embed_minimum_bytes() -> int:
    """The fewest response bytes a good Embed answer has (a gateway adds fields)."""
    return _framed(embed_response())


def embed_response() -> pb.EmbedResponse:
    return pb.EmbedResponse(
        embeddings=[pb.Embedding(values=VECTOR)],
        usage=pb.Usage(input_tokens=7),
        model=EMBED_MODEL,
    )


_USAGE = {
    "prompt_tokens": PROMPT_TOKENS,
    "completion_tokens": CHUNKS,
    "total_tokens": PROMPT_TOKENS + CHUNKS,
    "completion_tokens_details": {"reasoning_tokens": 0},
}


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def sse_events() -> list[str]:
    """The fixed OpenAI chat stream, one SSE event an item: the role chunk,
    CHUNKS content chunks, the finish and usage chunks, `data: [DONE]`."""

    def chunk(choices: list[Any], **extra: Any) -> str:
        body = {
            "id": RESPONSE_ID,
            "object": "chat.completion.chunk",
            "created": 1727346168,
            "model": CHAT_MODEL,
            "system_fingerprint": "fp_bench",
            "choices": choices,
            **extra,
        }
        return f"data: {_dump(body)}\n\n"

    def choice(delta: dict[str, Any], finish: str | None = None) -> list[Any]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

    events = [chunk(choice({"role": "assistant", "content": "", "refusal": None}))]
    events += [chunk(choice({"content": token})) for token in TOKENS]
    events.append(chunk(choice({}, "stop")))
    events.append(chunk([], usage=_USAGE))
    events.append("data: [DONE]\n\n")
    return events


def sse_body() -> bytes:
    """The fixed OpenAI chat stream nginx serves (and the paced upstream spaces)."""
    return "".join(sse_events()).encode()


def chat_completion_body() -> bytes:
    """The same reply as one (non-streaming) OpenAI chat completion, which
    nginx serves under /unary/v1 for MLflow's non-stream chat row."""
    return _dump(
        {
            "id": RESPONSE_ID,
            "object": "chat.completion",
            "created": 1727346168,
            "model": CHAT_MODEL,
            "system_fingerprint": "fp_bench",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": REPLY, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _USAGE,
        }
    ).encode()


def embeddings_body() -> bytes:
    """The fixed (non-streaming) OpenAI embeddings response nginx serves."""
    return _dump(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": list(VECTOR)}],
            "model": EMBED_MODEL,
            "usage": {"prompt_tokens": 7, "total_tokens": 7},
        }
    ).encode()


def upstream_chat_body() -> bytes:
    """The JSON body Sluice POSTs for `chat_request(CHAT_ROUTE)`, sent as-is by
    the direct-upstream load generators."""
    return _dump(
        {
            "model": CHAT_MODEL,
            "messages": [{"role": "user", "content": PROMPT}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()


def upstream_embed_body() -> bytes:
    return _dump(
        {"model": EMBED_MODEL, "input": [EMBED_INPUT], "encoding_format": "float"}
    ).encode()
