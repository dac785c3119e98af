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
  sluice-otel     (b) the same with metrics and the access log's records exported too
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

Pinning: the server under test (echo, Sluice, or nginx in the upstream rows)
runs alone on `server_cpu`; the load generator runs on `client_cpu`. In the
Sluice rows nginx shares the client core, so the gateway has its core to
itself; so do redis-server in the `*-redis` rows and the OTLP sink in the
telemetry rows.
"""

from __future__ import annotations

import json
import math
import re
import resource
import shutil
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bench import procfs, workload
from bench.nginx import AccessLog, Nginx
from bench.otlp_sink import OtlpSink, SinkCounts
from bench.procs import BenchError, Process, Processes, free_port, pinned, python_argv, python_env
from bench.redis_server import RedisServer
from bench.stats import Distribution, LoadResult, distribution

Role = Literal["a", "b", "c"]
Family = Literal["chat", "embed"]
Load = Literal["grpc-chat", "grpc-embed", "http-sse", "http-json", "wrk", "h2load"]
State = Literal["", "memory", "redis"]
# What Sluice exports over OTLP/gRPC: nothing (its default), spans, or spans,
# metrics and the access log's records.
Export = Literal["", "traces", "all"]
# Below this share of cache hits in the window, a cache row failed its purpose.
MIN_HIT_RATIO = 0.99
# Each call through nginx makes at least a server span, an attempt span and an
# HTTP span: a telemetry row whose sink got fewer did not really trace.
MIN_SPANS_PER_CALL = 3
_SCRIPT_COMMANDS = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"})


@dataclass(frozen=True)
class Scenario:
    name: str
    role: Role
    family: Family
    server: Literal["echo", "sluice", "nginx"]
    load: Load
    route: str = ""
    description: str = ""
    # Sluice's `state:` backend, set explicitly; "" leaves the config without one.
    state: State = ""
    # What Sluice exports, to an OTLP sink the harness starts; "" = nothing.
    telemetry: Export = ""

    @property
    def uses_nginx(self) -> bool:
        return self.server == "nginx" or (
            self.server == "sluice"
            and self.route in (*workload.NGINX_CHAT_ROUTES, workload.EMBED_ROUTE)
        )

    @property
    def uses_redis(self) -> bool:
        return self.state == "redis"

    @property
    def uses_sink(self) -> bool:
        return bool(self.telemetry)

    @property
    def cached(self) -> bool:
        """Its calls are answered from Sluice's response cache."""
        return self.route == workload.CACHE_ROUTE

    @property
    def native_load(self) -> bool:
        """Driven by a C load generator (no TTFC; no Python client limit)."""
        return self.load in ("wrk", "h2load")

    @property
    def tool(self) -> str:
        return self.load if self.native_load else "bench.loadgen"


