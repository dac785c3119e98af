"""Provider options: body fields a request carries for one provider
(`ChatRequest.provider_options`, keyed by provider name), deep-merged into
the upstream body by the adapter whose provider they name.

A route must allow them (`allow_provider_options`, pipeline/features.py),
and no entry may set what Sluice owns: the model, the stream flag,
credentials, headers or the URL (`RESERVED_KEYS`, checked in api/requests.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sluice.domain import ChatRequest, Request

# Top-level keys an entry may not set, in any provider's spelling: the model
# (`model`, Bedrock's `modelId`), the stream flag (and OpenAI's
# `stream_options`, which usage reporting relies on), credentials, headers,
# the URL.
RESERVED_KEYS = frozenset(
    {
        "model",
        "modelid",
        "stream",
        "stream_options",
        "api_key",
        "apikey",
        "key",
        "authorization",
        "credentials",
        "token",
        "headers",
        "extra_headers",
        "url",
        "api_base",
        "base_url",
        "endpoint",
    }
)


def reserved(key: str) -> bool:
    """Whether an option key names what Sluice owns (case-insensitive)."""
    return key.lower() in RESERVED_KEYS


def merged_options(request: Request, names: tuple[str, ...]) -> dict[str, Any]:
    """The options `request` carries for any of `names`, later names
    merged over earlier ones."""
    merged: dict[str, Any] = {}
    if not isinstance(request, ChatRequest):
        return merged
    for name in names:
        if name in request.provider_options:
            merged = deep_merge(merged, request.provider_options[name])
    return merged


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `extra` over it: objects merge key by key, any other value
    replaces."""
    out = dict(base)
    for key, value in extra.items():
        current = out.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            out[key] = deep_merge(current, value)
        else:
            out[key] = value
    return out
