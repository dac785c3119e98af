"""Provider-neutral requests and stream events. No I/O, no protobuf.

A call's answer is always a stream of events: `Start`, then any of
`TextDelta` / `ReasoningDelta` / `ReasoningSignature` / `RedactedReasoning` /
`ToolCallDelta` (or one `Embeddings`), then
`Usage`, then `Finish`. Failures are `GatewayError` exceptions (errors.py),
never a quiet end of stream.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

_T = TypeVar("_T")


class Role(enum.Enum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class Operation(enum.Enum):
    """What a call asks for; each route type answers one operation."""

    CHAT = "llm/v1/chat"
    COMPLETION = "llm/v1/completions"
    EMBEDDING = "llm/v1/embeddings"


class FinishReason(enum.Enum):
    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    CONTENT_FILTER = "content_filter"
    OTHER = "other"


class ToolChoiceMode(enum.Enum):
    AUTO = "auto"
    NONE = "none"
    REQUIRED = "required"


class ReasoningEffort(enum.Enum):
    """Values as OpenAI's `reasoning_effort` spells them."""

    MINIMAL = "minimal"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class ResponseFormatType(enum.Enum):
    TEXT = "text"
    JSON_OBJECT = "json_object"
    JSON_SCHEMA = "json_schema"


class CacheTtl(enum.Enum):
    """How long a provider keeps a cached prompt prefix."""

    DEFAULT = "default"  # the provider's own (Anthropic: 5 minutes)
    FIVE_MINUTES = "5m"
    ONE_HOUR = "1h"


# --- request content ---------------------------------------------------------
#
# Every part (and Tool) has `cache`: a prompt-cache breakpoint after it, with
# its TTL, for providers that cache on request; None when it marks none.


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str
    cache: CacheTtl | None = None


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image inline (`data` + `media_type`) or by `url`."""

    data: bytes = b""
    url: str = ""
    media_type: str = ""
    cache: CacheTtl | None = None


@dataclass(frozen=True, slots=True)
class ToolCallPart:
    id: str
    name: str
    arguments: str  # JSON object text
    signature: str = ""  # the provider's (Gemini thoughtSignature), sent back as it came
    cache: CacheTtl | None = None


@dataclass(frozen=True, slots=True)
class ToolResultPart:
    tool_call_id: str
    content: str
    is_error: bool = False
    cache: CacheTtl | None = None


@dataclass(frozen=True, slots=True)
class ReasoningPart:
    """A block of the model's earlier reasoning, sent back as it streamed:
    text closed by the provider's signature, or opaque redacted data."""

    text: str = ""
    signature: str = ""
    redacted_data: str = ""
    cache: CacheTtl | None = None


Part = TextPart | ImagePart | ToolCallPart | ToolResultPart | ReasoningPart


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    parts: tuple[Part, ...]
    name: str = ""

    @property
    def text(self) -> str:
        """The concatenated text parts."""
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    parameters: Mapping[str, Any]  # JSON Schema
    cache: CacheTtl | None = None


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """Either a mode or one named tool."""

    mode: ToolChoiceMode | None = None
    tool_name: str = ""


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """Sampling parameters; None means "not set here"."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    reasoning_budget_tokens: int | None = None
    reasoning_effort: ReasoningEffort | None = None

    def over(self, defaults: GenerationParams) -> GenerationParams:
        """These params, with unset fields taken from `defaults`. Budget and
        effort are one setting: a request that sets either takes neither
        from the route, so a route's budget never outranks a caller's effort."""
        if defaults == UNSET_GENERATION:
            return self  # most routes and targets set no defaults: nothing to merge
        reasoning = self if self._sets_reasoning else defaults
        return GenerationParams(
            max_tokens=_first(self.max_tokens, defaults.max_tokens),
            temperature=_first(self.temperature, defaults.temperature),
            top_p=_first(self.top_p, defaults.top_p),
            top_k=_first(self.top_k, defaults.top_k),
            stop=self.stop or defaults.stop,
            presence_penalty=_first(self.presence_penalty, defaults.presence_penalty),
            frequency_penalty=_first(self.frequency_penalty, defaults.frequency_penalty),
            seed=_first(self.seed, defaults.seed),
            reasoning_budget_tokens=reasoning.reasoning_budget_tokens,
            reasoning_effort=reasoning.reasoning_effort,
        )

    @property
    def _sets_reasoning(self) -> bool:
        return self.reasoning_budget_tokens is not None or self.reasoning_effort is not None


# Every parameter unset: what a call that sets none carries (one value serves all).
UNSET_GENERATION = GenerationParams()


def _first(value: _T | None, default: _T | None) -> _T | None:
    return default if value is None else value


@dataclass(frozen=True, slots=True)
class CacheControl:
    """How one request uses its route's response cache."""

    bypass: bool = False  # do not answer from the cache
    no_store: bool = False  # do not store this answer
    ttl: float | None = None  # seconds to keep this answer, over the route's ttl
    semantic: bool | None = None  # False: no semantic lookup nor indexing


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """The shape the reply must have; `schema` only for JSON_SCHEMA."""

    type: ResponseFormatType
    schema_name: str = "response"
    schema: Mapping[str, Any] = field(default_factory=dict)  # JSON Schema
    strict: bool = False


