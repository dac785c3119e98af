"""Domain events -> proto response messages."""

from __future__ import annotations

from sluice import domain
from sluice_client.v1 import gateway_pb2 as pb

_FINISH_REASONS = {
    domain.FinishReason.STOP: pb.FINISH_REASON_STOP,
    domain.FinishReason.LENGTH: pb.FINISH_REASON_LENGTH,
    domain.FinishReason.TOOL_CALLS: pb.FINISH_REASON_TOOL_CALLS,
    domain.FinishReason.CONTENT_FILTER: pb.FINISH_REASON_CONTENT_FILTER,
    domain.FinishReason.OTHER: pb.FINISH_REASON_OTHER,
}
_ATTEMPT_OUTCOMES = {
    domain.AttemptOutcome.SUCCESS: pb.ATTEMPT_OUTCOME_SUCCESS,
    domain.AttemptOutcome.FAILURE: pb.ATTEMPT_OUTCOME_FAILURE,
    domain.AttemptOutcome.TIMEOUT: pb.ATTEMPT_OUTCOME_TIMEOUT,
    domain.AttemptOutcome.SKIPPED: pb.ATTEMPT_OUTCOME_SKIPPED,
}
ROUTE_TYPES = {
    domain.Operation.CHAT: pb.ROUTE_TYPE_CHAT,
    domain.Operation.COMPLETION: pb.ROUTE_TYPE_COMPLETIONS,
    domain.Operation.EMBEDDING: pb.ROUTE_TYPE_EMBEDDINGS,
}


def chat_response(event: domain.Event) -> pb.ChatResponse:
    match event:
        case domain.TextDelta(text):
            return pb.ChatResponse(delta=pb.Delta(text=text))
        case domain.ReasoningDelta(text):
            return pb.ChatResponse(delta=pb.Delta(reasoning=text))
        case domain.ReasoningSignature(signature):
            return pb.ChatResponse(delta=pb.Delta(reasoning_signature=signature))
        case domain.RedactedReasoning(data):
            return pb.ChatResponse(delta=pb.Delta(reasoning_redacted=data))
        case domain.ToolCallDelta(index, call_id, name, arguments, signature):
            return pb.ChatResponse(
                delta=pb.Delta(
                    tool_call=pb.ToolCallDelta(
                        index=index,
                        id=call_id,
                        name=name,
                        arguments=arguments,
                        signature=signature,
                    )
                )
            )
        case domain.Start():
            return pb.ChatResponse(start=start(event))
        case domain.Usage():
            return pb.ChatResponse(usage=usage(event))
        case domain.Finish():
            return pb.ChatResponse(finish=finish(event))
    raise TypeError(f"no chat response for {type(event).__name__}")


def completion_response(event: domain.Event) -> pb.CompleteResponse:
    match event:
        case domain.TextDelta(text):
            return pb.CompleteResponse(delta=pb.Delta(text=text))
        case domain.ReasoningDelta(text):
            # Chat-based providers answer completions; thinking models reason there too.
            return pb.CompleteResponse(delta=pb.Delta(reasoning=text))
        case domain.ReasoningSignature(signature):
            return pb.CompleteResponse(delta=pb.Delta(reasoning_signature=signature))
        case domain.RedactedReasoning(data):
            return pb.CompleteResponse(delta=pb.Delta(reasoning_redacted=data))
        case domain.Start():
            return pb.CompleteResponse(start=start(event))
        case domain.Usage():
            return pb.CompleteResponse(usage=usage(event))
        case domain.Finish():
            return pb.CompleteResponse(finish=finish(event))
    raise TypeError(f"no completion response for {type(event).__name__}")


def start(event: domain.Start) -> pb.Start:
    return pb.Start(
        id=event.id,
        model=event.model,
        provider=event.provider,
        route=event.route,
        cache_hit=event.cache_hit,
        variant=event.variant,
        call_id=event.call_id,
        cache_similarity=event.cache_similarity,
    )


def usage(event: domain.Usage) -> pb.Usage:
    return pb.Usage(
        input_tokens=event.input_tokens,
        output_tokens=event.output_tokens,
        cached_input_tokens=event.cached_input_tokens,
        reasoning_tokens=event.reasoning_tokens,
        cache_write_input_tokens=event.cache_write_input_tokens,
        unreported=not event.reported,
    )


def finish(event: domain.Finish) -> pb.Finish:
    return pb.Finish(
        reason=_FINISH_REASONS[event.reason],
        provider_reason=event.provider_reason,
        attempts=[attempt(record) for record in event.attempts],
    )


def attempt(record: domain.AttemptRecord) -> pb.Attempt:
    message = pb.Attempt(
        target=record.target,
        target_index=record.target_index,
        outcome=_ATTEMPT_OUTCOMES[record.outcome],
        error=record.error,
    )
    message.duration.FromNanoseconds(round(record.duration * 1e9))
    return message
