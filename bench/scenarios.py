"""The scenarios and how each one runs.

Rows of the report; ratios compare a row with the baselines (a) and (c) of
the same family (chat or embed), the same kind of load generator (the
Python ones, or the native wrk/h2load) and the same concurrency:

  echo            (a) grpc.aio ceiling: echo server, Chat, 53 messages/stream
  upstream        (c) nginx directly: the OpenAI SSE stream, keep-alive HTTP/1.1
  sluice          (b) Sluice -> nginx (OpenAI SSE, 50 chunks), Chat
  sluice-limits   (b) Sluice -> nginx with request, token and concurrency limits
                      (never reached) counted in memory: the limiter's cost
  sluice-limits-redis  (b) the same, counted in Redis (a redis-server of our own)
  sluice-traced   (b) Sluice -> nginx, every span exported over OTLP/gRPC to a sink
                      of our own (bench/otlp_sink.py): tracing's cost over `sluice`
  sluice-metered  (b) the same with metrics exported too (issue 10's target 8)
  sluice-otel     (b) the same with the access log's records exported too
  sluice-mock     (b) Sluice on the built-in mock provider (chunk_delay 0)
  sluice-cache    (b) Sluice, response cache in memory, identical temperature-0
                      calls: all but the first are hits, replayed from the cache
  sluice-cache-redis   (b) the same, the cache in Redis
  echo-h2load     (a) echo server, Chat, driven by h2load (C): no client limit
  upstream-wrk    (c) nginx directly, driven by wrk (C): nginx's own ceiling
  sluice-h2load   (b) Sluice -> nginx, Chat, driven by h2load
  echo-embed      (a) echo server, Embed (unary)
  upstream-embed  (c) nginx directly: the embeddings JSON
  sluice-embed    (b) Sluice -> nginx (OpenAI embeddings JSON), Embed

Issue 10's rows (not in `standard`; bench/README.md, "Sluice beside MLflow"):

  mlflow-wrk, mlflow-embed-wrk, mlflow-chat-wrk   (p) MLflow's gateway -> nginx
                      (stream, embeddings, non-stream chat), driven by wrk
  echo-embed-h2load, upstream-embed-wrk, sluice-embed-h2load   the unary
                      pair by the native load generators
  upstream-paced-N, sluice-paced-N, sluice-paced-delay-N, mlflow-paced-N
                      N = 200, 1000 streams on the paced upstream (Node.js)
  upstream-ttfc, sluice-ttfc   time to first chunk at c=1
  sluice-burst-2000, sluice-burst-10000, sluice-rss-10000   calls opened at
                      once on one channel; 10,000 streams held open (RSS)

Issue 15's row (not in `standard`; the group `semantic` runs it with `sluice`,
`sluice-paced-200`, `sluice-embed` and `sluice-cache`):

  sluice-semantic (b) Sluice, semantic cache in memory: every call's text new (an
                      exact miss), embedded via nginx (`bench-embed`) to the same
                      vector: all but the first calls are semantic hits. Its CPU
                      per call over `sluice`'s and `sluice-paced-200`'s is
                      issue 15's target (below 0.5)

Pinning: the server under test (echo, Sluice, or nginx in the upstream rows)
runs alone on `server_cpu`; the load generator runs on `client_cpu`. In the
Sluice and MLflow rows nginx (or the paced upstream) shares the client core,
so the gateway has its core to itself; so do redis-server in the `*-redis`
rows and the OTLP sink in the telemetry rows. Sluice on several workers
(--workers) is not pinned.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bench import mlflow_gateway, paced, procfs, workload
from bench import native as native_load
from bench.http_client import Call
from bench.loadgen import CHAT_METHOD, EMBED_METHOD
from bench.mlflow_gateway import MlflowGateway
from bench.nginx import AccessLog, Nginx
from bench.otlp_sink import OtlpSink, SinkCounts
from bench.paced import PacedStats, PacedUpstream
from bench.procs import BenchError, Process, Processes, free_port, pinned, python_argv, python_env
from bench.redis_server import RedisServer
from bench.stats import LoadResult

# (a) the grpc.aio ceiling, (b) Sluice, (c) the upstream itself, (p) the peer: MLflow.
Role = Literal["a", "b", "c", "p"]
# Rows compare with baselines of their family only.
Family = Literal["chat", "embed", "chat-unary", "paced", "burst"]
Server = Literal["echo", "sluice", "nginx", "mlflow", "paced"]
Load = Literal[
    "grpc-chat", "grpc-embed", "http-sse", "http-json", "mlflow-sse", "wrk", "h2load", "burst"
]
State = Literal["", "memory", "redis"]
# What Sluice exports over OTLP/gRPC: nothing (its default), spans, spans and
# metrics (issue 10's target 8), or those and the access log's records.
Export = Literal["", "traces", "metered", "all"]
SIGNALS: dict[Export, tuple[str, ...]] = {
    "": (),
    "traces": ("traces",),
    "metered": ("traces", "metrics"),
    "all": ("traces", "metrics", "logs"),
}
# Below this share of cache hits in the window, a cache row failed its purpose.
MIN_HIT_RATIO = 0.99
# Each call through nginx makes at least a server span, an attempt span and an
# HTTP span: a telemetry row whose sink got fewer did not really trace.
MIN_SPANS_PER_CALL = 3
_SCRIPT_COMMANDS = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"})
# The 10,000-call burst runs with Sluice's bound on concurrent calls set this
# low, so that the bound, not the machine, refuses what is over it.
BURST_BOUND = 2000
# The RSS row: 10,000 streams opened over RSS_RAMP seconds, each 50 tokens
# RSS_SPACING_MS apart (100 s), so that all are open at once; its RSS is read
# again RSS_SETTLE seconds after they ended. The spacing keeps the tokens of
# 10,000 streams (5,000/s) within what the Python client and the paced
# upstream, sharing the other core, can take: at 400 ms (25,000/s) they fell
# behind and no more than ~4,000 streams were ever open.
RSS_SPACING_MS = 2000.0
RSS_RAMP = 30.0
RSS_SETTLE = 10.0


@dataclass(frozen=True)
class Scenario:
    name: str
    role: Role
    family: Family
    server: Server
    load: Load
    route: str = ""
    description: str = ""
    # Sluice's `state:` backend, set explicitly; "" leaves the config without one.
    state: State = ""
    # What Sluice exports, to an OTLP sink the harness starts; "" = nothing.
    telemetry: Export = ""
    # The row's own concurrency (0: the run's --concurrency); burst rows: calls.
    concurrency: int = 0
    # The paced upstream's token spacing (ms); 0 = nginx is the upstream.
    spacing_ms: float = 0.0
    # Burst rows: seconds over which the calls are opened (0: all at once).
    ramp: float = 0.0
    # Sluice's `server.max_concurrent_calls` (0: its default).
    max_concurrent_calls: int = 0
    # Read the gateway's peak RSS, and its RSS RSS_SETTLE s after the load.
    rss: bool = False

    @property
    def uses_nginx(self) -> bool:
        if self.server == "nginx":
            return True
        if self.server not in ("sluice", "mlflow") or self.spacing_ms:
            return False
        return self.server == "mlflow" or self.route in (
            *workload.NGINX_CHAT_ROUTES,
            workload.EMBED_ROUTE,
        )

    @property
    def uses_paced(self) -> bool:
        return bool(self.spacing_ms)

    @property
    def uses_redis(self) -> bool:
        return self.state == "redis"

    @property
    def uses_sink(self) -> bool:
        return bool(self.telemetry)

    @property
    def cached(self) -> bool:
        """Its calls are answered from Sluice's response cache."""
        return self.route in workload.CACHED_ROUTES

    @property
    def semantic(self) -> bool:
        """Its calls are answered from Sluice's semantic cache."""
        return self.route == workload.SEMANTIC_ROUTE

    @property
    def native_load(self) -> bool:
        """Driven by a C load generator (no TTFC; no Python client limit)."""
        return self.load in ("wrk", "h2load")

    @property
    def single_worker(self) -> bool:
        """Measured on one worker whatever --workers says (the RSS row)."""
        return self.rss


