"""Rules: each condition, first match wins, patterns compiled once, and the
Routing stage following a rule to another route."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from sluice.config import ConfigError
from sluice.config.loader import parse_config
from sluice.config.schema import RuleConfig
from sluice.domain import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    Event,
    Finish,
    FinishReason,
    GenerationParams,
    ImagePart,
    Message,
    Operation,
    Request,
    Role,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from sluice.errors import GatewayError, Status
from sluice.identity import Caller
from sluice.pipeline.call import Call, build_pipeline
from sluice.pipeline.routing import Routing
from sluice.pipeline.rules import match_rule, redirect
from sluice.pipeline.selection import TargetStats
from sluice.pipeline.variants import Variants
from sluice.providers.mock import MockAdapter, MockSettings
from sluice.routes import Route, RouteTable, Target

ADAPTER = MockAdapter(MockSettings(provider="mock"))
SSN = r"\b\d{3}-\d{2}-\d{4}\b"


def route(
    *rules: dict[str, Any],
    name: str = "r",
    operation: Operation = Operation.CHAT,
    defaults: GenerationParams | None = None,
) -> Route:
    return Route(
        name,
        operation,
        (Target("mock", name, ADAPTER),),
        defaults or GenerationParams(),
        rules=tuple(RuleConfig.model_validate(rule) for rule in rules),
    )


def chat(*texts: str, max_tokens: int | None = None) -> ChatRequest:
    return ChatRequest(
        "r",
        tuple(Message(Role.USER, (TextPart(text),)) for text in texts),
        GenerationParams(max_tokens=max_tokens),
    )


def call(
    request: Request | None = None, headers: dict[str, str] | None = None, key: str | None = None
) -> Call:
    caller = Caller(key, None) if key is not None else None
    return Call(request=request or chat("hello"), headers=headers or {}, caller=caller)


def holds(when: dict[str, Any], on: Call) -> bool:
    return match_rule(route({"when": when, "target": 0}), on) is not None


TOOL_TURN = ChatRequest(
    "r",
    (
        Message(Role.USER, (TextPart("look me up"), ImagePart(url="https://x/123-45-6789.png"))),
        Message(Role.ASSISTANT, (ToolCallPart("c1", "lookup", '{"ssn": "987-65-4321"}'),)),
        Message(Role.TOOL, (ToolResultPart("c1", "record of 555-12-3456"),)),
    ),
)


@pytest.mark.parametrize(
    ("when", "on", "expected"),
    [
        # metadata: keys in any case in config, values exact, all of them
        ({"metadata": {"X-Tenant": "acme"}}, call(headers={"x-tenant": "acme"}), True),
        ({"metadata": {"x-tenant": "acme"}}, call(headers={"x-tenant": "ACME"}), False),
        ({"metadata": {"x-tenant": "acme"}}, call(), False),
        (
            {"metadata": {"x-tenant": "acme", "x-tier": "gold"}},
            call(headers={"x-tenant": "acme"}),
            False,
        ),
        (
            {"metadata": {"x-tenant": "acme", "x-tier": "gold"}},
            call(headers={"x-tenant": "acme", "x-tier": "gold", "x-other": "1"}),
            True,
        ),
        # key: the caller's key name
        ({"key": "alice"}, call(key="alice"), True),
        ({"key": "alice"}, call(key="bob"), False),
        ({"key": "alice"}, call(), False),
        # matches: searched in every text-carrying part, never across parts
        ({"matches": SSN}, call(chat("hi", "mine is 123-45-6789")), True),
        ({"matches": SSN}, call(chat("mine is 123-45-67890")), False),
        ({"matches": "987-65-4321"}, call(TOOL_TURN), True),  # tool call arguments
        ({"matches": "555-12-3456"}, call(TOOL_TURN), True),  # tool result
        ({"matches": "123-45-6789"}, call(TOOL_TURN), False),  # an image URL is no text
        ({"matches": "foo bar"}, call(chat("foo", "bar")), False),
        ({"matches": "(?i)^SECRET"}, call(CompletionRequest("r", "secret plan")), True),
        ({"matches": "tail"}, call(CompletionRequest("r", "head", suffix="tail")), True),
        ({"matches": SSN}, call(EmbeddingRequest("r", ("a", "111-22-3333"))), True),
        # keywords: any, ignoring case, as whole words or phrases
        ({"keywords": ["password", "token"]}, call(chat("My PASSWORD is")), True),
        ({"keywords": ["password"]}, call(chat("passwords here")), False),
        ({"keywords": ["credit card"]}, call(chat("a Credit Card number")), True),
        ({"keywords": ["$ssn"]}, call(chat("field $ssn, please")), True),
        ({"keywords": ["$ssn"]}, call(chat("field $ssnx")), False),
        ({"keywords": []}, call(chat("anything")), False),
        ({"keywords": [""]}, call(chat("a  b")), False),
        # prompt tokens: characters / 4, rounded up; max_tokens is no prompt
        ({"min_prompt_tokens": 10}, call(chat("x" * 40)), True),
        ({"min_prompt_tokens": 11}, call(chat("x" * 40)), False),
        ({"max_prompt_tokens": 10}, call(chat("x" * 40, max_tokens=1000)), True),
        ({"max_prompt_tokens": 10}, call(chat("x" * 41)), False),
        # every given condition must hold; none given always holds
        ({"key": "alice", "keywords": ["hello"]}, call(key="alice"), True),
        ({"key": "alice", "keywords": ["bye"]}, call(key="alice"), False),
        ({}, call(), True),
    ],
)
def test_condition(when: dict[str, Any], on: Call, expected: bool) -> None:
    assert holds(when, on) is expected


def test_first_rule_that_holds_wins() -> None:
    rules = route(
        {"when": {"keywords": ["alpha"]}, "target": 0},
        {"when": {"keywords": ["beta"]}, "route": "b"},
        {"when": {}, "target": 0},
    )
    assert match_rule(rules, call(chat("alpha beta"))) is rules.rules[0]
    assert match_rule(rules, call(chat("beta"))) is rules.rules[1]
    assert match_rule(rules, call(chat("gamma"))) is rules.rules[2]
    assert match_rule(rules, call(chat("beta")), redirects=False) is rules.rules[2]
    assert match_rule(route(), call()) is None


def test_redirect_names_the_route_of_the_first_rule_that_holds() -> None:
    rules = route(
        {"when": {"keywords": ["pin"]}, "target": 0},
        {"when": {"metadata": {"x-tenant": "acme"}}, "route": "acme"},
    )
    assert redirect(rules, call(headers={"x-tenant": "acme"})) == "acme"
    assert redirect(rules, call(chat("pin"), headers={"x-tenant": "acme"})) is None
    assert redirect(rules, call()) is None


def test_patterns_are_compiled_once(monkeypatch: pytest.MonkeyPatch) -> None:
    pattern, words = r"compiled-once-\d+", ["compiled", "once"]
    compiled: list[object] = []
    original = re.compile

    def counting(regex: Any, flags: int = 0) -> re.Pattern[str]:
        if "compiled" in str(regex):
            compiled.append(regex)
        return original(regex, flags)

    two_routes = [
        route({"when": {"matches": pattern, "keywords": words}, "target": 0}, name=name)
        for name in ("one", "two")
    ]
    monkeypatch.setattr(re, "compile", counting)  # after config validation compiled it
    for i in range(50):
        for rules in two_routes:
            assert match_rule(rules, call(chat(f"compiled-once-{i}"))) is not None
    assert len(compiled) == 2  # the regex, and the keywords' pattern


# --- the Routing stage ---------------------------------------------------------


async def routed(table: RouteTable, on: Call) -> Call:
    """Run the Routing and Variants stages; the call as the next stage saw it."""
    seen: list[Call] = []

    async def next_stage(routed_call: Call) -> AsyncGenerator[Event, None]:
        seen.append(routed_call)
        yield Finish(FinishReason.STOP)

    async for _ in build_pipeline([Routing(table), Variants(TargetStats())], next_stage)(on):
        pass
    return seen[0]


TENANT = {"when": {"metadata": {"x-tenant": "acme"}}, "route": "acme"}


def table(*routes: Route) -> RouteTable:
    return RouteTable(list(routes))


async def test_a_route_rule_sends_the_call_on_with_that_routes_defaults() -> None:
    routes = table(
        route(TENANT, defaults=GenerationParams(max_tokens=10, temperature=0.5)),
        route(name="acme", defaults=GenerationParams(max_tokens=99)),
    )
    redirected = await routed(routes, call(headers={"x-tenant": "acme"}))
    assert redirected.route is routes.get("acme")
    assert isinstance(redirected.request, ChatRequest)
    assert redirected.request.generation == GenerationParams(max_tokens=99)

    stayed = await routed(routes, call(headers={"x-tenant": "other"}))
    assert stayed.route is routes.get("r")
    assert isinstance(stayed.request, ChatRequest)
    assert stayed.request.generation == GenerationParams(max_tokens=10, temperature=0.5)


async def test_one_hop_only() -> None:
    routes = table(
        route(TENANT),
        route({"when": {}, "route": "r"}, name="acme"),  # would loop back
    )
    redirected = await routed(routes, call(headers={"x-tenant": "acme"}))
    assert redirected.route is routes.get("acme")


async def test_a_rule_to_a_route_of_another_type_is_refused_at_call_time() -> None:
    routes = table(
        route({"when": {}, "route": "vectors"}),
        route(name="vectors", operation=Operation.EMBEDDING),
    )
    with pytest.raises(GatewayError) as caught:
        await routed(routes, call())
    assert (caught.value.status, caught.value.reason) == (
        Status.INVALID_ARGUMENT,
        "WRONG_ROUTE_TYPE",
    )
    assert caught.value.message == "route 'vectors' answers llm/v1/embeddings, not llm/v1/chat"


CROSS_TYPE_RULE = """\
routes:
  - name: chat
    route_type: llm/v1/chat
    model: {provider: mock}
    rules:
      - when: {keywords: [vector]}
        route: vectors
  - name: vectors
    route_type: llm/v1/embeddings
    model: {provider: mock}
"""


def test_a_rule_to_a_route_of_another_type_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(CROSS_TYPE_RULE, "gw.yaml", {})
    assert str(caught.value) == (
        "gw.yaml:1: route 'chat' has a rule to route 'vectors', which answers "
        "llm/v1/embeddings, not llm/v1/chat"
    )
