"""What a call costs: list prices in USD per million tokens, keyed
"provider/model", and the cost of a reported `Usage` at those prices.

The one place prices live: budgets charge from it and telemetry reports
from it. `GatewayConfig.prices` overrides the shipped defaults entry by
entry (an override replaces that key's whole `Price`).

Finding a model's price, first match wins:

1. the exact "provider/model";
2. the longest listed model of that provider that is a prefix of the model
   and ends where the model has a separator (`-`, `@`, `:`), so a dated
   snapshot (`gpt-4o-2024-08-06`, `claude-sonnet-4-5-20250929`,
   `claude-3-5-sonnet-v2@20241022`) takes its family's price, while
   `gpt-4` never prices `gpt-4o` and `gpt-5` never prices `gpt-5.4`;
3. for a host that serves another vendor's models, steps 1-2 again under
   that vendor, at the vendor's list price, as the provider's settings
   class says (`ProviderSettings.vendor_model`): `azure_openai` as `openai`
   (the route's `name`, often the deployment, must then be an OpenAI model
   name), `vertex_ai` as `gemini`, `bedrock` ids as their vendor
   (`us.anthropic.claude-sonnet-4-20250514-v1:0` as
   `anthropic/claude-sonnet-4-20250514-v1:0`), `openrouter` ids as theirs
   (`anthropic/claude-3.5-sonnet` as `anthropic/claude-3-5-sonnet`).

Operators price anything else (a deployment name, an ARN, a local model) by
adding its "provider/model" under `prices:`; the host's own entries come
first, so they also override a vendor's price for one host.

The table prices standard, synchronous calls at the base context tier:
long-context surcharges (Gemini 2.5 Pro and Claude Sonnet 4.x above 200k
input tokens) and batch discounts are not modelled. Cache writes are priced
at `cache_write` (Anthropic's: the 5-minute write, 1.25x input; a 1-hour
write, 2x, is priced so too unless the operator sets its own).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from sluice.config.schema import Price
from sluice.domain import Usage
from sluice.providers.registry import PROVIDERS

_PER_TOKEN = 1 / 1_000_000
_SEPARATORS = ("-", "@", ":")


def _p(
    input: float,
    output: float,
    cached_input: float | None = None,
    cache_write: float | None = None,
) -> Price:
    return Price(input=input, output=output, cached_input=cached_input, cache_write=cache_write)


# List prices, USD per million tokens: input, output, cached input, cache write.
# Compiled 2026-11-26 from the vendors' published prices; newer models than
# these are left out rather than guessed (configure them under `prices:`).
DEFAULT_PRICES: Mapping[str, Price] = MappingProxyType(
    {
        # OpenAI (standard tier)
        "openai/gpt-5": _p(1.25, 10.00, 0.125),
        "openai/gpt-5-mini": _p(0.25, 2.00, 0.025),
        "openai/gpt-5-nano": _p(0.05, 0.40, 0.005),
        "openai/gpt-5-pro": _p(15.00, 120.00),
        "openai/gpt-5.1": _p(1.25, 10.00, 0.125),
        "openai/gpt-4.1": _p(2.00, 8.00, 0.50),
        "openai/gpt-4.1-mini": _p(0.40, 1.60, 0.10),
        "openai/gpt-4.1-nano": _p(0.10, 0.40, 0.025),
        "openai/gpt-4o": _p(2.50, 10.00, 1.25),
        # The first gpt-4o snapshot kept its launch price.
        "openai/gpt-4o-2024-05-13": _p(5.00, 15.00),
        "openai/gpt-4o-mini": _p(0.15, 0.60, 0.075),
        "openai/o1": _p(15.00, 60.00, 7.50),
        "openai/o1-mini": _p(1.10, 4.40, 0.55),
        "openai/o1-pro": _p(150.00, 600.00),
        "openai/o3": _p(2.00, 8.00, 0.50),
        "openai/o3-pro": _p(20.00, 80.00),
        "openai/o3-deep-research": _p(10.00, 40.00, 2.50),
        "openai/o3-mini": _p(1.10, 4.40, 0.55),
        "openai/o4-mini": _p(1.10, 4.40, 0.275),
        "openai/o4-mini-deep-research": _p(2.00, 8.00, 0.50),
        "openai/gpt-4-turbo": _p(10.00, 30.00),
        "openai/gpt-3.5-turbo": _p(0.50, 1.50),
        "openai/text-embedding-3-small": _p(0.02, 0.0),
        "openai/text-embedding-3-large": _p(0.13, 0.0),
        "openai/text-embedding-ada-002": _p(0.10, 0.0),
        # Anthropic (cached input = cache hits and refreshes; cache write = 5-minute writes)
        "anthropic/claude-opus-4-6": _p(5.00, 25.00, 0.50, 6.25),
        "anthropic/claude-opus-4-5": _p(5.00, 25.00, 0.50, 6.25),
        "anthropic/claude-opus-4-1": _p(15.00, 75.00, 1.50, 18.75),
        "anthropic/claude-opus-4": _p(15.00, 75.00, 1.50, 18.75),
        "anthropic/claude-sonnet-4-6": _p(3.00, 15.00, 0.30, 3.75),
        "anthropic/claude-sonnet-4-5": _p(3.00, 15.00, 0.30, 3.75),
        "anthropic/claude-sonnet-4": _p(3.00, 15.00, 0.30, 3.75),
        "anthropic/claude-haiku-4-5": _p(1.00, 5.00, 0.10, 1.25),
        "anthropic/claude-3-7-sonnet": _p(3.00, 15.00, 0.30, 3.75),
        "anthropic/claude-3-5-sonnet": _p(3.00, 15.00, 0.30, 3.75),
        "anthropic/claude-3-5-haiku": _p(0.80, 4.00, 0.08, 1.00),
        "anthropic/claude-3-opus": _p(15.00, 75.00, 1.50, 18.75),
        "anthropic/claude-3-haiku": _p(0.25, 1.25, 0.03, 0.30),
        # Google Gemini API (paid tier, prompts up to 200k tokens)
        "gemini/gemini-3-pro-preview": _p(2.00, 12.00, 0.20),
        "gemini/gemini-2.5-pro": _p(1.25, 10.00, 0.125),
        "gemini/gemini-2.5-flash": _p(0.30, 2.50, 0.03),
        "gemini/gemini-2.5-flash-lite": _p(0.10, 0.40, 0.01),
        "gemini/gemini-2.0-flash": _p(0.10, 0.40, 0.025),
        "gemini/gemini-2.0-flash-lite": _p(0.075, 0.30),
        "gemini/gemini-embedding-001": _p(0.15, 0.0),
        # Mistral (`mistral-large` and its -latest alias are Large 3, 2512)
        "mistral/mistral-large": _p(0.50, 1.50),
        "mistral/mistral-large-2411": _p(2.00, 6.00),
        "mistral/mistral-large-2407": _p(2.00, 6.00),
        "mistral/mistral-medium": _p(0.40, 2.00),
        "mistral/mistral-small": _p(0.10, 0.30),
        "mistral/magistral-medium": _p(2.00, 5.00),
        "mistral/magistral-small": _p(0.50, 1.50),
        "mistral/codestral": _p(0.30, 0.90),
        "mistral/ministral-8b": _p(0.10, 0.10),
        "mistral/ministral-3b": _p(0.04, 0.04),
        "mistral/mistral-embed": _p(0.10, 0.0),
        # Cohere (the undated command-r/-plus names are their 2024 originals)
        "cohere/command-a": _p(2.50, 10.00),
        "cohere/command-r-plus": _p(3.00, 15.00),
        "cohere/command-r-plus-08-2024": _p(2.50, 10.00),
        "cohere/command-r": _p(0.50, 1.50),
        "cohere/command-r-08-2024": _p(0.15, 0.60),
        "cohere/command-r7b": _p(0.0375, 0.15),
        "cohere/embed-v4.0": _p(0.12, 0.0),
        "cohere/embed-english-v3.0": _p(0.10, 0.0),
        "cohere/embed-multilingual-v3.0": _p(0.10, 0.0),
    }
)


class PriceTable:
    """The shipped prices under the config's `prices:` overrides."""

    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self._models: dict[str, dict[str, Price]] = {}
        for key, price in {**DEFAULT_PRICES, **(overrides or {})}.items():
            provider, _, model = key.partition("/")
            self._models.setdefault(provider, {})[model] = price

    def price(self, provider: str, model: str) -> Price | None:
        """The price of `provider`'s `model`, or None when none is known."""
        found = self._lookup(provider, model)
        if found is None:
            vendor_model = _vendor_model(provider, model)
            if vendor_model is not None:
                found = self._lookup(*vendor_model)
        return found

    def cost(self, provider: str, model: str, usage: Usage) -> float | None:
        """USD for `usage`, or None when the model has no price. Input tokens
        include cached ones (at the cached price) and cache writes (at the
        cache-write price); output tokens include reasoning ones."""
        price = self.price(provider, model)
        if price is None:
            return None
        cached = min(usage.cached_input_tokens, usage.input_tokens)
        written = min(usage.cache_write_input_tokens, usage.input_tokens - cached)
        cached_price = price.input if price.cached_input is None else price.cached_input
        write_price = price.input if price.cache_write is None else price.cache_write
        return _PER_TOKEN * (
            (usage.input_tokens - cached - written) * price.input
            + cached * cached_price
            + written * write_price
            + usage.output_tokens * price.output
        )

    def _lookup(self, provider: str, model: str) -> Price | None:
        models = self._models.get(provider)
        if not models:
            return None
        exact = models.get(model)
        if exact is not None:
            return exact
        prefixes = [
            listed
            for listed in models
            if model.startswith(listed) and model[len(listed)] in _SEPARATORS
        ]
        return models[max(prefixes, key=len)] if prefixes else None


def _vendor_model(provider: str, model: str) -> tuple[str, str] | None:
    """The vendor and the vendor's name of a model a host serves, if known."""
    settings = PROVIDERS.get(provider)
    return None if settings is None else settings.vendor_model(provider, model)