CHAT, EMBED, MOCK = workload.CHAT_ROUTE, workload.EMBED_ROUTE, workload.MOCK_ROUTE
PACED_DELAY = workload.PACED_DELAY_ROUTE
PACED_STREAMS = (200, 1000)
_C1: dict[str, Any] = {"concurrency": 1}
CACHE, LIMITS = workload.CACHE_ROUTE, workload.LIMITS_ROUTE
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario("echo", "a", "chat", "echo", "grpc-chat", CHAT, "grpc.aio echo, 53 msgs"),
        Scenario("upstream", "c", "chat", "nginx", "http-sse", "", "nginx SSE direct"),
        Scenario("sluice", "b", "chat", "sluice", "grpc-chat", CHAT, "Sluice -> nginx SSE"),
        Scenario(
            "sluice-limits",
            "b",
            "chat",
            "sluice",
            "grpc-chat",
            LIMITS,
            "Sluice -> nginx, limits, memory",
            "memory",
        ),
        Scenario(
            "sluice-limits-redis",
            "b",
            "chat",
            "sluice",
            "grpc-chat",
            LIMITS,
            "Sluice -> nginx, limits, Redis",
            "redis",
        ),
        Scenario(
            "sluice-traced",
            "b",
            "chat",
            "sluice",
            "grpc-chat",
            CHAT,
            "Sluice -> nginx, traces over OTLP",
            telemetry="traces",
        ),
        Scenario(
            "sluice-metered",
            "b",
            "chat",
            "sluice",
            "grpc-chat",
            CHAT,
            "Sluice -> nginx, traces+metrics over OTLP",
            telemetry="metered",
        ),
        Scenario(
            "sluice-otel",
            "b",
            "chat",
            "sluice",
            "grpc-chat",
            CHAT,
            "Sluice -> nginx, traces+metrics+logs over OTLP",
            telemetry="all",
        ),
        Scenario("sluice-mock", "b", "chat", "sluice", "grpc-chat", MOCK, "Sluice, mock provider"),
        Scenario(
            "sluice-cache",
            "b",
            "chat",
            "sluice",
            "grpc-chat",
            CACHE,
            "Sluice, cache hits, memory",
            "memory",
        ),
        Scenario(
            "sluice-cache-redis",
            "b",
            "chat",
            "sluice",
            "grpc-chat",
            CACHE,
            "Sluice, cache hits, Redis",
            "redis",
        ),
        Scenario(
            "sluice-semantic",
            "b",
            "chat",
            "sluice",
            "grpc-chat",
            workload.SEMANTIC_ROUTE,
            "Sluice, semantic hits (embedding via nginx), memory",
            "memory",
        ),
        Scenario("echo-h2load", "a", "chat", "echo", "h2load", CHAT, "grpc.aio echo, 53 msgs"),
        Scenario("upstream-wrk", "c", "chat", "nginx", "wrk", "", "nginx SSE direct"),
        Scenario("sluice-h2load", "b", "chat", "sluice", "h2load", CHAT, "Sluice -> nginx SSE"),
        Scenario("mlflow-wrk", "p", "chat", "mlflow", "wrk", CHAT, "MLflow -> nginx SSE, stream"),
        Scenario("echo-embed", "a", "embed", "echo", "grpc-embed", EMBED, "grpc.aio echo, unary"),
        Scenario("upstream-embed", "c", "embed", "nginx", "http-json", "", "nginx JSON direct"),
        Scenario(
            "sluice-embed", "b", "embed", "sluice", "grpc-embed", EMBED, "Sluice -> nginx JSON"
        ),
        Scenario(
            "echo-embed-h2load", "a", "embed", "echo", "h2load", EMBED, "grpc.aio echo, unary"
        ),
        Scenario("upstream-embed-wrk", "c", "embed", "nginx", "wrk", "", "nginx JSON direct"),
        Scenario(
            "sluice-embed-h2load", "b", "embed", "sluice", "h2load", EMBED, "Sluice -> nginx JSON"
        ),
        Scenario("mlflow-embed-wrk", "p", "embed", "mlflow", "wrk", EMBED, "MLflow -> nginx JSON"),
        Scenario(
            "mlflow-chat-wrk",
            "p",
            "chat-unary",
            "mlflow",
            "wrk",
            mlflow_gateway.UNARY_CHAT,
            "MLflow -> nginx, non-stream chat",
        ),
        # Time to first chunk, unloaded.
        Scenario("upstream-ttfc", "c", "chat", "nginx", "http-sse", "", "nginx SSE, c=1", **_C1),
        Scenario("sluice-ttfc", "b", "chat", "sluice", "grpc-chat", CHAT, "Sluice, c=1", **_C1),
        # Paced streams (50 tokens SPACING_MS apart), 200 and 1,000 at once.
        *(
            scenario
            for streams in PACED_STREAMS
            for scenario in (
                Scenario(
                    f"upstream-paced-{streams}",
                    "c",
                    "paced",
                    "paced",
                    "http-sse",
                    description="paced upstream direct",
                    concurrency=streams,
                    spacing_ms=paced.SPACING_MS,
                ),
                Scenario(
                    f"sluice-paced-{streams}",
                    "b",
                    "paced",
                    "sluice",
                    "grpc-chat",
                    workload.PACED_ROUTE,
                    "Sluice -> paced upstream",
                    concurrency=streams,
                    spacing_ms=paced.SPACING_MS,
                ),
                Scenario(
                    f"sluice-paced-delay-{streams}",
                    "b",
                    "paced",
                    "sluice",
                    "grpc-chat",
                    workload.PACED_DELAY_ROUTE,
                    f"Sluice -> paced, max_delay_ms {workload.MAX_DELAY_MS}",
                    concurrency=streams,
                    spacing_ms=paced.SPACING_MS,
                ),
                Scenario(
                    f"mlflow-paced-{streams}",
                    "p",
                    "paced",
                    "mlflow",
                    "mlflow-sse",
                    CHAT,
                    "MLflow -> paced upstream",
                    concurrency=streams,
                    spacing_ms=paced.SPACING_MS,
                ),
            )
        ),
        # Calls opened at once on one channel, and 10,000 streams held open.
        Scenario(
            "sluice-burst-2000",
            "b",
            "burst",
            "sluice",
            "burst",
            CHAT,
            "2,000 calls at once, default config",
            concurrency=2000,
        ),
        Scenario(
            "sluice-burst-10000",
            "b",
            "burst",
            "sluice",
            "burst",
            CHAT,
            f"10,000 calls at once, max_concurrent_calls {BURST_BOUND:,}",
            concurrency=10_000,
            max_concurrent_calls=BURST_BOUND,
        ),
        Scenario(
            "sluice-rss-10000",
            "b",
            "burst",
            "sluice",
            "burst",
            workload.PACED_ROUTE,
            f"10,000 paced streams open, one worker (opened over {RSS_RAMP:g} s)",
            concurrency=10_000,
            spacing_ms=RSS_SPACING_MS,
            ramp=RSS_RAMP,
            rss=True,
        ),
    ]
}
STATE_ROWS = ("sluice-limits", "sluice-limits-redis", "sluice-cache", "sluice-cache-redis")
TELEMETRY_ROWS = ("sluice-traced", "sluice-metered", "sluice-otel")
NATIVE_ROWS = ("echo-h2load", "upstream-wrk", "sluice-h2load")
NATIVE_EMBED_ROWS = ("echo-embed-h2load", "upstream-embed-wrk", "sluice-embed-h2load")
TTFC_ROWS = ("upstream-ttfc", "sluice-ttfc")
PACED_ROWS = tuple(name for name in SCENARIOS if SCENARIOS[name].family == "paced")
BURST_ROWS = ("sluice-burst-2000", "sluice-burst-10000", "sluice-rss-10000")
# Issue 15's row, and what it is read against: the upstream call a hit saves
# (`sluice`), the embeddings call it makes (`sluice-embed`), an exact hit.
SEMANTIC_ROWS = ("sluice", "sluice-paced-200", "sluice-embed", "sluice-cache", "sluice-semantic")
# Rows of issue 10 that `standard` (the default) leaves out: they install
# MLflow, need Node.js, or hold thousands of streams.
MLFLOW_ROWS = tuple(name for name in SCENARIOS if SCENARIOS[name].server == "mlflow")
_OPTIONAL = (
    *NATIVE_EMBED_ROWS,
    *TTFC_ROWS,
    *PACED_ROWS,
    *BURST_ROWS,
    *MLFLOW_ROWS,
    "sluice-semantic",
)
# Names `--scenarios` also takes, each for several rows.
GROUPS: dict[str, tuple[str, ...]] = {
    "all": tuple(SCENARIOS),
    "standard": tuple(name for name in SCENARIOS if name not in _OPTIONAL),
    "core": tuple(
        name for name in SCENARIOS if name not in (*STATE_ROWS, *TELEMETRY_ROWS, *_OPTIONAL)
    ),
    # Sluice beside MLflow: each MLflow row with the rows it is read against.
    "peers": tuple(
        name
        for name in SCENARIOS
        if name in (*NATIVE_ROWS, *NATIVE_EMBED_ROWS, *PACED_ROWS, *MLFLOW_ROWS)
    ),
    "paced": PACED_ROWS,
    "ttfc": TTFC_ROWS,
    "burst": BURST_ROWS,
    # The shared-state rows and what they are compared with.
    "state": ("echo", "upstream", "sluice", "sluice-mock", *STATE_ROWS),
    # The telemetry rows and what they are compared with (`sluice`: nothing exported).
    "telemetry": ("echo", "upstream", "sluice", *TELEMETRY_ROWS),
    "semantic": SEMANTIC_ROWS,
}


