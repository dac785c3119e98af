"""Many Chat calls opened together on one grpc.aio channel: what a gateway
does with a burst (all at once), or with thousands of streams held open
(opened over --ramp seconds, on the paced upstream's slow stream). Run as its
own process, pinned by the harness to the client core; prints one JSON
LoadResult.

Every call ends one way: OK (its stream checked as in the closed loop), a
refusal (RESOURCE_EXHAUSTED or UNAVAILABLE) that did or did not carry a
google.rpc.RetryInfo, CANCELLED, another status, or a wrong stream ("BAD").
Errors are everything but OK and the refusals with a retry hint: a call lost
in a burst is one. `peak_open` is the most streams open at once (from their
first delta to their end).

Run: python -m bench.burst --target 127.0.0.1:PORT --route R --calls 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from bench import procfs, workload
from bench.loadgen import CHAT_METHOD, BadResponseError, Reply, checked_chat, parse_watch
from bench.stats import LoadResult, distribution

REFUSALS = frozenset({"RESOURCE_EXHAUSTED", "UNAVAILABLE"})
_RAMP_BATCH = 100  # calls opened together when they are spread over a ramp


def has_retry_info(error: grpc.aio.AioRpcError) -> bool:
    """Whether the status details (grpc-status-details-bin) hold a RetryInfo."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            try:
                details = status_pb2.Status.FromString(value).details
            except DecodeError:
                return False
            return any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in details)
    return False


def _peak_open(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    open_now = peak = 0
    for _, step in edges:
        open_now += step
        peak = max(peak, open_now)
    return peak


def _error_sample(statuses: Counter[str], hinted: int, samples: dict[str, str]) -> str:
    """One message of each status that counts as an error."""
    refusals = sum(statuses[status] for status in REFUSALS)
    unhinted = [status for status in REFUSALS if statuses[status]] if refusals > hinted else []
    lost = [status for status in statuses if status not in {"OK", *REFUSALS}] + unhinted
    return "; ".join(samples[status] for status in lost if status in samples)


async def run(
    *,
    target: str,
    route: str,
    calls: int,
    ramp: float,
    call_timeout: float,
    watch: dict[str, list[int]],
) -> LoadResult:
    channel = grpc.aio.insecure_channel(target)
    chat: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(CHAT_METHOD)
    payloads = workload.chat_payloads(route)
    request = checked_chat(chat, payloads, route, accept_hits=False, timeout=call_timeout)
    statuses: Counter[str] = Counter()
    samples: dict[str, str] = {}
    hinted = 0
    latencies: list[float] = []
    ttfcs: list[float] = []
    spans: list[tuple[float, float]] = []

    async def call() -> None:
        nonlocal hinted
        started = time.perf_counter()
        try:
            reply: Reply = await request()
        except grpc.aio.AioRpcError as error:
            status = error.code().name
            if status in REFUSALS and has_retry_info(error):
                hinted += 1
            samples.setdefault(status, f"{status}: {error.details()}")
        except BadResponseError as error:
            status = "BAD"
            samples.setdefault(status, f"{type(error).__name__}: {error}")
        else:
            status = "OK"
            ended = time.perf_counter()
            latencies.append((ended - started) * 1000)
            if reply.marks:
                ttfcs.append((reply.marks[0][0] - started) * 1000)
                spans.append((reply.marks[0][0], ended))
        statuses[status] += 1

    cpu_before = {name: procfs.total_cpu_seconds(pids) for name, pids in watch.items()}
    client_before = time.process_time()
    began = time.perf_counter()
    tasks: list[asyncio.Task[None]] = []
    try:
        for index in range(calls):
            if ramp and index % _RAMP_BATCH == 0:
                await asyncio.sleep(max(0.0, began + ramp * index / calls - time.perf_counter()))
            tasks.append(asyncio.create_task(call()))
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await channel.close()
    seconds = time.perf_counter() - began
    cpu_after = {name: procfs.total_cpu_seconds(pids) for name, pids in watch.items()}
    return LoadResult(
        requests=statuses["OK"],
        errors=calls - statuses["OK"] - hinted,
        error_sample=_error_sample(statuses, hinted, samples),
        seconds=seconds,
        latency_ms=distribution(latencies),
        ttfc_ms=distribution(ttfcs),
        cpu_seconds={name: cpu_after[name] - cpu_before[name] for name in watch},
        client_cpu_seconds=time.process_time() - client_before,
        client_connections=1,
        cache_hits=0,
        cache_misses=0,
        calls_total=statuses["OK"],
        added_gap_ms=None,
        statuses=dict(statuses),
        retry_hinted=hinted,
        peak_open=_peak_open(spans),
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.burst")
    parser.add_argument("--target", required=True, help="HOST:PORT")
    parser.add_argument("--route", default=workload.CHAT_ROUTE)
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--ramp", type=float, default=0.0, help="open the calls over S seconds")
    parser.add_argument("--timeout", type=float, default=60.0, help="of each call (s)")
    parser.add_argument("--watch", action="append", default=[], help="NAME=PID[,PID...]")
    args = parser.parse_args()
    result = asyncio.run(
        run(
            target=args.target,
            route=args.route,
            calls=args.calls,
            ramp=args.ramp,
            call_timeout=args.timeout,
            watch=parse_watch(args.watch),
        )
    )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
