"""The JSON lines stream of AWS's Large Model Inference (LMI, DJL Serving)
containers, which SageMaker JumpStart deploys: its rolling-batch schema
(djl-serving docs, "LMI handlers Inference API Schema").

Request: `{"inputs": "<prompt>", "parameters": {...}, "stream": true}`.
Answer (`application/jsonlines`): one JSON object a line, each
`{"token": {"id", "text", "log_prob"[, "special_token": true]}}`; the last
line also carries the whole `generated_text` and, since the request asks
for them, `details` {`finish_reason`, `generated_tokens`, `inputs`}. An
error during generation is a last line whose `details.finish_reason` is
`"error"` (its token may say why in `error_msg`). The prompt's token count
is never given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from sluice import errors
from sluice.domain import (
    Event,
    Finish,
    FinishReason,
    GenerationParams,
    Start,
    TextDelta,
    Usage,
)
from sluice.providers.ndjson import NDJSONStreamDecoder

if TYPE_CHECKING:
    from sluice.providers.wire import JSON

_FINISH_REASONS = {
    "eos_token": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "length": FinishReason.LENGTH,
}

# LMI answers a failure of the model's handler with code 424; a generation
# error in the stream stands for the same.
_GENERATION_ERROR_STATUS = 424


def lmi_parameters(params: GenerationParams) -> JSON:
    """The set parameters in LMI's common names (every backend takes them).
    Penalties and reasoning have no common LMI name."""
    fields: JSON = {
        "max_new_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
        "stop_sequences": list(params.stop) or None,
        "seed": params.seed,
    }
    parameters = {key: value for key, value in fields.items() if value is not None}
    # LMI <= 0.31 samples only when asked to (later versions infer it).
    if {"temperature", "top_p", "top_k"} & parameters.keys():
        parameters["do_sample"] = True
    # Without it the last line has no finish reason and no token count.
    parameters["details"] = True
    return parameters


class LMIJsonLinesDecoder(NDJSONStreamDecoder):
    """Sans-I/O: LMI JSON lines in, domain events out. `provider` names the
    upstream in errors."""

    def __init__(self, model: str, provider: str) -> None:
        super().__init__()
        self.provider = provider
        self._model = model  # the stream names no model and no id
        self._started = False

    def _end_of_body(self) -> list[Event]:
        raise errors.upstream_protocol_error(
            self.provider, "stream ended before the line with generated_text"
        )

    def _handle(self, line: bytes, events: list[Event]) -> None:
        payload = orjson.loads(line)
        token = payload["token"]
        details = payload.get("details") or {}
        if details.get("finish_reason") == "error":
            message = str(token.get("error_msg") or "generation failed")
            raise errors.upstream_http_error(self.provider, _GENERATION_ERROR_STATUS, message)
        if not self._started:
            self._started = True
            events.append(Start("", self._model))
        # Special tokens (</s>, <|eot_id|>...) are markup, not text.
        if not token.get("special_token") and (text := token["text"]):
            events.append(TextDelta(text))
        if "generated_text" in payload:
            self.done = True
            events += _end(details)


def _end(details: JSON) -> list[Event]:
    reason = str(details.get("finish_reason") or "")
    generated = details.get("generated_tokens")
    # Never the prompt's count; without details, not even the answer's.
    usage = Usage(output_tokens=generated or 0, reported=False)
    return [usage, Finish(_FINISH_REASONS.get(reason, FinishReason.OTHER), reason)]
