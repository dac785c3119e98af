"""The price table: exact names, dated snapshots by prefix, hosts priced as
their vendor, config overrides, and the cost of a usage."""

from __future__ import annotations

import pytest

from sluice.config.schema import Price
from sluice.domain import Usage
from sluice.pricing import DEFAULT_PRICES, PriceTable

DEFAULTS = PriceTable()


@pytest.mark.parametrize(
    ("provider", "model", "listed"),
    [
        # exact
        ("openai", "gpt-4o-mini", "openai/gpt-4o-mini"),
        ("gemini", "gemini-2.5-flash-lite", "gemini/gemini-2.5-flash-lite"),
        ("cohere", "command-a", "cohere/command-a"),
        # a dated snapshot takes its family's price; the longest prefix wins
        ("openai", "gpt-4o-2024-08-06", "openai/gpt-4o"),
        ("openai", "gpt-4o-mini-2024-07-18", "openai/gpt-4o-mini"),
        ("openai", "gpt-4o-2024-05-13", "openai/gpt-4o-2024-05-13"),
        ("anthropic", "claude-sonnet-4-5-20250929", "anthropic/claude-sonnet-4-5"),
        ("anthropic", "claude-opus-4-20250514", "anthropic/claude-opus-4"),
        ("anthropic", "claude-3-5-haiku-latest", "anthropic/claude-3-5-haiku"),
        ("mistral", "mistral-large-2411", "mistral/mistral-large-2411"),
        ("mistral", "mistral-large-latest", "mistral/mistral-large"),
        ("cohere", "command-r7b-12-2024", "cohere/command-r7b"),
        ("cohere", "command-r-plus-04-2024", "cohere/command-r-plus"),
        # hosts priced as the vendor whose models they serve
        ("azure_openai", "gpt-4.1-mini", "openai/gpt-4.1-mini"),
        ("vertex_ai", "gemini-2.5-pro", "gemini/gemini-2.5-pro"),
        ("bedrock", "anthropic.claude-3-5-haiku-20241022-v1:0", "anthropic/claude-3-5-haiku"),
        ("bedrock", "us.anthropic.claude-sonnet-4-20250514-v1:0", "anthropic/claude-sonnet-4"),
        ("bedrock", "cohere.command-r-plus-v1:0", "cohere/command-r-plus"),
        ("openrouter", "anthropic/claude-3.5-sonnet", "anthropic/claude-3-5-sonnet"),
        ("openrouter", "google/gemini-2.5-flash", "gemini/gemini-2.5-flash"),
        ("openrouter", "openai/o4-mini", "openai/o4-mini"),
    ],
)
def test_a_model_takes_the_listed_price(provider: str, model: str, listed: str) -> None:
    assert DEFAULTS.price(provider, model) == DEFAULT_PRICES[listed]


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", "gpt-5.4"),  # a prefix ends at a separator: gpt-5 does not price it
        ("openai", "gpt-4"),
        ("openai", "chatgpt-4o-latest"),
        ("anthropic", "claude"),
        ("bedrock", "meta.llama3-70b-instruct-v1:0"),
        ("bedrock", "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc"),
        ("openrouter", "meta-llama/llama-3.3-70b-instruct"),
        ("vllm", "Qwen/Qwen2.5-7B-Instruct"),
        ("mock", "mock"),
    ],
)
def test_an_unlisted_model_has_no_price(provider: str, model: str) -> None:
    assert DEFAULTS.price(provider, model) is None
    assert DEFAULTS.cost(provider, model, Usage(input_tokens=10)) is None


def test_config_prices_override_defaults_entry_by_entry() -> None:
    table = PriceTable(
        {
            "openai/gpt-4o": Price(input=1.0, output=2.0),
            "vllm/Qwen/Qwen2.5-7B-Instruct": Price(input=0.01, output=0.02),
            "azure_openai/gpt-4.1": Price(input=3.0, output=4.0),
        }
    )
    assert table.price("openai", "gpt-4o-2024-08-06") == Price(input=1.0, output=2.0)
    assert table.price("openai", "gpt-4o-mini") == DEFAULT_PRICES["openai/gpt-4o-mini"]
    assert table.price("vllm", "Qwen/Qwen2.5-7B-Instruct") == Price(input=0.01, output=0.02)
    # A host's own entry comes before its vendor's.
    assert table.price("azure_openai", "gpt-4.1-2025-04-14") == Price(input=3.0, output=4.0)
    assert table.price("openai", "gpt-4.1") == DEFAULT_PRICES["openai/gpt-4.1"]


@pytest.mark.parametrize(
    ("price", "expected"),
    [
        # 600 uncached x 2 + 400 cached x 0.5 + 500 output (reasoning included) x 8
        (Price(input=2.0, output=8.0, cached_input=0.5), 0.0054),
        # cached input at the input price when none is set
        (Price(input=2.0, output=8.0), 0.006),
    ],
)
def test_cost_prices_cached_input_and_counts_reasoning_as_output(
    price: Price, expected: float
) -> None:
    table = PriceTable({"p/m": price})
    usage = Usage(
        input_tokens=1000, output_tokens=500, cached_input_tokens=400, reasoning_tokens=200
    )
    assert table.cost("p", "m", usage) == pytest.approx(expected)


def test_every_default_is_provider_slash_model_with_cheaper_cached_input() -> None:
    for key, price in DEFAULT_PRICES.items():
        provider, _, model = key.partition("/")
        assert provider, key
        assert model, key
        assert price.cached_input is None or price.cached_input <= price.input, key


@pytest.mark.parametrize(
    ("price", "expected"),
    [
        # 300 uncached x 3 + 200 read x 0.3 + 500 written x 3.75 + 100 output x 15
        (Price(input=3.0, output=15.0, cached_input=0.3, cache_write=3.75), 0.004335),
        # cache writes at the input price when none is set
        (Price(input=3.0, output=15.0, cached_input=0.3), 0.00396),
    ],
)
def test_cost_prices_cache_writes(price: Price, expected: float) -> None:
    table = PriceTable({"p/m": price})
    usage = Usage(
        input_tokens=1000, output_tokens=100, cached_input_tokens=200, cache_write_input_tokens=500
    )
    assert table.cost("p", "m", usage) == pytest.approx(expected)


def test_anthropic_cache_writes_cost_a_quarter_more_than_input() -> None:
    # Claude Sonnet 4: 1,000 tokens written to a 5-minute cache at $3.75 per million.
    usage = Usage(input_tokens=1000, cache_write_input_tokens=1000)
    assert DEFAULTS.cost("anthropic", "claude-sonnet-4-20250514", usage) == pytest.approx(0.00375)
    for key, price in DEFAULT_PRICES.items():
        if key.startswith("anthropic/"):
            # Haiku 3 lists $0.30 for its $0.25 input: within two cents of 1.25x.
            assert price.cache_write == pytest.approx(price.input * 1.25, abs=0.02), key
