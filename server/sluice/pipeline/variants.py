"""Variants stage: choose the call's targets, and send each the caller's
request as that target shapes it.

Every target of a route is a variant: its `name` (else "provider/model"),
its own generation defaults (`targets[].config`, over the route's `config:`,
under what the request sets) and, on a chat route, its own system prompt
(`targets[].prompt`): a system message put before the caller's messages
(`prepend`) or instead of the caller's system messages (`replace`), its
`{{ variables.NAME }}` placeholders filled from `ChatRequest.variables`.

The order of the targets (selection.py) is decided here, before the cache
and limits, and the call's request becomes the request its first choice
sends: so limits estimate it, and the cache keys and replays it, as that
variant's (cache_key.py). Attempts at other targets (fallbacks) reshape the
caller's request (`Call.routed`) for themselves; so does a shadow target.

A placeholder of any of the route's prompts without a value is refused
(INVALID_ARGUMENT naming `variables.NAME`) whichever variant is chosen: a
request is valid for the route or not, not by the luck of a draw.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from sluice.config.schema import PromptConfig
from sluice.domain import ChatRequest, EmbeddingRequest, Message, Request, Role, TextPart
from sluice.errors import invalid_argument
from sluice.pipeline.call import Call, EventStream, Next
from sluice.pipeline.selection import TargetStats, order_targets
from sluice.routes import Route, Target

PLACEHOLDER = re.compile(r"\{\{\s*variables\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class Variants:
    def __init__(self, stats: TargetStats) -> None:
        self._stats = stats

    def __call__(self, call: Call, next: Next) -> EventStream:
        route = call.route
        assert route is not None, "the routing stage runs before the variants"
        _require_variables(route, call.request)
        call.targets = order_targets(route, call, self._stats)
        call.routed = call.request
        call.request = shaped(call.request, route, call.targets[0])
        return next(call)


def request_for(call: Call, target: Target) -> Request:
    """What `target` is sent for `call`."""
    assert call.route is not None, "the routing stage runs before the variants"
    assert call.routed is not None, "the variants stage ran before"
    return shaped(call.routed, call.route, target)


def shaped(request: Request, route: Route, target: Target) -> Request:
    """`request` as `target` sends it: generation defaults filled in, its
    prompt in place."""
    if isinstance(request, EmbeddingRequest):
        return request
    generation = request.generation.over(target.defaults).over(route.defaults)
    if isinstance(request, ChatRequest) and target.prompt is not None:
        return dataclasses.replace(
            request,
            generation=generation,
            messages=_prompted(request.messages, target.prompt, request.variables),
        )
    if generation == request.generation:
        return request  # no defaults to fill: no copy
    return dataclasses.replace(request, generation=generation)


def _prompted(
    messages: tuple[Message, ...], prompt: PromptConfig, variables: Mapping[str, str]
) -> tuple[Message, ...]:
    system = PLACEHOLDER.sub(lambda match: variables[match.group(1)], prompt.system)
    kept = (
        messages
        if prompt.mode == "prepend"
        else tuple(message for message in messages if message.role is not Role.SYSTEM)
    )
    return (Message(Role.SYSTEM, (TextPart(system),)), *kept)


def _require_variables(route: Route, request: Request) -> None:
    if not isinstance(request, ChatRequest):
        return
    shadow = (route.shadow,) if route.shadow is not None else ()
    for target in (*route.targets, *shadow):
        if target.prompt is None:
            continue
        for match in PLACEHOLDER.finditer(target.prompt.system):
            if match.group(1) not in request.variables:
                raise invalid_argument(
                    f"variables.{match.group(1)}",
                    f"variant {target.variant!r} of route {route.name!r} needs the variable "
                    f"{match.group(1)!r}",
                )
