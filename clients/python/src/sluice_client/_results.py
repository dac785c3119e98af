"""What calls return: a `Reply` folded from a Chat or Complete stream, and
`Embeddings`."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

import grpc

from sluice_client._errors import InternalError
from sluice_client.v1 import gateway_pb2 as pb


class FinishReason(enum.StrEnum):
    """Why the model stopped: the name of `sluice.v1.FinishReason` without its
    prefix. Members are strings, so `reply.finish_reason == "STOP"` holds."""

    UNSPECIFIED = "UNSPECIFIED"
    STOP = "STOP"
    """Natural end, or a stop sequence."""
    LENGTH = "LENGTH"
    """The token limit was reached."""
    TOOL_CALLS = "TOOL_CALLS"
    """The model called tools; see `Reply.tool_calls`."""
    CONTENT_FILTER = "CONTENT_FILTER"
    """The provider's safety filter stopped the reply."""
    OTHER = "OTHER"
    """Any other reason; see `Reply.provider_reason`."""

    @classmethod
    def from_proto(cls, value: pb.FinishReason.ValueType) -> FinishReason:
        try:
            name = pb.FinishReason.Name(value)
        except ValueError:
            # A reason newer than this client: OTHER is its meaning here.
            return cls.OTHER
        return cls(name.removeprefix("FINISH_REASON_"))


@dataclass(frozen=True)
class Usage:
    """Token counts of a call, as the provider reported them."""

    input_tokens: int = 0
    """All input tokens, cached ones included."""
    output_tokens: int = 0
    """All output tokens, reasoning ones included."""
    cached_input_tokens: int = 0
    """Input tokens served from the provider's prompt cache."""
    reasoning_tokens: int = 0
    """Output tokens spent on reasoning."""
    unreported: bool = False
    """True when the provider reported no usage: the zeros are not counts."""

    @classmethod
    def from_proto(cls, usage: pb.Usage) -> Usage:
        return cls(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            unreported=usage.unreported,
        )


@dataclass(frozen=True)
class ToolCall:
    """A complete call of a tool by the model."""

    id: str
    name: str
    arguments: str
    """The arguments as JSON object text."""

    def parsed_arguments(self) -> dict[str, Any]:
        """The arguments as a dict; {} when the model sent none.

        Raises ValueError when they are not a JSON object (a model may emit
        broken JSON: handle it as the model's mistake, not the gateway's).
        """
        parsed = json.loads(self.arguments) if self.arguments.strip() else {}
        if not isinstance(parsed, dict):
            raise ValueError(f"arguments of tool call {self.id!r} are not a JSON object")
        return parsed


@dataclass(frozen=True)
class Attempt:
    """One upstream attempt the gateway made for a call."""

    target: str
    """The target as "provider/model"."""
    target_index: int
    outcome: str
    """SUCCESS, FAILURE, TIMEOUT or SKIPPED (its circuit breaker was open)."""
    duration: float
    """Seconds."""
    error: str
    """Why it failed ("STATUS: message"); empty when it succeeded."""

    @classmethod
    def from_proto(cls, attempt: pb.Attempt) -> Attempt:
        return cls(
            target=attempt.target,
            target_index=attempt.target_index,
            outcome=pb.AttemptOutcome.Name(attempt.outcome).removeprefix("ATTEMPT_OUTCOME_"),
            duration=attempt.duration.ToTimedelta().total_seconds(),
            error=attempt.error,
        )


@dataclass(frozen=True)
class Reply:
    """A complete reply, folded from the events of a Chat or Complete stream."""

    id: str
    """The upstream's response id."""
    model: str
    """The model that answered, as the upstream names it."""
    provider: str
    """The provider of the answering target, e.g. "openai"."""
    route: str
    text: str
    reasoning: str
    """Reasoning ("thinking") text, for models that stream it."""
    tool_calls: tuple[ToolCall, ...]
    """The model's tool calls, in the order of their stream index."""
    finish_reason: FinishReason
    provider_reason: str
    """The provider's own word for why it stopped, e.g. "end_turn"."""
    usage: Usage
    attempts: tuple[Attempt, ...] = ()
    """The gateway's upstream attempts, in order; the last one answered
    (empty for a cache hit)."""
    cache_hit: bool = False
    """The answer was replayed from the gateway's response cache."""


@dataclass
class _PartialToolCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ReplyBuilder:
    """Folds the events of one Chat or Complete stream into a `Reply`.

    `Client.chat` uses it; use it yourself to show a stream as it arrives and
    still get the `Reply` at its end:

        builder = ReplyBuilder()
        for event in client.chat_stream("chat", "Hi"):
            builder.add(event)
            print(event.delta.text, end="")
        reply = builder.reply()
    """

    def __init__(self) -> None:
        self._start = pb.Start()
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._tool_calls: dict[int, _PartialToolCall] = {}
        self._usage = pb.Usage()
        self._finish: pb.Finish | None = None

    def add(self, response: pb.ChatResponse | pb.CompleteResponse) -> None:
        """Take in the next event of the stream."""
        # Events this client does not know (a newer server's) are skipped.
        match response.WhichOneof("event"):
            case "start":
                self._start = response.start
            case "delta":
                self._add_delta(response.delta)
            case "usage":
                self._usage = response.usage
            case "finish":
                self._finish = response.finish

    def _add_delta(self, delta: pb.Delta) -> None:
        match delta.WhichOneof("content"):
            case "text":
                self._text.append(delta.text)
            case "reasoning":
                self._reasoning.append(delta.reasoning)
            case "tool_call":
                fragment = delta.tool_call
                call = self._tool_calls.setdefault(fragment.index, _PartialToolCall())
                # Only a call's first fragment must carry its id and name.
                call.id = call.id or fragment.id
                call.name = call.name or fragment.name
                call.arguments.append(fragment.arguments)

    def reply(self) -> Reply:
        """The reply of the stream taken in so far.

        Raises InternalError when the stream had no finish event: the server
        ends every failed stream with an error status, so a stream that ends
        without `finish` was cut short and its reply is not complete.
        """
        if self._finish is None:
            raise InternalError(
                grpc.StatusCode.INTERNAL,
                "the stream ended without a finish event",
                reason="STREAM_INCOMPLETE",
            )
        return Reply(
            id=self._start.id,
            model=self._start.model,
            provider=self._start.provider,
            route=self._start.route,
            text="".join(self._text),
            reasoning="".join(self._reasoning),
            tool_calls=tuple(
                ToolCall(call.id, call.name, "".join(call.arguments))
                for _, call in sorted(self._tool_calls.items())
            ),
            finish_reason=FinishReason.from_proto(self._finish.reason),
            provider_reason=self._finish.provider_reason,
            usage=Usage.from_proto(self._usage),
            attempts=tuple(Attempt.from_proto(a) for a in self._finish.attempts),
            cache_hit=self._start.cache_hit,
        )


@dataclass(frozen=True)
class Embeddings:
    """The answer of an Embed call."""

    vectors: list[list[float]]
    """One vector per input, in input order."""
    model: str
    """The model that answered, as the upstream names it."""
    provider: str
    """The provider of the answering target, e.g. "openai"."""
    route: str
    """The route the call was made on."""
    usage: Usage

    @classmethod
    def from_proto(cls, response: pb.EmbedResponse) -> Embeddings:
        return cls(
            vectors=[list(embedding.values) for embedding in response.embeddings],
            model=response.model,
            provider=response.provider,
            route=response.route,
            usage=Usage.from_proto(response.usage),
        )
