"""Authorization stage: refuse routes the caller's key may not use.

The servicer identifies the caller from its metadata before anything else
(so a caller without a valid key learns nothing, not even whether its
request is well formed); this stage runs before routing, so a key limited
to some routes learns nothing about the others: a route outside its list
is PERMISSION_DENIED whether or not it exists (a key allowed every route
gets NOT_FOUND for an unknown one).
"""

from __future__ import annotations

from sluice.errors import GatewayError, Reason, truncated
from sluice.identity import allows
from sluice.pipeline.call import Call, EventStream, Next


def authorize(call: Call, next: Next) -> EventStream:
    route = call.request.route
    caller = call.caller
    if caller is not None and not allows(caller, route):
        raise GatewayError(
            Reason.ROUTE_NOT_ALLOWED,
            f"key {caller.name!r} may not use route {truncated(route)!r}",
            metadata={"route": truncated(route), "key": caller.name},
        )
    return next(call)
