"""What a chat or completion may ask of a provider beyond the common core,
and the thinking budget a reasoning effort stands for.

Each provider's settings declare the features its API can honour
(`ProviderSettings.features`); a request that asks a route for one that a
target cannot honour is refused as INVALID_ARGUMENT naming that target
(pipeline/features.py), never sent with the ask silently dropped.
"""

from __future__ import annotations

import enum
from types import MappingProxyType

from sluice.domain import GenerationParams, ReasoningEffort


class Feature(enum.Enum):
    """Values name the request field that asks for the feature."""

    JSON_OBJECT = "response_format"
    JSON_SCHEMA = "response_format.schema"
    REASONING_EFFORT = "generation.reasoning_effort"
    END_USER = "end_user"
    PROVIDER_OPTIONS = "provider_options"


# What a provider that takes everything takes (the OpenAI wire format).
ALL_FEATURES = frozenset(Feature)

# Thinking budgets (tokens) of providers that take a budget, not an effort
# (Anthropic, Gemini, Bedrock, Cohere, and Ollama's on/off `think`). Anthropic
# and Bedrock's Claude take at least 1024; Gemini 2.5 Flash at most 24576.
THINKING_BUDGETS = MappingProxyType(
    {
        ReasoningEffort.MINIMAL: 1024,
        ReasoningEffort.LOW: 4096,
        ReasoningEffort.MEDIUM: 8192,
        ReasoningEffort.HIGH: 16384,
    }
)


def thinking_budget(params: GenerationParams) -> int | None:
    """The thinking budget `params` ask for: `reasoning_budget_tokens` when
    set (it is the more precise ask), else the effort's from the table."""
    if params.reasoning_budget_tokens is not None:
        return params.reasoning_budget_tokens
    if params.reasoning_effort is not None:
        return THINKING_BUDGETS[params.reasoning_effort]
    return None