@dataclass(frozen=True)
class Settings:
    duration: float
    warmup: float
    concurrency: int
    server_cpu: int | None
    client_cpu: int | None
    nginx: str
    workdir: Path
    redis: str = ""  # the redis-server binary, for the *-redis rows
    mlflow: str = ""  # MLflow's `mlflow` program, in its own venv, for the MLflow rows
    # Sluice's processes (`sluice serve --workers N`, passed only above 1);
    # False when this Sluice's `serve` has no --workers: its rows are skipped.
    workers: int = 1
    workers_supported: bool = True


@dataclass
class Outcome:
    scenario: Scenario
    concurrency: int
    load: LoadResult | None = None
    round_no: int = 1  # of --rounds
    # The upstream as the gateway saw it (Sluice rows with nginx).
    upstream_log: AccessLog | None = None
    # The upstream as the direct client saw it (upstream rows).
    server_log: AccessLog | None = None
    # Calls of each command redis-server processed over the whole run,
    # warmup included (*-redis rows); the commands its scripts ran included.
    redis_commands: dict[str, int] | None = None
    # What the OTLP sink received over the whole run, warmup and Sluice's
    # flush at shutdown included (telemetry rows).
    telemetry: SinkCounts | None = None
    # What the paced upstream saw (paced and RSS rows).
    upstream_stats: PacedStats | None = None
    # The RSS row's gateway memory, in MiB: `idle` before the load, `peak`
    # (VmHWM) after it, `settled` RSS_SETTLE s after the streams ended.
    memory: dict[str, float] | None = None
    failure: str = ""
    # Why the row did not run (this Sluice lacks what it measures).
    skipped: str = ""

    @property
    def ok(self) -> bool:
        return self.load is not None and not self.failure

    @property
    def clean(self) -> bool:
        """Ran, every request got the expected answer, and a cache row's
        answers came from the cache."""
        if not self.ok or self.load is None or self.load["errors"]:
            return False
        ratio = self.hit_ratio
        return not self.scenario.cached or (ratio is not None and ratio >= MIN_HIT_RATIO)

    @property
    def hit_ratio(self) -> float | None:
        """Cache hits / checked streams in the window (cache rows)."""
        if not self.scenario.cached or not self.load:
            return None
        checked = self.load["cache_hits"] + self.load["cache_misses"]
        return self.load["cache_hits"] / checked if checked else None

    def redis_commands_per_call(self, scripts_only: bool = False) -> float | None:
        """Redis commands per call over the run: every command Redis ran
        (those inside scripts too), or only the scripts (EVALSHA...). A
        call's round trips are its scripts plus its plain commands."""
        if self.redis_commands is None or not self.load or not self.load["calls_total"]:
            return None
        counted = [
            count
            for name, count in self.redis_commands.items()
            if not scripts_only or name in _SCRIPT_COMMANDS
        ]
        return sum(counted) / self.load["calls_total"]

    def per_call(self, count: int) -> float | None:
        """`count` (read once per run) / the calls of the run."""
        if not self.load or not self.load["calls_total"]:
            return None
        return count / self.load["calls_total"]

    @property
    def rps(self) -> float | None:
        return self.load["requests"] / self.load["seconds"] if self.load else None

    def cpu_ms_per_request(self, group: str = "server") -> float | None:
        if not self.load or not self.load["requests"] or group not in self.load["cpu_seconds"]:
            return None
        return self.load["cpu_seconds"][group] * 1000 / self.load["requests"]

    def utilization(self, seconds: float | None) -> float | None:
        if seconds is None or not self.load:
            return None
        return seconds / self.load["seconds"] * 100


