"""Routing stage: find the call's route (its defaults apply per target, in
variants.py).

When the first of the named route's rules that holds sends the call to
another `route:`, the call continues on that route as if the caller had
named it: its targets, variants, limits and cache apply, and the start event
names it. Authorization was for the route the caller named; the redirect is
the operator's. One hop only: the route a rule sends to is not asked where
to send the call next (its `target:` rules still apply in order_targets).

The request's asks beyond the common core (structured output, reasoning
effort, provider options, end user) are fitted to the route (features.py).

A chat with image parts is refused on a route with a target whose provider
takes no images (the mock): that target would drop them unseen.
"""

from __future__ import annotations

from sluice.domain import ChatRequest, ImagePart, Request
from sluice.errors import GatewayError, Reason, invalid_argument
from sluice.pipeline.call import Call, EventStream, Next
from sluice.pipeline.features import fit_to_route, option_keys
from sluice.pipeline.rules import redirect
from sluice.routes import Route, RouteTable


class Routing:
    def __init__(self, table: RouteTable) -> None:
        self.table = table

    def __call__(self, call: Call, next: Next) -> EventStream:
        with call.trace.routing(call.request.route) as span:
            route = self._route(call.request.route, call)
            destination = redirect(route, call)
            if destination is not None:
                route = self._route(destination, call)
            span.routed(route.name, route.strategy)
            call.request = fit_to_route(route, call.request, call.caller)
            if keys := option_keys(call.request):
                span.provider_options(keys)
        _require_image_support(route, call.request)
        call.route = route
        return next(call)

    def _route(self, name: str, call: Call) -> Route:
        route = self.table.get(name)
        if route.operation is not call.request.operation:
            raise GatewayError(
                Reason.WRONG_ROUTE_TYPE,
                f"route {route.name!r} answers {route.operation.value}, "
                f"not {call.request.operation.value}",
                field="route",
                metadata={"route": route.name, "route_type": route.operation.value},
            )
        return route


def _require_image_support(route: Route, request: Request) -> None:
    unable = next((target for target in route.targets if not target.accepts_images), None)
    if unable is None or not isinstance(request, ChatRequest):
        return
    for i, message in enumerate(request.messages):
        for j, part in enumerate(message.parts):
            if isinstance(part, ImagePart):
                raise invalid_argument(
                    f"messages[{i}].parts[{j}].image",
                    f"route {route.name!r} has a target ({unable.label}) that takes no images",
                )
