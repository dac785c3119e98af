"""`python -m bench.telemetry_cost`: what a call's telemetry code costs by itself.

The harness's telemetry rows (`--scenarios telemetry`) measure exporting end to
end. This isolates the telemetry code: one process, pinned to the server core,
makes the telemetry calls the pipeline makes for one streamed chat (the call's
SERVER span, the routing stage, an attempt with its HTTP span and
`traceparent`, seven upstream events, the ends, the metrics) N times, with
the exporters sending to the harness's OTLP sink on the load core. Per call it
reports the CPU of the thread that made the calls (the event loop's, in the
gateway) and of the other threads (the span export thread), for each mode.

In the gateway the same code costs the loop about 2-3x more than here, where it
runs hot in caches (2026-12-05: +0.16 ms a call on the loop under load against
+0.07 here). Read a row as the floor of that row's cost, and as the number a
change to the telemetry code moves.

    python -m bench.telemetry_cost                     # 3 rounds of 30,000 calls a mode
    python -m bench.telemetry_cost --rounds 5 --calls 50000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.otlp_sink import OtlpSink
from bench.procs import BenchError, free_port, pinned, python_argv, python_env
from sluice.config import schema
from sluice.domain import (
    ChatRequest,
    Event,
    Finish,
    FinishReason,
    Message,
    Operation,
    Role,
    Start,
    TextDelta,
    TextPart,
    Usage,
)
from sluice.providers.mock import MockAdapter, MockSettings
from sluice.routes import Target
from sluice.telemetry.call import CallFacts, CallObservation
from sluice.telemetry.core import Telemetry
from sluice.telemetry.setup import build_telemetry

MODES = ("off", "traces", "traces+metrics")
SERVER_CPU, LOAD_CPU = 0, 1
WARMUP_CALLS = 2000
SPANS_PER_CALL = 4  # the call's, the routing stage's, the attempt's and its HTTP request's


def _measure(mode: str, calls: int, endpoint: str, warmup: int = WARMUP_CALLS) -> dict[str, float]:
    """Make `warmup`, then `calls` calls' telemetry in this process; µs a
    call per thread, of the `calls`."""
    if mode == "off":
        telemetry = Telemetry.off()
    else:
        config: dict[str, object] = {
            "traces_exporter": ["otlp"],
            "otlp": {"endpoint": endpoint},
            # The access log costs the same in every mode: it is left out.
            "access_log": {"enabled": False},
        }
        if mode == "traces+metrics":
            config["metrics_exporter"] = ["otlp"]
        telemetry = build_telemetry(schema.TelemetryConfig.model_validate(config), {})
    route, model = "bench-chat", "gpt-4o-mini"
    target = Target(route, model, MockAdapter(MockSettings(provider="mock", name=model)))
    request = ChatRequest(route, (Message(Role.USER, (TextPart("hi"),)),))
    # What the bench upstream's 50 chunks come to, coalesced: a start, four
    # deltas, the usage and the finish.
    events: list[Event] = [
        Start("chatcmpl-1", model),
        *[TextDelta("token " * 12)] * 4,
        Usage(12, 50),
        Finish(FinishReason.STOP, "stop"),
    ]
    facts = CallFacts(Operation.CHAT, route, None, target, 1, 0.0001, 0.01)

    def call() -> None:
        observation = CallObservation(telemetry, "Chat", {"user-agent": "grpc-python"})
        with observation.trace.routing(route) as stage:
            stage.routed(route, "single")
        attempt = observation.trace.attempt(route, target, request, number=1)
        http = attempt.http("POST", "http://127.0.0.1:8080/v1/chat/completions")
        http.headers({"content-type": "application/json"})
        http.response(200)
        for event in events:
            attempt.received(event)
            observation.observe(event)
            attempt.awaiting()
        http.end()
        attempt.end()
        observation.end(facts, None)

    def calls_yielding(count: int) -> None:
        for _ in range(count):
            call()
            # The gateway's loop lets go of the GIL and the core between
            # calls, waiting on its sockets; the export thread runs then.
            os.sched_yield()

    calls_yielding(warmup)
    thread, process = time.thread_time(), time.process_time()
    calls_yielding(calls)
    thread, process = time.thread_time() - thread, time.process_time() - process
    asyncio.run(telemetry.aclose())
    # The two clocks tick apart: with no other thread, the difference is noise about 0.
    others = max(0.0, process - thread)
    return {"loop_us": thread / calls * 1e6, "others_us": others / calls * 1e6}


def _round(mode: str, calls: int, endpoint: str) -> dict[str, float]:
    argv = python_argv("bench.telemetry_cost", "--child", mode, "--calls", str(calls))
    out = subprocess.run(
        pinned(SERVER_CPU, [*argv, "--endpoint", endpoint]),
        # The mode says what is exported: no OTEL_* variable of ours leaks in.
        env={name: value for name, value in python_env().items() if not name.startswith("OTEL_")},
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout
    measured: dict[str, float] = json.loads(out)
    return measured


def _check_exported(spans: int, rounds: int, calls: int) -> None:
    """Raise unless every span made reached the sink: a batch processor
    whose queue filled drops spans, and their export would go unmeasured."""
    traced_modes = len(MODES) - 1
    made = rounds * traced_modes * (WARMUP_CALLS + calls) * SPANS_PER_CALL
    if spans != made:
        raise BenchError(f"the OTLP sink got {spans} spans of the {made} made: some were dropped")


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=30_000)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.child, args.calls, args.endpoint)))
        return
    with tempfile.TemporaryDirectory(prefix="sluice-telemetry-cost-") as workdir:
        sink = OtlpSink(Path(workdir), free_port(), LOAD_CPU)
        sink.wait_ready()
        try:
            # Modes alternate within a round, so that drift spreads over all.
            rounds = [
                {mode: _round(mode, args.calls, sink.endpoint) for mode in MODES}
                for _ in range(args.rounds)
            ]
        finally:
            sink.process.stop()
        _check_exported(sink.counts()["spans"], args.rounds, args.calls)
    print(f"telemetry code per call, µs CPU: median (range) of {args.rounds} rounds")
    print(f"of {args.calls} calls, loop on CPU {SERVER_CPU}, sink on CPU {LOAD_CPU}\n")
    print("| mode | loop thread | other threads | total | total - off |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for mode in MODES:
        loop = [each[mode]["loop_us"] for each in rounds]
        others = [each[mode]["others_us"] for each in rounds]
        total = [a + b for a, b in zip(loop, others, strict=True)]
        added = [
            t - each["off"]["loop_us"] - each["off"]["others_us"]
            for t, each in zip(total, rounds, strict=True)
        ]
        print(
            f"| {mode} | {_spread(loop)} | {_spread(others)} | {_spread(total)} "
            f"| {'-' if mode == 'off' else _spread(added)} |"
        )


if __name__ == "__main__":
    main()
