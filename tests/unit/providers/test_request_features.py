"""Structured output, reasoning effort, provider options and end user as
each provider's request body carries them (issue 13). No network: `build`
is sans-I/O."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import TypeAdapter

from sluice.domain import (
    ChatRequest,
    CompletionRequest,
    GenerationParams,
    Message,
    ReasoningEffort,
    ResponseFormat,
    ResponseFormatType,
    Role,
    TextPart,
)
from sluice.providers.base import HttpAdapter
from sluice.providers.features import THINKING_BUDGETS, thinking_budget
from sluice.providers.http import HttpClientPool
from sluice.providers.options import deep_merge
from sluice.providers.registry import ModelSettings

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
JSON_SCHEMA = ResponseFormat(ResponseFormatType.JSON_SCHEMA, "city", SCHEMA, strict=True)
JSON_OBJECT = ResponseFormat(ResponseFormatType.JSON_OBJECT)
HI = (Message(Role.USER, (TextPart("hi"),)),)
SETTINGS: dict[str, dict[str, Any]] = {
    "openai": {},
    "groq": {"provider": "groq"},
    "azure_openai": {"api_base": "https://r.openai.azure.com", "deployment": "d"},
    "anthropic": {},
    "gemini": {},
    "vertex_ai": {"project": "p"},
    "cohere": {},
    "mistral": {},
    "bedrock": {"region": "us-east-1", "aws_access_key_id": "AKID", "aws_secret_access_key": "s"},
    "ollama": {},
    "llama_cpp": {},
    "databricks": {"api_base": "https://w.cloud.databricks.com/serving-endpoints"},
}


@pytest.fixture
async def pool() -> AsyncIterator[HttpClientPool]:
    pool = HttpClientPool()
    yield pool
    await pool.aclose()


def body(pool: HttpClientPool, provider: str, request: ChatRequest | CompletionRequest) -> Any:
    key = {} if provider == "bedrock" else {"api_key": "k"}  # Bedrock signs with AWS keys
    settings = {"provider": provider, "name": "m", **key, **SETTINGS[provider]}
    model = TypeAdapter(ModelSettings).validate_python(settings)
    adapter = model.create_adapter(pool)
    assert isinstance(adapter, HttpAdapter)
    upstream = adapter.build(request)
    # Bedrock's signed bytes are what goes out: read those.
    return json.loads(upstream.content) if upstream.content else upstream.json


def chat(**fields: Any) -> ChatRequest:
    return ChatRequest(route="r", messages=HI, **fields)


@pytest.mark.parametrize(
    "provider", ["openai", "groq", "azure_openai", "mistral", "llama_cpp", "databricks"]
)
def test_openai_format_takes_response_format_natively(pool: HttpClientPool, provider: str) -> None:
    sent = body(pool, provider, chat(response_format=JSON_SCHEMA))
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": SCHEMA, "strict": True},
    }
    assert body(pool, provider, chat(response_format=JSON_OBJECT))["response_format"] == {
        "type": "json_object"
    }


def test_gemini_takes_a_json_mime_type_and_json_schema(pool: HttpClientPool) -> None:
    for provider in ("gemini", "vertex_ai"):
        config = body(pool, provider, chat(response_format=JSON_SCHEMA))["generationConfig"]
        assert config == {"responseMimeType": "application/json", "responseJsonSchema": SCHEMA}
        config = body(pool, provider, chat(response_format=JSON_OBJECT))["generationConfig"]
        assert config == {"responseMimeType": "application/json"}


def test_cohere_takes_json_object_with_the_schema(pool: HttpClientPool) -> None:
    sent = body(pool, "cohere", chat(response_format=JSON_SCHEMA))
    assert sent["response_format"] == {"type": "json_object", "json_schema": SCHEMA}
    sent = body(pool, "cohere", chat(response_format=JSON_OBJECT))
    assert sent["response_format"] == {"type": "json_object"}


def test_ollama_takes_format(pool: HttpClientPool) -> None:
    assert body(pool, "ollama", chat(response_format=JSON_SCHEMA))["format"] == SCHEMA
    assert body(pool, "ollama", chat(response_format=JSON_OBJECT))["format"] == "json"
    assert "format" not in body(pool, "ollama", chat())


def test_anthropic_takes_output_config_format(pool: HttpClientPool) -> None:
    sent = body(pool, "anthropic", chat(response_format=JSON_SCHEMA))
    assert sent["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}


def test_bedrock_takes_output_config_text_format_with_the_schema_as_a_string(
    pool: HttpClientPool,
) -> None:
    sent = body(pool, "bedrock", chat(response_format=JSON_SCHEMA))
    text_format = sent["outputConfig"]["textFormat"]
    assert text_format["type"] == "json_schema"
    definition = text_format["structure"]["jsonSchema"]
    assert (definition["name"], json.loads(definition["schema"])) == ("city", SCHEMA)


@pytest.mark.parametrize("effort", list(ReasoningEffort))
def test_openai_takes_the_effort_by_name(pool: HttpClientPool, effort: ReasoningEffort) -> None:
    sent = body(pool, "openai", chat(generation=GenerationParams(reasoning_effort=effort)))
    assert sent["reasoning_effort"] == effort.value


@pytest.mark.parametrize("effort", list(ReasoningEffort))
def test_budget_providers_take_the_table_budget(
    pool: HttpClientPool, effort: ReasoningEffort
) -> None:
    generation = GenerationParams(reasoning_effort=effort)
    budget = THINKING_BUDGETS[effort]
    request = chat(generation=generation)
    assert body(pool, "anthropic", request)["thinking"] == {
        "type": "enabled",
        "budget_tokens": budget,
    }
    gemini = body(pool, "gemini", request)["generationConfig"]["thinkingConfig"]
    assert gemini == {"thinkingBudget": budget, "includeThoughts": True}
    bedrock = body(pool, "bedrock", request)["additionalModelRequestFields"]["thinking"]
    assert bedrock == {"type": "enabled", "budget_tokens": budget}
    assert body(pool, "cohere", request)["thinking"] == {"type": "enabled", "token_budget": budget}
    assert body(pool, "ollama", request)["think"] is True


def test_an_explicit_budget_wins_over_the_effort() -> None:
    params = GenerationParams(reasoning_budget_tokens=2000, reasoning_effort=ReasoningEffort.HIGH)
    assert thinking_budget(params) == 2000
    assert thinking_budget(GenerationParams()) is None


def test_a_request_that_sets_either_reasoning_field_takes_neither_from_the_route() -> None:
    route = GenerationParams(reasoning_budget_tokens=9000)
    asked = GenerationParams(reasoning_effort=ReasoningEffort.LOW).over(route)
    assert (asked.reasoning_effort, asked.reasoning_budget_tokens) == (ReasoningEffort.LOW, None)
    assert GenerationParams().over(route).reasoning_budget_tokens == 9000


def test_provider_options_merge_deeply_into_the_body(pool: HttpClientPool) -> None:
    options = {"gemini": {"generationConfig": {"candidateCount": 1}, "safetySettings": []}}
    request = chat(generation=GenerationParams(temperature=0.5), provider_options=options)
    sent = body(pool, "gemini", request)
    assert sent["generationConfig"] == {"temperature": 0.5, "candidateCount": 1}
    assert sent["safetySettings"] == []


def test_openai_options_apply_to_every_preset_the_presets_own_over_them(
    pool: HttpClientPool,
) -> None:
    options = {"openai": {"logit_bias": {"1": -100}, "n": 1}, "groq": {"n": 2}}
    sent = body(pool, "groq", chat(provider_options=options))
    assert (sent["logit_bias"], sent["n"]) == ({"1": -100}, 2)
    assert "logit_bias" not in body(pool, "mistral", chat(provider_options=options))


def test_bedrock_signs_the_body_with_the_options_merged(pool: HttpClientPool) -> None:
    options = {"bedrock": {"performanceConfig": {"latency": "optimized"}}}
    assert body(pool, "bedrock", chat(provider_options=options))["performanceConfig"] == {
        "latency": "optimized"
    }


def test_deep_merge_replaces_what_is_not_an_object() -> None:
    assert deep_merge({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"b": 3}, "d": [2]}) == {
        "a": {"b": 3, "c": 2},
        "d": [2],
    }


def test_end_user_goes_where_each_provider_takes_it(pool: HttpClientPool) -> None:
    request = chat(end_user="user-7")
    sent = body(pool, "openai", request)
    assert (sent["user"], sent["safety_identifier"]) == ("user-7", "user-7")
    groq = body(pool, "groq", request)
    assert groq["user"] == "user-7"
    assert "safety_identifier" not in groq
    assert body(pool, "azure_openai", request)["user"] == "user-7"
    assert body(pool, "anthropic", request)["metadata"] == {"user_id": "user-7"}
    assert "user" not in body(pool, "openai", chat())
