"""Variant settings in the config: names, prompts and generation defaults
of targets, built into the route table."""

from __future__ import annotations

import pytest

from sluice.config import ConfigError
from sluice.config.loader import parse_config
from sluice.domain import GenerationParams
from sluice.providers.http import HttpClientPool
from sluice.routes import RouteTable

TWO_VARIANTS = """\
routes:
  - name: exp
    route_type: {route_type}
    config: {{temperature: 0, max_tokens: 100}}
    targets:
      - name: {first}
        model: {{provider: openai, name: gpt-4o, api_key: "{{{{ secrets.KEY }}}}"}}
        prompt: {{system: "For {{{{ variables.who }}}} ({{{{secrets.KEY}}}})"}}
      - name: {second}
        model: {{provider: openai, name: gpt-4o, api_key: k}}
        config: {{max_tokens: 50}}
      - model: {{provider: openai, name: gpt-4o-mini, api_key: k}}
"""


def config(route_type: str = "llm/v1/chat", first: str = "a", second: str = "b") -> str:
    return TWO_VARIANTS.format(route_type=route_type, first=first, second=second)


def test_variables_pass_the_loader_and_secrets_are_filled_around_them() -> None:
    parsed = parse_config(config(), "gw.yaml", {"KEY": "sk-1"})
    prompt = parsed.routes[0].target_configs[0].prompt
    assert prompt is not None
    assert (prompt.system, prompt.mode) == ("For {{ variables.who }} (sk-1)", "prepend")


async def test_targets_are_built_as_variants() -> None:
    parsed = parse_config(config(), "gw.yaml", {"KEY": "sk-1"})
    pool = HttpClientPool()
    try:
        route = RouteTable.from_config(parsed, pool).get("exp")
    finally:
        await pool.aclose()
    a, b, unnamed = route.targets
    assert [t.variant for t in route.targets] == ["a", "b", "openai/gpt-4o-mini"]
    assert route.named_variants
    assert a.label == b.label == "openai/gpt-4o"
    assert a != b  # same model, two variants: stats and breakers keep them apart
    assert b.defaults == GenerationParams(max_tokens=50)
    assert unnamed.prompt is None
    assert unnamed.defaults == GenerationParams()


def test_two_targets_of_one_name_are_refused() -> None:
    with pytest.raises(ConfigError, match="two targets of the route have the same name"):
        parse_config(config(second="a"), "gw.yaml", {"KEY": "k"})


def test_a_prompt_on_a_route_that_is_not_chat_is_refused() -> None:
    with pytest.raises(ConfigError, match="a target prompt needs a chat route"):
        parse_config(config("llm/v1/completions"), "gw.yaml", {"KEY": "k"})
