"""`python -m bench`: run the scenarios on 127.0.0.1 and print a markdown report.

    python -m bench                          # the standard rows, 10 s each (about 3.5 min)
    python -m bench --scenarios echo sluice --duration 5
    python -m bench --scenarios peers        # Sluice beside MLflow's gateway (installs it once)
    python -m bench --scenarios burst        # 2,000 and 10,000 calls at once; 10,000 open streams
    python -m bench --scenarios state        # the cache and limits rows, and their baselines
    python -m bench --scenarios telemetry    # tracing on vs off: the OTLP rows and `sluice`
    python -m bench --scenarios semantic     # a semantic hit vs the upstream call it saves
    python -m bench --concurrency 1,16 --json bench.json

See bench/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

from bench import mlflow_gateway, nginx, paced, redis_server, report
from bench.procs import BenchError, ensure_tool, python_argv, python_env
from bench.scenarios import GROUPS, SCENARIOS, Outcome, Settings, run

_PACKAGES = {
    "nginx": "nginx",
    "wrk": "wrk",
    "h2load": "nghttp2-client",
    "redis-server": "redis-server",
}


def _concurrency(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("give positive integers, e.g. 16 or 1,16")
    return values


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Sluice vs the grpc.aio ceiling vs the upstream."
    )
    parser.add_argument("--duration", type=float, default=10.0, help="measured s/scenario (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured s before it (2)")
    parser.add_argument(
        "--concurrency",
        type=_concurrency,
        default=[16],
        help="concurrent streams (gRPC, one channel) or connections (HTTP); "
        "a comma list runs each level (16)",
    )
    groups = "; ".join(
        f"{name} = {' '.join(rows)}"
        for name, rows in GROUPS.items()
        if name not in ("all", "standard", "core")
    )
    groups = (
        "all = every row; standard = every row but those of the groups peers, paced, ttfc, "
        "burst, and sluice-semantic; core = standard without state and telemetry; "
        f"{groups}"
    )
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=[*SCENARIOS, *GROUPS],
        default=["standard"],
        metavar="NAME",
        help=f"scenarios or groups to run (default: standard): {', '.join(SCENARIOS)}. "
        f"Groups: {groups}",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run everything this many times, interleaved; report the median round (1)",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--server-cpu", type=int, default=1, help="core of the server (1)")
    parser.add_argument("--client-cpu", type=int, default=0, help="core of the load (0)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Sluice's processes (`sluice serve --workers N`, above 1 unpinned) (1)",
    )
    parser.add_argument(
        "--mlflow-version",
        default=mlflow_gateway.VERSION,
        help=f"of mlflow[gateway], in its own venv in {mlflow_gateway.CACHE} "
        f"({mlflow_gateway.VERSION})",
    )
    parser.add_argument("--keep", action="store_true", help="keep logs and configs")
    return parser


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def _tools(names: list[str], mlflow_version: str) -> dict[str, str]:
    """The external programs the chosen scenarios need, installed if missing."""
    needed: set[str] = set()
    for name in names:
        scenario = SCENARIOS[name]
        if scenario.uses_nginx:
            needed.add("nginx")
        if scenario.native_load:
            needed.add(scenario.load)
        if scenario.uses_redis:
            needed.add("redis-server")
    tools = {tool: ensure_tool(tool, _PACKAGES[tool]) for tool in sorted(needed)}
    if any(SCENARIOS[name].uses_paced for name in names):
        tools["node"] = paced.node()
    if any(SCENARIOS[name].server == "mlflow" for name in names):
        tools["mlflow"] = str(mlflow_gateway.install(mlflow_version))
    return tools


def _sluice_has_workers() -> bool:
    """Whether this tree's `sluice serve` takes --workers (issue 10 adds it)."""
    done = subprocess.run(
        python_argv("sluice.cli", "serve", "--help"),
        capture_output=True,
        text=True,
        env=python_env(),
        check=False,
        timeout=60,
    )
    return "--workers" in done.stdout