@dataclass(frozen=True, slots=True)
class ChatRequest:
    route: str
    messages: tuple[Message, ...]
    generation: GenerationParams = GenerationParams()
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    cache: CacheControl = CacheControl()
    response_format: ResponseFormat | None = None
    # Extra body fields by provider name (provider_options.py).
    provider_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Whom the call is for, as the route's `end_user` settles it ("": no one).
    end_user: str = ""
    # Values of the placeholders in the route's variant prompts (variants.py).
    variables: Mapping[str, str] = field(default_factory=dict)

    operation = Operation.CHAT


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    route: str
    prompt: str
    generation: GenerationParams = GenerationParams()
    # Text after the insertion point (fill-in-the-middle).
    suffix: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    cache: CacheControl = CacheControl()

    operation = Operation.COMPLETION


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    route: str
    inputs: tuple[str, ...]
    dimensions: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    operation = Operation.EMBEDDING


Request = ChatRequest | CompletionRequest | EmbeddingRequest


# --- stream events -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    """Opens a stream. Adapters set id and model; the gateway adds the rest."""

    id: str
    model: str
    provider: str = ""
    route: str = ""
    cache_hit: bool = False
    # The variant that answered (Target.name).
    variant: str = ""
    # Sluice's id of the call, stamped as the event leaves the gateway: never
    # stored with a cached answer.
    call_id: str = ""
    # Set only on a semantic hit: the cosine similarity, in [0, 1].
    cache_similarity: float | None = None


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningSignature:
    """The provider's signature of the reasoning streamed since the last one:
    it closes one reasoning block."""

    signature: str


@dataclass(frozen=True, slots=True)
class RedactedReasoning:
    """A whole reasoning block the provider encrypted: opaque data."""

    data: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of tool call `index`; the first one carries id and name."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""
    signature: str = ""  # the provider's signature of the call, on its first fragment


@dataclass(frozen=True, slots=True)
class Embeddings:
    vectors: tuple[tuple[float, ...], ...]


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    # Input tokens written to the prompt cache; part of input_tokens.
    cache_write_input_tokens: int = 0
    # False when the provider did not report (all of) the usage: the counts
    # it did not report are zero, never estimates.
    reported: bool = True


class AttemptOutcome(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    TIMEOUT = "timeout"
    SKIPPED = "skipped"  # the target's circuit breaker was open


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One try of one target."""

    target: str  # "provider/model"
    target_index: int
    outcome: AttemptOutcome
    duration: float  # seconds
    error: str = ""  # "STATUS: message" when it failed


@dataclass(frozen=True, slots=True)
class Finish:
    reason: FinishReason
    provider_reason: str = ""
    # Every upstream attempt of the call, in order (set by the gateway).
    attempts: tuple[AttemptRecord, ...] = ()


Event = (
    Start
    | TextDelta
    | ReasoningDelta
    | ReasoningSignature
    | RedactedReasoning
    | ToolCallDelta
    | Embeddings
    | Usage
    | Finish
)