CHAT, EMBED, MOCK = workload.CHAT_ROUTE, workload.EMBED_ROUTE, workload.MOCK_ROUTE
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
        Scenario("echo-h2load", "a", "chat", "echo", "h2load", CHAT, "grpc.aio echo, 53 msgs"),
        Scenario("upstream-wrk", "c", "chat", "nginx", "wrk", "", "nginx SSE direct"),
        Scenario("sluice-h2load", "b", "chat", "sluice", "h2load", CHAT, "Sluice -> nginx SSE"),
        Scenario("echo-embed", "a", "embed", "echo", "grpc-embed", EMBED, "grpc.aio echo, unary"),
        Scenario("upstream-embed", "c", "embed", "nginx", "http-json", "", "nginx JSON direct"),
        Scenario(
            "sluice-embed", "b", "embed", "sluice", "grpc-embed", EMBED, "Sluice -> nginx JSON"
        ),
    ]
}
STATE_ROWS = ("sluice-limits", "sluice-limits-redis", "sluice-cache", "sluice-cache-redis")
TELEMETRY_ROWS = ("sluice-traced", "sluice-otel")
# Names `--scenarios` also takes, each for several rows.
GROUPS: dict[str, tuple[str, ...]] = {
    "all": tuple(SCENARIOS),
    "core": tuple(name for name in SCENARIOS if name not in (*STATE_ROWS, *TELEMETRY_ROWS)),
    # The shared-state rows and what they are compared with.
    "state": ("echo", "upstream", "sluice", "sluice-mock", *STATE_ROWS),
    # The telemetry rows and what they are compared with (`sluice`: nothing exported).
    "telemetry": ("echo", "upstream", "sluice", *TELEMETRY_ROWS),
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
    failure: str = ""

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
) -> None:
    """Every route of every Sluice row; JSON is YAML. `state` sets the shared
    state backend (redis at `redis_url`); "" leaves the default (memory).
    `telemetry` sets what is exported over OTLP/gRPC to `otlp_endpoint`; ""
    leaves the default: nothing (unsampled spans, no-op metrics, the access
    log on stdout only)."""
    api_base = f"http://127.0.0.1:{nginx_port}/v1"
    openai = {"provider": "openai", "api_base": api_base, "api_key": workload.API_KEY}
    chat_model = {**openai, "name": workload.CHAT_MODEL}
    config: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "shutdown_grace": 0.5},
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
    if state == "redis":
        config["state"] = {"backend": "redis", "url": redis_url}
    elif state:
        config["state"] = {"backend": state}
    if telemetry:
        signals = ("traces",) if telemetry == "traces" else ("traces", "metrics", "logs")
        config["telemetry"] = {
            **{f"{signal}_exporter": ["otlp"] for signal in signals},
            "otlp": {"endpoint": otlp_endpoint, "protocol": "grpc"},
        }
    path.write_text(json.dumps(config, indent=2))


@dataclass(frozen=True)
class _Helpers:
    """What a row runs beside its server under test (or, for nginx in the
    upstream rows, as it)."""

    nginx: Nginx | None = None
    redis: RedisServer | None = None
    sink: OtlpSink | None = None


def run(scenario: Scenario, settings: Settings) -> Outcome:
    outcome = Outcome(scenario, settings.concurrency)
    workdir = settings.workdir / f"{scenario.name}-c{settings.concurrency}"
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        with Processes() as processes:
            watch: dict[str, list[int]] = {}
            helpers = _start_helpers(scenario, settings, workdir, processes, watch)
            nginx, redis = helpers.nginx, helpers.redis
            target_port = nginx.port if nginx and scenario.server == "nginx" else free_port()
            if scenario.server in ("echo", "sluice"):
                server = processes.start(_server(scenario, settings, workdir, target_port, helpers))
                server.wait_for_port(target_port)
                watch["server"] = [server.pid]
            commands = redis.command_counts() if redis else {}
            outcome.load = _run_load(scenario, settings, target_port, watch, workdir)
            if redis is not None:
                outcome.redis_commands = redis.commands_since(commands)
            processes.check_running()
        _read_helpers(outcome, helpers)
    except BenchError as error:
        outcome.failure = str(error)
    return outcome


def _start_helpers(
    scenario: Scenario,
    settings: Settings,
    workdir: Path,
    processes: Processes,
    watch: dict[str, list[int]],
) -> _Helpers:
    """Start, and wait for, each helper the row uses; `watch` gets their pids
    by the group their CPU counts in."""
    nginx: Nginx | None = None
    if scenario.uses_nginx:
        # The server under test gets the server core; an upstream of Sluice does not.
        cpu = settings.server_cpu if scenario.server == "nginx" else settings.client_cpu
        nginx = Nginx(settings.nginx, workdir / "nginx", free_port(), cpu)
        processes.start(nginx.process)
        nginx.wait_ready()
        watch["server" if scenario.server == "nginx" else "upstream"] = nginx.pids()
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
    return _Helpers(nginx, redis, sink)


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