def sluice_config(
    path: Path,
    nginx_port: int,
    state: State = "",
    redis_url: str = "",
    *,
    telemetry: Export = "",
    otlp_endpoint: str = "",
    paced_port: int = 0,
    flush_window: bool = False,
    max_concurrent_calls: int = 0,
    upstream_connections: int = 0,
    per_worker: bool = False,
    semantic: bool = False,
) -> None:
    """Every route of every Sluice row; JSON is YAML. `state` sets the shared
    state backend (redis at `redis_url`); "" leaves the default (memory).
    `telemetry` sets what is exported over OTLP/gRPC to `otlp_endpoint`; ""
    leaves the default: nothing (no spans, no-op metrics, the access
    log on stdout only). With `paced_port`, PACED_ROUTE goes to the paced
    upstream, and with `flush_window` PACED_DELAY_ROUTE too, with its
    `stream.max_delay_ms`; `max_concurrent_calls` sets the server's bound,
    `upstream_connections` the paced route's `model.max_connections`, and
    `per_worker` consents to limits counted per worker (several workers on
    the memory backend). `semantic` adds SEMANTIC_ROUTE, only to the row
    that uses it: a semantic cache keeps state (and, on Redis, a
    subscription) that the other rows must not pay for.
    Keys of issue 10 are written only for the rows that need them, so that
    every other row runs on a Sluice that does not know them yet."""
    api_base = f"http://127.0.0.1:{nginx_port}/v1"
    openai = {"provider": "openai", "api_base": api_base, "api_key": workload.API_KEY}
    chat_model = {**openai, "name": workload.CHAT_MODEL}
    server: dict[str, Any] = {"host": "127.0.0.1", "shutdown_grace": 0.5}
    if max_concurrent_calls:
        server["max_concurrent_calls"] = max_concurrent_calls
    config: dict[str, Any] = {
        "server": server,
        "routes": [
            {
                "name": workload.CHAT_ROUTE,
                "route_type": "llm/v1/chat",
                "model": chat_model,
            },
            {
                "name": workload.CACHE_ROUTE,
                "route_type": "llm/v1/chat",
                "model": chat_model,
                "cache": workload.CACHE,
            },
            {
                "name": workload.LIMITS_ROUTE,
                "route_type": "llm/v1/chat",
                "model": chat_model,
                "limits": workload.LIMITS,
            },
            {
                "name": workload.EMBED_ROUTE,
                "route_type": "llm/v1/embeddings",
                "model": {**openai, "name": workload.EMBED_MODEL},
            },
            {
                "name": workload.MOCK_ROUTE,
                "route_type": "llm/v1/chat",
                "model": {
                    "provider": "mock",
                    "name": "mock-1",
                    "reply": workload.REPLY,
                    "chunk_delay": 0,
                },
            },
        ],
    }
    if semantic:
        config["routes"].append(
            {
                "name": workload.SEMANTIC_ROUTE,
                "route_type": "llm/v1/chat",
                "model": chat_model,
                "cache": workload.SEMANTIC_CACHE,
            }
        )
    if paced_port:
        paced_model: dict[str, Any] = {
            **chat_model,
            "api_base": f"http://127.0.0.1:{paced_port}/v1",
        }
        if upstream_connections:
            paced_model["max_connections"] = upstream_connections
        config["routes"].append(
            {"name": workload.PACED_ROUTE, "route_type": "llm/v1/chat", "model": paced_model}
        )
        if flush_window:
            config["routes"].append(
                {
                    "name": workload.PACED_DELAY_ROUTE,
                    "route_type": "llm/v1/chat",
                    "model": paced_model,
                    "stream": {"max_delay_ms": workload.MAX_DELAY_MS},
                }
            )
    if state == "redis":
        config["state"] = {"backend": "redis", "url": redis_url}
    elif state or per_worker:
        config["state"] = {"backend": state or "memory", "per_worker": per_worker}
    if telemetry:
        config["telemetry"] = {
            **{f"{signal}_exporter": ["otlp"] for signal in SIGNALS[telemetry]},
            "otlp": {"endpoint": otlp_endpoint, "protocol": "grpc"},
        }
    path.write_text(json.dumps(config, indent=2))


