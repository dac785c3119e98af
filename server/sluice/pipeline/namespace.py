"""Cache namespaces: whose calls may share a route's cached answers.

A call's namespace goes into its cache key (cache_key.py), so calls read
only entries stored in their own namespace. It is settled by the stage
below, first among a cached route's stages: a claim the caller may not make
is refused before limits count the call, before any cache lookup and before
any upstream work.

With auth on (the call has a key), entries never cross keys unless the
operator says which keys share:
- no `namespace`, or `namespace: key`: the key's own namespace;
- `namespace: {metadata: <name>}`: the value of that metadata when the call
  sends it, which must be one of the key's `namespaces` (else
  PERMISSION_DENIED, `NAMESPACE_NOT_ALLOWED`): keys allowed the same value
  share its entries. Without the metadata, the key's own namespace.

With auth off every caller is anonymous and the setting is a convenience,
not isolation: no `namespace` (or `key`) is one namespace for all callers;
`{metadata: <name>}` takes whatever value the call sends, and anyone may
send any value.

Limits never depend on a namespace: their scopes are the route and the key
(limits.py), never a metadata value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from sluice.config.schema import CacheNamespace
from sluice.errors import GatewayError, Reason
from sluice.identity import Caller
from sluice.pipeline.call import Call, EventStream, Next

# A route's `cache.namespace`.
NamespaceSetting = Literal["key"] | CacheNamespace | None
# The namespace as the cache key's document holds it; empty: the route's
# one namespace (anonymous callers on a route without a namespace).
Namespace = Mapping[str, str | None]


def cache_namespace(
    setting: NamespaceSetting, caller: Caller | None, headers: Mapping[str, str]
) -> Namespace:
    """The namespace of a call by `caller` with `headers` (lower-case gRPC
    metadata) on a route whose cache says `setting`. Raises
    PERMISSION_DENIED when the caller claims a value its key may not."""
    if caller is None:
        return _anonymous(setting, headers)
    if isinstance(setting, CacheNamespace):
        header = setting.metadata.lower()  # gRPC metadata keys arrive lower-case
        value = headers.get(header)
        if value is not None:
            if value not in caller.namespaces:
                raise _not_allowed(caller, header)
            return {"metadata": header, "value": value}
    return {"key": caller.name}


def _anonymous(setting: NamespaceSetting, headers: Mapping[str, str]) -> Namespace:
    if setting == "key":
        # Apart from any key's: a key may be named "anonymous".
        return {"key": None}
    if isinstance(setting, CacheNamespace):
        header = setting.metadata.lower()
        return {"metadata": header, "value": headers.get(header)}
    return {}


def _not_allowed(caller: Caller, header: str) -> GatewayError:
    # The value is not quoted: it is the caller's, of any length, and an
    # operator may have named a metadata key that carries a secret.
    return GatewayError(
        Reason.NAMESPACE_NOT_ALLOWED,
        f"key {caller.name!r} may not claim this {header} value: "
        f"only the values in its `namespaces`",
        metadata={"key": caller.name, "metadata": header},
    )


class CacheNamespaces:
    """The stage that settles each call's cache namespace. `settings` maps a
    cached route's name to its `cache.namespace`."""

    def __init__(self, settings: Mapping[str, NamespaceSetting]) -> None:
        self.settings = settings

    def __call__(self, call: Call, next: Next) -> EventStream:
        assert call.route is not None, "the routing stage runs before the namespace"
        setting = self.settings[call.route.name]
        call.cache_namespace = cache_namespace(setting, call.caller, call.headers)
        return next(call)
