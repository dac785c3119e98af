"""Feedback and GetExperiment messages <-> the experiments service, with the
bounds on what a caller may send."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sluice.config.schema import FEEDBACK_NAME_PATTERN
from sluice.errors import invalid_argument
from sluice.experiments.service import ExperimentResults
from sluice.state.experiments import FeedbackValue
from sluice_client.v1 import gateway_pb2 as pb

# Bounds on caller-sent feedback (README "Limits").
MAX_CALL_ID_CHARS = 128
MAX_TEXT_CHARS = 1024
MAX_COMMENT_CHARS = 1024
_NAME = re.compile(FEEDBACK_NAME_PATTERN)


@dataclass(frozen=True, slots=True)
class Feedback:
    call_id: str
    name: str
    value: FeedbackValue
    comment: str


def feedback(request: pb.FeedbackRequest) -> Feedback:
    """The request checked; a call id too long to be one is left for the
    lookup to find unknown."""
    if not request.call_id:
        raise invalid_argument("call_id", "call_id is required")
    if not _NAME.match(request.name):
        raise invalid_argument(
            "name",
            "name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    if len(request.comment) > MAX_COMMENT_CHARS:
        raise invalid_argument("comment", f"comment is longer than {MAX_COMMENT_CHARS} characters")
    return Feedback(
        request.call_id[: MAX_CALL_ID_CHARS + 1], request.name, _value(request), request.comment
    )


def _value(request: pb.FeedbackRequest) -> FeedbackValue:
    match request.WhichOneof("value"):
        case "number_value":
            if not math.isfinite(request.number_value):
                raise invalid_argument("number_value", "number_value must be finite")
            return FeedbackValue("number", request.number_value)
        case "bool_value":
            return FeedbackValue("bool", float(request.bool_value))
        case "text_value":
            if len(request.text_value) > MAX_TEXT_CHARS:
                raise invalid_argument(
                    "text_value", f"text_value is longer than {MAX_TEXT_CHARS} characters"
                )
            return FeedbackValue("text", None, request.text_value)
    raise invalid_argument("value", "one of number_value, bool_value or text_value is required")


def window(request: pb.GetExperimentRequest) -> float | None:
    """The window in seconds; None when unset (everything retained)."""
    if not request.HasField("window"):
        return None
    seconds = request.window.seconds + request.window.nanos / 1e9
    if seconds <= 0:
        raise invalid_argument("window", "window must be positive (or unset for everything)")
    return seconds


def experiment_response(results: ExperimentResults) -> pb.GetExperimentResponse:
    return pb.GetExperimentResponse(
        variants=[
            pb.VariantResult(
                name=variant.name,
                calls=variant.calls,
                errors=variant.errors,
                feedback=[
                    pb.FeedbackResult(
                        name=item.name,
                        count=item.count,
                        mean=item.mean,
                        ci_low=item.ci_low,
                        ci_high=item.ci_high,
                    )
                    for item in variant.feedback
                ],
                traffic_share=results.traffic_shares.get(variant.name, 0.0),
                ttft_p50_seconds=variant.ttft_p50,
                ttft_p95_seconds=variant.ttft_p95,
                output_tokens_mean=variant.output_tokens_mean,
                cost_per_call=variant.cost_per_call,
            )
            for variant in results.variants
        ],
        leader=results.leader,
        leader_confidence=results.leader_confidence,
        metric=results.metric,
    )