@dataclass(frozen=True)
class _Helpers:
    """What a row runs beside its server under test (or, for nginx and the
    paced upstream in the upstream rows, as it)."""

    nginx: Nginx | None = None
    paced: PacedUpstream | None = None
    redis: RedisServer | None = None
    sink: OtlpSink | None = None


def run(scenario: Scenario, settings: Settings) -> Outcome:
    concurrency = scenario.concurrency or settings.concurrency
    outcome = Outcome(scenario, concurrency)
    workdir = settings.workdir / f"{scenario.name}-c{concurrency}"
    workdir.mkdir(parents=True, exist_ok=True)
    outcome.skipped = _skipped(scenario, settings, workdir)
    if outcome.skipped:
        return outcome
    try:
        with Processes() as processes:
            watch: dict[str, list[int]] = {}
            helpers = _start_helpers(scenario, settings, workdir, processes, watch)
            nginx, redis = helpers.nginx, helpers.redis
            upstream = nginx or helpers.paced
            if scenario.server in ("nginx", "paced") and upstream is not None:
                target_port = upstream.port
            else:
                target_port = free_port()
            if scenario.server in ("echo", "sluice", "mlflow"):
                watch["server"] = _start_server(
                    scenario,
                    settings,
                    workdir,
                    port=target_port,
                    helpers=helpers,
                    processes=processes,
                )
            commands = redis.command_counts() if redis else {}
            idle = _memory_mib(watch["server"][0]) if scenario.rss else {}
            outcome.load = _run_load(scenario, settings, target_port, watch, workdir)
            if scenario.rss:
                outcome.memory = _settled_memory(watch["server"][0], idle)
            if redis is not None:
                outcome.redis_commands = redis.commands_since(commands)
            if helpers.paced is not None:
                outcome.upstream_stats = helpers.paced.stats()
            processes.check_running()
        _read_helpers(outcome, helpers)
    except BenchError as error:
        outcome.failure = str(error)
    return outcome


