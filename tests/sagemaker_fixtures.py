"""How the SageMaker InvokeEndpointWithResponseStream samples in
tests/fixtures/providers/ were made (see SOURCES.md): recorded container
streams wrapped in `PayloadPart` eventstream frames, and exception frames of
the service model's shapes. `python -m tests.sagemaker_fixtures` writes
them; tests/unit/providers/test_sagemaker.py checks the committed bytes are
what this builds."""

from __future__ import annotations

import json
from typing import Any

from tests.eventstream import frame
from tests.recordings import PROVIDERS_DIR, recording

# The headers of a PayloadPart event, in the order AWS writes an event's
# (as in the Bedrock recordings).
PAYLOAD_PART = {
    ":event-type": "PayloadPart",
    ":content-type": "application/octet-stream",
    ":message-type": "event",
}


def payload_part(data: bytes) -> bytes:
    return frame(PAYLOAD_PART, data)


def exception(kind: str, members: dict[str, str]) -> bytes:
    headers = {
        ":exception-type": kind,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return frame(headers, json.dumps(members, separators=(",", ":")).encode())


def events(body: bytes, separator: bytes) -> list[bytes]:
    """The container's writes: one SSE event (or JSON line) each, with its
    separator, as TGI, vLLM and LMI flush them."""
    parts = body.split(separator)
    return [part + separator for part in parts[:-1] if part] + ([parts[-1]] if parts[-1] else [])


def wrapped(body: bytes, separator: bytes, *, split_last: bool = True) -> bytes:
    """Each write in a PayloadPart; the last one cut in two parts, as
    SageMaker may cut a write anywhere (its docs and SDK helpers say so)."""
    writes = events(body, separator)
    if split_last:
        last = writes.pop()
        writes += [last[: len(last) // 2], last[len(last) // 2 :]]
    return b"".join(payload_part(write) for write in writes)


# LMI's documented jsonlines stream ("LMI handlers Inference API Schema"),
# written as its _jsonlines_output_formatter does: json.dumps(...) + "\n".
LMI_TOKENS = [
    {"id": 304, "text": "Deep ", "log_prob": -0.052432529628276825},
    {"id": 11157, "text": " Learning", "log_prob": -1.2865009307861328},
    {"id": 278, "text": " is", "log_prob": -0.007458459585905075},
]
LMI_LAST_TOKEN = {"id": 5972, "text": " field.", "log_prob": -0.6950479745864868}


def lmi_lines(*, error: bool = False) -> bytes:
    lines: list[dict[str, Any]] = [{"token": token} for token in LMI_TOKENS]
    if error:
        # The documented line of an error during generation.
        lines.append(
            {
                "token": {"id": -1, "text": "", "log_prob": -1, "special_token": True},
                "generated_text": "",
                "details": {"finish_reason": "error", "generated_tokens": None, "inputs": None},
            }
        )
    else:
        tokens = [*LMI_TOKENS, LMI_LAST_TOKEN]
        lines.append(
            {
                "token": LMI_LAST_TOKEN,
                "generated_text": "".join(str(token["text"]) for token in tokens),
                "details": {
                    "finish_reason": "length",
                    "generated_tokens": len(tokens),
                    "inputs": "What is Deep Learning?",
                },
            }
        )
    return b"".join(json.dumps(line, ensure_ascii=False).encode() + b"\n" for line in lines)


def samples() -> dict[str, bytes]:
    tgi = recording("tgi_generate_stream.txt")
    vllm = recording("vllm_chat_stream.txt")
    return {
        "sagemaker_tgi_stream.bin": wrapped(tgi, b"\n\n"),
        "sagemaker_openai_chat_stream.bin": wrapped(vllm, b"\n\n"),
        "sagemaker_openai_completions_stream.bin": wrapped(
            recording("openai_completions_stream.txt"), b"\n\n"
        ),
        "sagemaker_jsonlines_stream.bin": wrapped(lmi_lines(), b"\n"),
        "sagemaker_jsonlines_error_midstream.bin": wrapped(
            lmi_lines(error=True), b"\n", split_last=False
        ),
        # The first two token events, then the model overran SageMaker's time.
        "sagemaker_model_stream_error.bin": b"".join(
            payload_part(write) for write in events(tgi, b"\n\n")[:2]
        )
        + exception(
            "ModelStreamError",
            {
                "Message": "The model failed to finish sending the response within the "
                "timeout period allowed by Amazon SageMaker AI.",
                "ErrorCode": "ModelInvocationTimeExceeded",
            },
        ),
        # The first content chunks, then SageMaker's own failure.
        "sagemaker_internal_stream_failure.bin": b"".join(
            payload_part(write) for write in events(vllm, b"\n\n")[:2]
        )
        + exception(
            "InternalStreamFailure",
            {
                "Message": "The stream processing failed because of an unknown error, "
                "exception or failure. Try your request again."
            },
        ),
    }


if __name__ == "__main__":
    for name, body in samples().items():
        (PROVIDERS_DIR / name).write_bytes(body)
