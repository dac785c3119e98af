"""Cache namespaces: what each setting makes of a caller and its metadata,
and a claim outside the key's `namespaces` refused before any later stage."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest

from sluice.config.schema import CacheNamespace
from sluice.domain import ChatRequest, Event, GenerationParams, Message, Operation, Role, TextPart
from sluice.errors import GatewayError, Reason, Status
from sluice.identity import Caller
from sluice.pipeline import Call, build_pipeline
from sluice.pipeline.namespace import CacheNamespaces, NamespaceSetting, cache_namespace
from sluice.pipeline.routing import Routing
from sluice.providers.mock import MockAdapter, MockSettings
from sluice.routes import Route, RouteTable, Target

BY_TENANT = CacheNamespace(metadata="X-Tenant")
ACME = Caller("acme-app", None, namespaces=frozenset({"acme"}))
PLAIN = Caller("plain", None)


@pytest.mark.parametrize(
    ("setting", "caller", "headers", "namespace"),
    [
        # Auth off: the setting is a convenience, the value taken as sent.
        (None, None, {"x-tenant": "acme"}, {}),
        ("key", None, {}, {"key": None}),
        (BY_TENANT, None, {"x-tenant": "anyone"}, {"metadata": "x-tenant", "value": "anyone"}),
        (BY_TENANT, None, {}, {"metadata": "x-tenant", "value": None}),
        # Auth on: the key's own, or a value the key may claim.
        (None, PLAIN, {"x-tenant": "acme"}, {"key": "plain"}),
        ("key", PLAIN, {}, {"key": "plain"}),
        (BY_TENANT, ACME, {"x-tenant": "acme"}, {"metadata": "x-tenant", "value": "acme"}),
        (BY_TENANT, ACME, {}, {"key": "acme-app"}),
        (BY_TENANT, PLAIN, {}, {"key": "plain"}),
        (BY_TENANT, ACME, {"x-other": "globex"}, {"key": "acme-app"}),
    ],
)
def test_the_namespace_of_each_setting(
    setting: NamespaceSetting,
    caller: Caller | None,
    headers: dict[str, str],
    namespace: dict[str, str | None],
) -> None:
    assert cache_namespace(setting, caller, headers) == namespace


@pytest.mark.parametrize(
    ("caller", "value"),
    [
        (ACME, "globex"),
        (ACME, "ACME"),  # values are compared exactly
        (ACME, ""),
        (PLAIN, "acme"),  # a key without `namespaces` may claim none
        (PLAIN, "plain"),  # not even its own name
    ],
)
def test_a_value_outside_the_keys_namespaces_is_permission_denied(
    caller: Caller, value: str
) -> None:
    with pytest.raises(GatewayError) as caught:
        cache_namespace(BY_TENANT, caller, {"x-tenant": value})
    error = caught.value
    assert (error.status, error.reason) == (Status.PERMISSION_DENIED, Reason.NAMESPACE_NOT_ALLOWED)
    assert error.message == (
        f"key {caller.name!r} may not claim this x-tenant value: only the values in its `namespaces`"
    )
    assert error.metadata == {"key": caller.name, "metadata": "x-tenant"}


def test_the_claimed_value_is_never_echoed() -> None:
    claimed = "Bearer sk-never-echo-" + "t" * 8000
    with pytest.raises(GatewayError) as caught:
        cache_namespace(CacheNamespace(metadata="authorization"), ACME, {"authorization": claimed})
    error = caught.value
    assert "sk-never-echo" not in error.message + "".join(error.metadata.values())
    assert len(error.message) < 120


CHAT = Route(
    "chat",
    Operation.CHAT,
    (Target("mock", "m", MockAdapter(MockSettings(provider="mock"))),),
    GenerationParams(),
)


async def test_the_stage_refuses_before_any_later_stage_runs() -> None:
    reached: list[Call] = []

    async def endpoint(call: Call) -> AsyncGenerator[Event, None]:
        reached.append(call)
        return
        yield

    handler = build_pipeline(
        [Routing(RouteTable([CHAT])), CacheNamespaces({"chat": BY_TENANT})], endpoint
    )
    request = ChatRequest("chat", (Message(Role.USER, (TextPart("hi"),)),))
    refused = Call(request, {"x-tenant": "globex"}, caller=ACME)
    with pytest.raises(GatewayError):
        [event async for event in handler(refused)]
    assert reached == []
    allowed = Call(request, {"x-tenant": "acme"}, caller=ACME)
    assert [event async for event in handler(allowed)] == []
    assert reached == [allowed]
    assert allowed.cache_namespace == {"metadata": "x-tenant", "value": "acme"}