def _workers(scenario: Scenario, settings: Settings) -> int:
    return 1 if scenario.single_worker else settings.workers


def _memory_mib(pid: int) -> dict[str, float]:
    return {name: kib / 1024 for name, kib in procfs.memory_kib(pid).items()}


def _settled_memory(pid: int, idle: dict[str, float]) -> dict[str, float]:
    """The gateway's RSS before the load, at its peak, and RSS_SETTLE s after
    the streams ended (what it gave back)."""
    peak = _memory_mib(pid)["VmHWM"]
    time.sleep(RSS_SETTLE)
    return {"idle": idle["VmRSS"], "peak": peak, "settled": _memory_mib(pid)["VmRSS"]}


def _start_helpers(
    scenario: Scenario,
    settings: Settings,
    workdir: Path,
    processes: Processes,
    watch: dict[str, list[int]],
) -> _Helpers:
    """Start, and wait for, each helper the row uses; `watch` gets their pids
    by the group their CPU counts in."""
    # The server under test gets the server core; an upstream of a gateway does not.
    upstream_cpu = (
        settings.server_cpu if scenario.server in ("nginx", "paced") else settings.client_cpu
    )
    upstream_group = "server" if scenario.server in ("nginx", "paced") else "upstream"
    nginx: Nginx | None = None
    if scenario.uses_nginx:
        nginx = Nginx(settings.nginx, workdir / "nginx", free_port(), upstream_cpu)
        processes.start(nginx.process)
        nginx.wait_ready()
        watch[upstream_group] = nginx.pids()
    paced_upstream: PacedUpstream | None = None
    if scenario.uses_paced:
        paced_upstream = PacedUpstream(
            workdir / "paced", free_port(), upstream_cpu, scenario.spacing_ms
        )
        processes.start(paced_upstream.process)
        paced_upstream.wait_ready()
        watch[upstream_group] = [paced_upstream.process.pid]
    redis: RedisServer | None = None
    if scenario.uses_redis:
        # Beside nginx on the load's core: the gateway keeps its core.
        redis = RedisServer(settings.redis, workdir / "redis", free_port(), settings.client_cpu)
        processes.start(redis.process)
        redis.wait_ready()
        watch["redis"] = [redis.process.pid]
    sink: OtlpSink | None = None
    if scenario.uses_sink:
        # Started before Sluice, so stopped after it: it gets the
        # spans Sluice flushes when it stops.
        sink = OtlpSink(workdir / "otlp", free_port(), settings.client_cpu)
        processes.start(sink.process)
        sink.wait_ready()
        watch["otlp"] = [sink.process.pid]
    return _Helpers(nginx, paced_upstream, redis, sink)


