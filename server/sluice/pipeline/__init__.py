"""The call pipeline: small stages, each wrapping the stream of the next.

A `Stage` is `(call, next) -> EventStream`, the shape of ASGI middleware: it
may answer by itself, pass the call on untouched, or watch events pass.
`call.py` composes them and owns closing. Adding a concern means adding a
stage.
"""

from sluice.pipeline.call import Call, EventStream, Next, Stage, build_pipeline

__all__ = ["Call", "EventStream", "Next", "Stage", "build_pipeline"]
