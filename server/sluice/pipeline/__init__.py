"""The call pipeline: small stages, each wrapping the stream of the next.

A `Stage` is `(call, next) -> AsyncGenerator[Event, None]`, the shape of ASGI
middleware: it may answer by itself, watch events pass, or call `next`
several times. Adding a concern means adding a stage.
"""

from sluice.pipeline.call import Call, Caller, Next, Stage, build_pipeline

__all__ = ["Call", "Caller", "Next", "Stage", "build_pipeline"]
