"""The response cache's key (which calls get the same answer) and each
call's cache control (whether it reads, stores, and for how long).

A key is `v2:` + the SHA-256 hex digest of one canonical JSON document:

    {"route": ..., "provider": ..., "model": ...,   # the route's first target
     "operation": "llm/v1/chat",
     "request": {...},                              # as the upstream will see it
     "variant": ...,                                # on a route with named targets
     "namespace": {...}}                            # the caller's, when it has one

`request` holds every field of the domain request except `route` (in the
document already), `labels`, `cache` and `variables` (they do not change
the answer, or only through the prompt; nor does the `cache` breakpoint of a
part or tool, also left out); it is the request as the call's variant shapes
it (variants.py): route and target defaults count as if the caller had sent
them, and the variant's prompt, variables filled in, is part of it. The
variant is the call's first choice, or for storing, the target that
answered, so a fallback's answer is kept under the key of the calls that
choose that variant first. Headers and the caller's key are never in the
document: only the call's namespace (namespace.py), which names the key by
its configured name or holds the metadata value the key was allowed to
claim.

Canonical: keys sorted, no whitespace, UTF-8; floats as Python's shortest
round-trip repr, and a float-typed field always as a float (so 0 and 0.0 are
one key); a nested dataclass as its fields plus its class name under "type"
(a text part never equals a tool result); bytes (inline images) as their
SHA-256 hex digest. Change the document and bump `KEY_VERSION`: old entries
then are never read.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import json
import re
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING

from sluice.domain import CacheControl, EmbeddingRequest, Request
from sluice.errors import invalid_argument
from sluice.pipeline.call import Call
from sluice.pipeline.selection import sticky_value
from sluice.pipeline.variants import request_for
from sluice.routes import Target

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

CACHE_CONTROL_HEADER = "sluice-cache-control"
KEY_VERSION = "v2"
# Request fields that never change the answer.
_NOT_IN_KEY = frozenset({"route", "labels", "cache", "variables"})
# Nor do the prompt-cache breakpoints of parts and tools.
_NOT_IN_NESTED_KEY = frozenset({"cache"})


def cache_key(call: Call, variant: Target | None = None) -> str:
    """The key of `call`'s answer by `variant` (its first choice when None),
    in the call's namespace."""
    request = call.request if variant is None else request_for(call, variant)
    return digest(key_document(call, request, variant))


def key_document(call: Call, request: Request, variant: Target | None = None) -> dict[str, object]:
    """The key's document for `request` made as `call` by `variant` (the
    semantic cache passes the call's request with its compared text taken
    out)."""
    route = call.route
    assert route is not None, "the routing stage runs before the cache"
    namespace = call.cache_namespace
    assert namespace is not None, "the namespace stage runs before the cache"
    target = route.targets[0]
    document: dict[str, object] = {
        "route": route.name,
        "provider": target.provider,
        "model": target.model,
        "operation": request.operation.value,
        "request": _fields(request, skip=_NOT_IN_KEY),
    }
    if route.named_variants:
        # Each variant's answers are its own, prompt or not.
        document["variant"] = (variant or call.targets[0]).variant
    if namespace:
        document["namespace"] = dict(namespace)
    if route.sticky is not None:
        # A sticky split keeps a caller on one variant: so must its cached answers.
        document["sticky"] = sticky_value(route, call)
    return document


def digest(document: Mapping[str, object]) -> str:
    """A key document's canonical digest, versioned."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{KEY_VERSION}:{hashlib.sha256(canonical.encode()).hexdigest()}"


def _fields(value: DataclassInstance, skip: frozenset[str] = frozenset()) -> dict[str, object]:
    floats = _float_fields(type(value))
    fields: dict[str, object] = {}
    for field in dataclasses.fields(value):
        if field.name in skip:
            continue
        item = getattr(value, field.name)
        fields[field.name] = float(item) if field.name in floats and item is not None else item
    return {name: _plain(item) for name, item in fields.items()}


def _plain(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"type": type(value).__name__, **_fields(value, skip=_NOT_IN_NESTED_KEY)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return hashlib.sha256(value).hexdigest()
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


@functools.cache
def _float_fields(cls: type) -> frozenset[str]:
    """Fields annotated `float` or `float | None`."""
    hints = typing.get_type_hints(cls)
    return frozenset(
        name for name, hint in hints.items() if hint is float or float in typing.get_args(hint)
    )


_SECONDS = re.compile(r"[0-9]+")


def cache_control(call: Call) -> CacheControl:
    """The call's cache control: its request's merged with its metadata's."""
    header = parse_cache_control(call.headers.get(CACHE_CONTROL_HEADER, ""))
    if isinstance(call.request, EmbeddingRequest):
        return header
    request = call.request.cache
    ttls = [ttl for ttl in (request.ttl, header.ttl) if ttl is not None]
    return CacheControl(
        bypass=request.bypass or header.bypass,
        no_store=request.no_store or header.no_store,
        ttl=min(ttls) if ttls else None,
        semantic=request.semantic,
    )


def parse_cache_control(value: str) -> CacheControl:
    """`sluice-cache-control` metadata, e.g. `no-cache, max-age=60`."""
    bypass = no_store = False
    ttls: list[float] = []
    for directive in value.split(","):
        name, _, argument = directive.partition("=")
        name = name.strip().lower()
        if name == "no-cache":
            bypass = True
        elif name == "no-store":
            no_store = True
        elif name == "max-age":
            seconds = argument.strip()
            if not _SECONDS.fullmatch(seconds):
                raise invalid_argument(
                    CACHE_CONTROL_HEADER,
                    f"{CACHE_CONTROL_HEADER}: max-age must be whole seconds, got {seconds[:32]!r}",
                )
            ttls.append(float(seconds))
    ttl = min(ttls) if ttls else None
    if ttl == 0:
        return CacheControl(bypass=bypass, no_store=True)
    return CacheControl(bypass=bypass, no_store=no_store, ttl=ttl)
