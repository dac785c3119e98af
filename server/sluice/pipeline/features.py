"""A request's asks beyond the common core, fitted to its route.

Routing calls `fit_to_route` once the route is known:

- provider options need the route's `allow_provider_options`, and each
  entry must name the provider of one of its targets (else it would go
  nowhere, unseen);
- the end user is settled by the route's `end_user`: the request's, the
  caller's key name, or none;
- every target must honour every feature the request asks for
  (features.py): a fallback to one that cannot would drop the ask silently,
  so the call is refused up front, naming that target.
"""

from __future__ import annotations

import dataclasses

from sluice.domain import ChatRequest, EmbeddingRequest, Request, ResponseFormatType
from sluice.errors import invalid_argument
from sluice.identity import Caller
from sluice.providers.features import Feature
from sluice.routes import Route


def fit_to_route(route: Route, request: Request, caller: Caller | None) -> Request:
    """`request` as `route` sends it on: its end user settled, its asks
    checked against every target."""
    if isinstance(request, ChatRequest):
        _require_options_allowed(route, request)
        end_user = _end_user(route, request, caller)
        if end_user != request.end_user:  # most calls: no copy of the request
            request = dataclasses.replace(request, end_user=end_user)
    asked = asked_features(request)
    for target in route.targets:
        if missing := [feature for feature in asked if feature not in target.features]:
            raise invalid_argument(
                missing[0].value,
                f"{missing[0].value}: route {route.name!r} has a target ({target.label}) whose "
                f"provider {target.provider!r} cannot honour it",
            )
    return request


def asked_features(request: Request) -> list[Feature]:
    """The features `request` asks its targets for."""
    asked: list[Feature] = []
    if isinstance(request, EmbeddingRequest):
        return asked
    if request.generation.reasoning_effort is not None:
        asked.append(Feature.REASONING_EFFORT)
    if not isinstance(request, ChatRequest):
        return asked
    if (format := request.response_format) is not None:
        json_schema = format.type is ResponseFormatType.JSON_SCHEMA
        asked.append(Feature.JSON_SCHEMA if json_schema else Feature.JSON_OBJECT)
    if request.provider_options:
        asked.append(Feature.PROVIDER_OPTIONS)
    if request.end_user:
        asked.append(Feature.END_USER)
    return asked


def option_keys(request: Request) -> list[str]:
    """`provider.key` of each provider option, for the span: the keys say
    what was asked; values may hold what callers consider private."""
    if not isinstance(request, ChatRequest):
        return []
    return sorted(
        f"{provider}.{key}" for provider, entry in request.provider_options.items() for key in entry
    )


def _require_options_allowed(route: Route, request: ChatRequest) -> None:
    if not request.provider_options:
        return
    if not route.allow_provider_options:
        raise invalid_argument(
            "provider_options",
            f"route {route.name!r} does not allow provider_options "
            "(its config sets no allow_provider_options: true)",
        )
    names = {name for target in route.targets for name in target.adapter.option_names}
    for provider in request.provider_options:
        if provider not in names:
            raise invalid_argument(
                f"provider_options.{provider}",
                f"no target of route {route.name!r} is a {provider!r} target: "
                "its options would go nowhere",
            )


def _end_user(route: Route, request: ChatRequest, caller: Caller | None) -> str:
    if route.end_user == "from_request":
        return request.end_user
    if route.end_user == "from_key":
        return caller.name if caller is not None else ""
    return ""  # off: the route sends no end user, whatever the request says
