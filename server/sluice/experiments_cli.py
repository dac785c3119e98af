"""`sluice experiments show ROUTE`: a route's experiment results as a table,
from a running gateway's GetExperiment."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

from sluice.config.periods import parse_period
from sluice.health_probe import DEFAULT_ADDRESS, DEFAULT_TIMEOUT
from sluice_client.v1 import gateway_pb2 as pb
from sluice_client.v1 import gateway_pb2_grpc as pb_grpc

KEY_VARIABLE = "SLUICE_API_KEY"
_COLUMNS = ("variant", "calls", "errors", "share", "ttft p50", "ttft p95", "out tok", "$/call")


def add_experiments_command(commands: argparse._SubParsersAction[Any]) -> None:
    experiments = commands.add_parser("experiments", help="a running gateway's experiments")
    actions = experiments.add_subparsers(dest="experiments_command", required=True)
    show = actions.add_parser("show", help="print a route's results per variant")
    show.add_argument("route")
    show.add_argument("--address", default=DEFAULT_ADDRESS, help=f"default {DEFAULT_ADDRESS}")
    show.add_argument("--window", help="how far back, e.g. 'hour' or '30 minutes' (default: all)")
    show.add_argument("--key", help=f"API key (default: ${KEY_VARIABLE}, out of shell history)")
    show.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait")


def run_experiments_command(args: argparse.Namespace) -> int:
    request = pb.GetExperimentRequest(route=args.route)
    if args.window:
        try:
            seconds = parse_period(args.window)
        except ValueError as error:
            print(f"sluice: --window: {error}", file=sys.stderr)
            return 2
        request.window.CopyFrom(Duration(seconds=int(seconds), nanos=int(seconds % 1 * 1e9)))
    key = args.key or os.environ.get(KEY_VARIABLE)
    metadata = (("authorization", f"Bearer {key}"),) if key else None
    with grpc.insecure_channel(args.address) as channel:
        try:
            response = pb_grpc.GatewayServiceStub(channel).GetExperiment(
                request, metadata=metadata, timeout=args.timeout
            )
        except grpc.RpcError as error:
            print(f"sluice: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    print(results_table(response))
    return 0


def results_table(response: pb.GetExperimentResponse) -> str:
    rows: list[tuple[str, ...]] = [_COLUMNS]
    for v in response.variants:
        rows.append(
            (
                v.name,
                str(v.calls),
                str(v.errors),
                f"{v.traffic_share:.0%}",
                f"{v.ttft_p50_seconds:g}s",
                f"{v.ttft_p95_seconds:g}s",
                f"{v.output_tokens_mean:.1f}",
                f"{v.cost_per_call:.6f}",
            )
        )
    lines = _aligned(rows)
    for v in response.variants:
        for item in v.feedback:
            lines.append(
                f"{v.name} {item.name}: n={item.count} mean={item.mean:.4g} "
                f"95% CI [{item.ci_low:.4g}, {item.ci_high:.4g}]"
            )
    if response.leader:
        lines.append(
            f"leader on {response.metric}: {response.leader} "
            f"(probability best {response.leader_confidence:.0%})"
        )
    return "\n".join(lines)


def _aligned(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
