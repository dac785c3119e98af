"""Attribute names and values of the OpenTelemetry GenAI and RPC semantic
conventions that Sluice uses, and Sluice's own `sluice.*` attributes.

Written out here rather than imported from opentelemetry-semantic-conventions,
whose GenAI names live in a private `_incubating` package that may move.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from opentelemetry.util.types import AttributeValue

from sluice.domain import GenerationParams, Operation, Usage

# GenAI
OPERATION_NAME = "gen_ai.operation.name"
PROVIDER_NAME = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_ID = "gen_ai.response.id"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
USAGE_REASONING_OUTPUT_TOKENS = "gen_ai.usage.reasoning.output_tokens"
TOKEN_TYPE = "gen_ai.token.type"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
EMBEDDINGS_DIMENSION_COUNT = "gen_ai.embeddings.dimension.count"
ERROR_TYPE = "error.type"

# RPC and HTTP
RPC_SYSTEM = "rpc.system"
RPC_SERVICE = "rpc.service"
RPC_METHOD = "rpc.method"
RPC_GRPC_STATUS_CODE = "rpc.grpc.status_code"
HTTP_REQUEST_METHOD = "http.request.method"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
URL_FULL = "url.full"

# Sluice
CALL_ID = "sluice.call_id"
ROUTE = "sluice.route"
KEY_NAME = "sluice.key.name"
CACHE_HIT = "sluice.cache_hit"
CACHE_RESULT = "sluice.cache.result"
# exact or semantic: which of a route's caches a lookup asked.
CACHE_KIND = "sluice.cache.kind"
CACHE_SIMILARITY = "sluice.cache_similarity"
ATTEMPT = "sluice.attempt"
ATTEMPTS = "sluice.attempts"
ATTEMPT_OUTCOME = "sluice.attempt.outcome"
TARGET = "sluice.target"
TARGET_INDEX = "sluice.target.index"
# The variant that answered: a configured target name, else "provider/model".
VARIANT = "sluice.variant"
TIME_TO_FIRST_CHUNK = "sluice.time_to_first_chunk"
COST_USD = "sluice.cost_usd"
STATUS = "sluice.status"
LIMIT = "sluice.limit"
SCOPE = "sluice.limit.scope"
SHADOW = "sluice.shadow"
SHADOW_OUTCOME = "sluice.shadow.outcome"
REQUESTED_ROUTE = "sluice.requested_route"
# A call for a route that is not configured is recorded under this one value
# of `sluice.route`: the name it asked for is the caller's, unbounded.
UNKNOWN_ROUTE = "(unknown)"
STRATEGY = "sluice.strategy"
# The provider options a chat carried, as `provider.key` (values never).
PROVIDER_OPTION_KEYS = "sluice.provider_options.keys"
VARIANT = "sluice.variant"
FEEDBACK_NAME = "sluice.feedback.name"

OPERATION_NAMES: Mapping[Operation, str] = MappingProxyType(
    {
        Operation.CHAT: "chat",
        Operation.COMPLETION: "text_completion",
        Operation.EMBEDDING: "embeddings",
    }
)


def request_parameters(params: GenerationParams) -> dict[str, object]:
    """`gen_ai.request.*` attributes of the parameters a request sets."""
    values: dict[str, object] = {
        "gen_ai.request.max_tokens": params.max_tokens,
        "gen_ai.request.temperature": params.temperature,
        "gen_ai.request.top_p": params.top_p,
        "gen_ai.request.top_k": params.top_k,
        "gen_ai.request.presence_penalty": params.presence_penalty,
        "gen_ai.request.frequency_penalty": params.frequency_penalty,
        "gen_ai.request.seed": params.seed,
        "gen_ai.request.stop_sequences": list(params.stop) or None,
    }
    return {name: value for name, value in values.items() if value is not None}


def usage_attributes(usage: Usage) -> dict[str, AttributeValue]:
    """`gen_ai.usage.*` attributes of a usage report."""
    return {
        USAGE_INPUT_TOKENS: usage.input_tokens,
        USAGE_OUTPUT_TOKENS: usage.output_tokens,
        USAGE_CACHE_READ_INPUT_TOKENS: usage.cached_input_tokens,
        USAGE_CACHE_CREATION_INPUT_TOKENS: usage.cache_write_input_tokens,
        USAGE_REASONING_OUTPUT_TOKENS: usage.reasoning_tokens,
    }