def _server(
    scenario: Scenario, settings: Settings, workdir: Path, port: int, helpers: _Helpers
) -> Process:
    """The echo server or Sluice (its config written), on the server core."""
    if scenario.server == "echo":
        argv = python_argv("bench.echo", "--port", str(port))
    else:
        config = workdir / "sluice.yaml"
        sluice_config(
            config,
            helpers.nginx.port if helpers.nginx else 9,
            scenario.state,
            helpers.redis.url if helpers.redis else "",
            telemetry=scenario.telemetry,
            otlp_endpoint=helpers.sink.endpoint if helpers.sink else "",
        )
        argv = python_argv("sluice.cli", "serve", "--config", str(config), "--port", str(port))
    # The row says what is exported: no OTEL_* variable of ours leaks in.
    env = {name: value for name, value in python_env().items() if not name.startswith("OTEL_")}
    return Process(
        scenario.server,
        pinned(settings.server_cpu, argv),
        workdir / f"{scenario.server}.log",
        env=env,
    )


def _check_telemetry(outcome: Outcome) -> None:
    """Raise unless the sink got what the calls of the run made: at least
    MIN_SPANS_PER_CALL spans a call, and with `telemetry: all` one access
    record a call and some metric points. Then the row's numbers are those of
    a run that really exported."""
    counts, load = outcome.telemetry, outcome.load
    if counts is None or load is None:
        return
    calls = load["calls_total"]
    problems: list[str] = []
    if counts["spans"] < MIN_SPANS_PER_CALL * calls:
        problems.append(f"{counts['spans']} spans (at least {MIN_SPANS_PER_CALL} a call)")
    if outcome.scenario.telemetry == "all":
        if counts["logs"] < calls:
            problems.append(f"{counts['logs']} log records (one a call)")
        if not counts["points"]:
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
    if scenario.load == "wrk":
        return _run_wrk(settings, port, watch, workdir)
    if scenario.load == "h2load":
        return _run_h2load(scenario, settings, port, watch, workdir)
    return _run_loadgen(scenario, settings, port, watch, workdir)


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
        str(settings.concurrency),
        "--warmup",
        str(settings.warmup),
        "--duration",
        str(settings.duration),
    )
    if scenario.route:
        argv += ["--route", scenario.route]
    if scenario.cached:
        argv += ["--cache"]
    for name, pids in watch.items():
        argv += ["--watch", f"{name}={','.join(map(str, pids))}"]
    timeout = settings.warmup + settings.duration + 60
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


_WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
"""
_WRK_LATENCY = re.compile(r"^\s*(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _run_wrk(
    settings: Settings, port: int, watch: dict[str, list[int]], workdir: Path
) -> LoadResult:
    binary = shutil.which("wrk")
    if binary is None:
        raise BenchError("wrk is not installed (apt-get install -y wrk); skip upstream-wrk")
    script = workdir / "post.lua"
    script.write_text(
        _WRK_SCRIPT.format(body=workload.upstream_chat_body().decode(), key=workload.API_KEY)
    )
    seconds = max(1, round(settings.duration))
    argv = [binary, "-t1", f"-c{settings.concurrency}", f"-d{seconds}s", "--latency"]
    argv += ["-s", str(script), f"http://127.0.0.1:{port}/v1/chat/completions"]
    before = {name: procfs.total_cpu_seconds(pids) for name, pids in watch.items()}
    client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        done = subprocess.run(
            pinned(settings.client_cpu, argv),
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BenchError("wrk did not finish in time") from None
    after = {name: procfs.total_cpu_seconds(pids) for name, pids in watch.items()}
    client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    (workdir / "wrk.log").write_text(done.stdout + done.stderr)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    if done.returncode != 0 or rate is None:
        raise BenchError(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    percentiles = {
        q: float(value) * _WRK_UNITS[unit] for q, value, unit in _WRK_LATENCY.findall(done.stdout)
    }
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", done.stdout
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    errors = sum(int(n) for n in socket_errors.groups()) if socket_errors else 0
    errors += int(non_2xx.group(1)) if non_2xx else 0
    latency: Distribution | None = None
    if percentiles:
        latency = Distribution(
            p50=percentiles.get("50", math.nan),
            p90=percentiles.get("90", math.nan),
            p99=percentiles.get("99", math.nan),
            max=math.nan,
            mean=math.nan,
        )
    return LoadResult(
        requests=round(float(rate.group(1)) * seconds),
        errors=errors,
        error_sample="see wrk.log" if errors else "",
        seconds=float(seconds),
        latency_ms=latency,
        ttfc_ms=None,
        # Around the whole wrk process (start-up included: a few ms in `seconds`).
        cpu_seconds={name: after[name] - before[name] for name in watch},
        client_cpu_seconds=(client_after.ru_utime + client_after.ru_stime)
        - (client_before.ru_utime + client_before.ru_stime),
        client_connections=settings.concurrency,
        cache_hits=0,
        cache_misses=0,
        calls_total=0,
    )


_H2LOAD_DONE = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded")
_H2LOAD_DATA = re.compile(r"traffic: .*?, .*?\((\d+)\) data")


def _run_h2load(
    scenario: Scenario, settings: Settings, port: int, watch: dict[str, list[int]], workdir: Path
) -> LoadResult:
    """Chat over one HTTP/2 connection with `concurrency` streams, by h2load.
    h2load does not read gRPC trailers: the check is that the response bytes
    (warmup included, so it is a coarse one) cover 53 good messages a call."""
    binary = shutil.which("h2load")
    if binary is None:
        raise BenchError("h2load is not installed (apt-get install -y nghttp2-client)")
    message = workload.chat_request(scenario.route).SerializeToString()
    body = workdir / "chat.grpc"
    body.write_bytes(b"\0" + struct.pack(">I", len(message)) + message)
    expected = sum(
        5 + len(m.SerializeToString()) for m in workload.chat_responses(workload.CHAT_ROUTE)
    )
    log = workdir / "h2load-requests.log"
    seconds = max(1, round(settings.duration))
    warmup = max(1, round(settings.warmup))
    argv = [binary, f"--warm-up-time={warmup}", "-D", str(seconds), "-c1", "-t1"]
    argv += [f"-m{settings.concurrency}", "-d", str(body), f"--log-file={log}"]
    argv += ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    argv += [f"http://127.0.0.1:{port}/sluice.v1.GatewayService/Chat"]
    client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(workdir / "h2load.log", "wb") as out:
        process = subprocess.Popen(pinned(settings.client_cpu, argv), stdout=out, stderr=out)
        try:
            # h2load connects, warms up, then measures: read the CPU at the phase change.
            time.sleep(warmup + 0.05)
            before = {name: procfs.total_cpu_seconds(pids) for name, pids in watch.items()}
            process.wait(seconds + 30)
            after = {name: procfs.total_cpu_seconds(pids) for name, pids in watch.items()}
        except subprocess.TimeoutExpired:
            raise BenchError("h2load did not finish in time") from None
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = (workdir / "h2load.log").read_text(errors="replace")
    counts = _H2LOAD_DONE.search(output)
    data = _H2LOAD_DATA.search(output)
    if process.returncode != 0 or counts is None or data is None:
        raise BenchError(f"h2load failed ({process.returncode}):\n{output[-2000:]}")
    done, succeeded = int(counts.group(3)), int(counts.group(4))
    short = max(0, round((done * expected - int(data.group(1))) / expected))
    latencies = [
        int(line.split("\t")[2]) / 1000
        for line in log.read_text().splitlines()
        if line.count("\t") >= 2
    ]
    return LoadResult(
        requests=succeeded - short,
        errors=done - succeeded + short,
        error_sample=f"response bytes short of {short} full streams" if short else "",
        seconds=float(seconds),
        latency_ms=distribution(latencies),
        ttfc_ms=None,
        cpu_seconds={name: after[name] - before[name] for name in watch},
        # Warmup included: h2load is one process for both phases.
        client_cpu_seconds=(
            (client_after.ru_utime + client_after.ru_stime)
            - (client_before.ru_utime + client_before.ru_stime)
        )
        * seconds
        / (seconds + warmup),
        client_connections=1,
        cache_hits=0,
        cache_misses=0,
        calls_total=0,
    )