def _read_helpers(outcome: Outcome, helpers: _Helpers) -> None:
    """What the helpers recorded of the run; called once they stopped, so
    that their logs and counts are complete."""
    if helpers.nginx is not None:
        log = helpers.nginx.access_log()
        if outcome.scenario.server == "nginx":
            outcome.server_log = log
        else:
            outcome.upstream_log = log
    if helpers.sink is not None:
        outcome.telemetry = helpers.sink.counts()
        _check_telemetry(outcome)


def _start_server(
    scenario: Scenario,
    settings: Settings,
    workdir: Path,
    *,
    port: int,
    helpers: _Helpers,
    processes: Processes,
) -> list[int]:
    """The gateway under test (or the echo server), ready; its pids, every
    worker's too, for its CPU."""
    if scenario.server == "mlflow":
        upstream = helpers.paced or helpers.nginx
        mlflow = MlflowGateway(
            Path(settings.mlflow),
            workdir / "mlflow",
            port,
            upstream.port if upstream else 9,
            settings.server_cpu,
        )
        processes.start(mlflow.process)
        mlflow.wait_ready()
        return mlflow.pids()
    workers = _workers(scenario, settings) if scenario.server == "sluice" else 1
    server = processes.start(_server(scenario, settings, workdir, port=port, helpers=helpers))
    server.wait_for_port(port)
    return [server.pid, *_wait_for_workers(server, workers)]


def _wait_for_workers(server: Process, workers: int, timeout: float = 30.0) -> list[int]:
    """The pids of the `workers` children a supervisor starts (none for one:
    the process is the gateway itself)."""
    if workers <= 1:
        return []
    deadline = time.monotonic() + timeout
    while len(found := procfs.descendants(server.pid)) < workers:
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if len(found) < workers:
        raise BenchError(f"{len(found)} of {workers} workers started:\n{server.tail()}")
    time.sleep(1.0)  # every worker listening, not only the first
    return procfs.descendants(server.pid)


def _issue_10_keys(scenario: Scenario) -> bool:
    """The row's Sluice config uses keys that issue 10 adds."""
    return bool(scenario.max_concurrent_calls or scenario.rss or scenario.route == PACED_DELAY)


def _skipped(scenario: Scenario, settings: Settings, workdir: Path) -> str:
    """Why this Sluice cannot run the row, or "": it has no `serve --workers`
    and the run asks for workers, or the row's config has a key it does not
    know yet (`sluice check` says so; the ports do not matter there)."""
    if scenario.server != "sluice":
        return ""
    if _workers(scenario, settings) > 1 and not settings.workers_supported:
        return "this Sluice's `serve` has no --workers"
    if not _issue_10_keys(scenario):
        return ""
    config = _write_sluice_config(scenario, workdir, _Helpers(), _workers(scenario, settings))
    done = subprocess.run(
        python_argv("sluice.cli", "check", "--config", str(config)),
        capture_output=True,
        text=True,
        env=python_env(),
        check=False,
        timeout=60,
    )
    unknown = [
        line.split(": ", 1)[-1] for line in done.stderr.splitlines() if "unknown key" in line
    ]
    return f"this Sluice does not know {'; '.join(unknown)}" if unknown else ""


def _write_sluice_config(
    scenario: Scenario, workdir: Path, helpers: _Helpers, workers: int
) -> Path:
    config = workdir / "sluice.yaml"
    sluice_config(
        config,
        helpers.nginx.port if helpers.nginx else 9,
        scenario.state,
        helpers.redis.url if helpers.redis else "",
        telemetry=scenario.telemetry,
        otlp_endpoint=helpers.sink.endpoint if helpers.sink else "",
        # Port 9 (discard) where the helper is not started: a config to check.
        paced_port=helpers.paced.port if helpers.paced else 9 * scenario.uses_paced,
        flush_window=scenario.route == PACED_DELAY,
        max_concurrent_calls=scenario.max_concurrent_calls,
        upstream_connections=scenario.concurrency if scenario.rss else 0,
        per_worker=workers > 1 and scenario.state != "redis",
        semantic=scenario.semantic,
    )
    return config


def _server(
    scenario: Scenario, settings: Settings, workdir: Path, *, port: int, helpers: _Helpers
) -> Process:
    """The echo server or Sluice (its config written), on the server core,
    or with several workers on any core."""
    cpu = settings.server_cpu
    if scenario.server == "echo":
        argv = python_argv("bench.echo", "--port", str(port))
    else:
        workers = _workers(scenario, settings)
        config = _write_sluice_config(scenario, workdir, helpers, workers)
        argv = python_argv("sluice.cli", "serve", "--config", str(config), "--port", str(port))
        if workers > 1:
            argv += ["--workers", str(workers)]
            cpu = None  # N workers on one core would measure nothing more
    # The row says what is exported: no OTEL_* variable of ours leaks in.
    env = {name: value for name, value in python_env().items() if not name.startswith("OTEL_")}
    return Process(scenario.server, pinned(cpu, argv), workdir / f"{scenario.server}.log", env=env)