def _more_files() -> None:
    """Raise the soft limit on open files to the hard one, for every process
    the harness starts: 10,000 streams need more than the usual 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _run_all(
    args: argparse.Namespace,
    names: list[str],
    tools: dict[str, str],
    workdir: Path,
    workers_supported: bool,
) -> list[list[Outcome]]:
    """Every (scenario, concurrency) `args.rounds` times, rounds interleaved so
    that drift of the machine hits every scenario alike. A row with a
    concurrency of its own runs once a round, at the first level."""
    runs: dict[tuple[str, int], list[Outcome]] = {}
    for round_ in range(1, args.rounds + 1):
        for level, concurrency in enumerate(args.concurrency):
            settings = Settings(
                duration=args.duration,
                warmup=args.warmup,
                concurrency=concurrency,
                server_cpu=args.server_cpu,
                client_cpu=args.client_cpu,
                nginx=tools.get("nginx", ""),
                workdir=workdir / f"round{round_}",
                redis=tools.get("redis-server", ""),
                mlflow=tools.get("mlflow", ""),
                workers=args.workers,
                workers_supported=workers_supported,
            )
            for name in names:
                fixed = SCENARIOS[name].concurrency
                if fixed and level:
                    continue
                label = f"round {round_}/{args.rounds}: " if args.rounds > 1 else ""
                shown = fixed or concurrency
                print(f"bench: {label}{name} (concurrency {shown}) ...", file=sys.stderr)
                started = time.monotonic()
                outcome = run(SCENARIOS[name], settings)
                outcome.round_no = round_
                runs.setdefault((name, shown), []).append(outcome)
                status = "ok" if outcome.ok else f"FAILED: {outcome.failure}"
                if outcome.skipped:
                    status = f"skipped: {outcome.skipped}"
                rps = f", {outcome.rps:.0f} req/s" if outcome.rps is not None else ""
                took = time.monotonic() - started
                print(f"bench:   {status}{rps} ({took:.1f} s)", file=sys.stderr, flush=True)
    return list(runs.values())


def _median_round(rounds: list[Outcome]) -> Outcome:
    """The round with the median req/s (a failed round counts as the lowest)."""
    ordered = sorted(rounds, key=lambda o: o.rps if o.ok and o.rps is not None else -1.0)
    return ordered[(len(ordered) - 1) // 2]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through every `finally`: no process outlives us


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = _parser()
    args = parser.parse_args(argv)
    allowed = os.sched_getaffinity(0)
    for cpu in (args.server_cpu, args.client_cpu):
        if cpu not in allowed:
            parser.error(f"core {cpu} is not available (cores: {sorted(allowed)})")
    if args.server_cpu == args.client_cpu:
        print("bench: warning: the server and the load share a core", file=sys.stderr)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    chosen = {row for name in args.scenarios for row in GROUPS.get(name, (name,))}
    names = [name for name in SCENARIOS if name in chosen]
    _more_files()
    try:
        tools = _tools(names, args.mlflow_version)
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    workers_supported = args.workers == 1 or _sluice_has_workers()
    if not workers_supported:
        print(
            f"bench: this Sluice's `serve` has no --workers: the Sluice rows are skipped "
            f"(--workers {args.workers})",
            file=sys.stderr,
        )
    estimate = (args.duration + args.warmup + 1) * len(names) * len(args.concurrency) * args.rounds
    print(f"bench: {len(names)} scenario(s), about {estimate:.0f} s", file=sys.stderr)
    meta: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": f"{_cpu_model()} ({os.cpu_count()} cores)",
        "pinning": f"server core {args.server_cpu}, load core {args.client_cpu}",
        "sluice workers": (
            "1" if args.workers == 1 else f"{args.workers} (unpinned: load and upstream share)"
        ),
        "duration": f"{args.duration:g} s (+{args.warmup:g} s warmup)",
        "rounds": f"{args.rounds} (median round by req/s)" if args.rounds > 1 else "1",
        "python": platform.python_version(),
        "grpcio": _version("grpcio"),
        "protobuf": _version("protobuf"),
        "httpx": _version("httpx"),
        "opentelemetry-sdk": _version("opentelemetry-sdk"),
        "nginx": nginx.version(tools["nginx"]) if "nginx" in tools else "-",
        "redis": redis_server.version(tools["redis-server"]) if "redis-server" in tools else "-",
        "mlflow": args.mlflow_version if "mlflow" in tools else "-",
    }
    workdir = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    runs: list[list[Outcome]] = []
    try:
        runs = _run_all(args, names, tools, workdir, workers_supported)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"bench: logs and configs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    outcomes = [_median_round(rounds) for rounds in runs]
    everything = [outcome for rounds in runs for outcome in rounds]
    print(report.markdown(outcomes, meta, everything))
    if args.json:
        record = report.record(outcomes, meta, everything) | {
            "rounds": report.record(everything, {})
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    ran = all(o.clean or o.skipped for rounds in runs for o in rounds)
    return 0 if outcomes and ran else 1


if __name__ == "__main__":
    sys.exit(main())