def _check_telemetry(outcome: Outcome) -> None:
    """Raise unless the sink got what the calls of the run made: at least
    MIN_SPANS_PER_CALL spans a call, some metric points when metrics are
    exported, and one access record a call when logs are. Then the row's
    numbers are those of a run that really exported."""
    counts, load = outcome.telemetry, outcome.load
    if counts is None or load is None:
        return
    calls = load["calls_total"]
    problems: list[str] = []
    if counts["spans"] < MIN_SPANS_PER_CALL * calls:
        problems.append(f"{counts['spans']} spans (at least {MIN_SPANS_PER_CALL} a call)")
    signals = SIGNALS[outcome.scenario.telemetry]
    if "logs" in signals and counts["logs"] < calls:
        problems.append(f"{counts['logs']} log records (one a call)")
    if "metrics" in signals and not counts["points"]:
        problems.append("no metric points")
    if problems:
        raise BenchError(
            f"the OTLP sink got {', '.join(problems)} for {calls} calls: "
            "telemetry was lost or not exported (see otlp/counts.json and sluice.log with --keep)"
        )


def _run_load(
    scenario: Scenario,
    settings: Settings,
    port: int,
    watch: dict[str, list[int]],
    workdir: Path,
) -> LoadResult:
    concurrency = scenario.concurrency or settings.concurrency
    native = native_load.Run(
        port,
        concurrency,
        settings.warmup,
        settings.duration,
        settings.client_cpu,
        watch,
        workdir,
    )
    if scenario.load == "wrk":
        return native_load.wrk(_http_call(scenario), workload.API_KEY, native)
    if scenario.load == "h2load":
        if scenario.family == "embed":
            message = workload.embed_request(scenario.route).SerializeToString()
            return native_load.h2load(EMBED_METHOD, message, workload.embed_minimum_bytes(), native)
        message = workload.chat_request(scenario.route).SerializeToString()
        return native_load.h2load(CHAT_METHOD, message, workload.chat_minimum_bytes(), native)
    if scenario.load == "burst":
        argv = python_argv(
            "bench.burst",
            "--target",
            f"127.0.0.1:{port}",
            "--route",
            scenario.route,
            "--calls",
            str(concurrency),
            "--ramp",
            str(scenario.ramp),
            "--timeout",
            str(scenario.ramp + workload.CHUNKS * scenario.spacing_ms / 1000 + 60),
        )
        return _run_python_load(argv, settings, watch, workdir)
    return _run_loadgen(scenario, settings, port, watch, workdir)


def _http_call(scenario: Scenario) -> Call:
    """What wrk POSTs: to nginx (no check: its answer is a file) or to MLflow."""
    if scenario.server == "mlflow":
        if scenario.family == "embed":
            return mlflow_gateway.EMBED
        return mlflow_gateway.CHAT if scenario.family == "chat-unary" else mlflow_gateway.STREAM
    if scenario.family == "embed":
        return Call("/v1/embeddings", workload.upstream_embed_body())
    return Call("/v1/chat/completions", workload.upstream_chat_body())


def _run_loadgen(
    scenario: Scenario,
    settings: Settings,
    port: int,
    watch: dict[str, list[int]],
    workdir: Path,
) -> LoadResult:
    argv = python_argv(
        "bench.loadgen",
        "--mode",
        scenario.load,
        "--target",
        f"127.0.0.1:{port}",
        "--concurrency",
        str(scenario.concurrency or settings.concurrency),
        "--warmup",
        str(settings.warmup),
        "--duration",
        str(settings.duration),
    )
    if scenario.route:
        argv += ["--route", scenario.route]
    if scenario.cached:
        argv += ["--cache"]
    if scenario.spacing_ms:
        argv += ["--spacing", str(scenario.spacing_ms)]
    return _run_python_load(argv, settings, watch, workdir)


def _run_python_load(
    argv: list[str], settings: Settings, watch: dict[str, list[int]], workdir: Path
) -> LoadResult:
    """A Python load generator on the client core; its JSON LoadResult."""
    for name, pids in watch.items():
        argv += ["--watch", f"{name}={','.join(map(str, pids))}"]
    timeout = settings.warmup + settings.duration + RSS_SPACING_MS * workload.CHUNKS / 1000 + 120
    with open(workdir / "loadgen.log", "wb") as log:
        try:
            done = subprocess.run(
                pinned(settings.client_cpu, argv),
                stdout=subprocess.PIPE,
                stderr=log,
                env=python_env(),
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise BenchError(f"the load generator did not finish in {timeout:.0f}s") from None
    if done.returncode != 0:
        tail = (workdir / "loadgen.log").read_text(errors="replace")[-2000:]
        raise BenchError(f"the load generator failed ({done.returncode}):\n{tail}")
    result: LoadResult = json.loads(done.stdout)
    return result
