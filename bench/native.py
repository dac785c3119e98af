"""The native (C) load generators, for rows where a Python client would cost
as much CPU as the server it measures: wrk (HTTP/1.1, a Lua script for the
POST body and the check of each answer) and h2load (gRPC over one HTTP/2
connection). Neither sees inside a stream: these rows have no TTFC.
"""

from __future__ import annotations

import math
import re
import resource
import shutil
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench import procfs
from bench.http_client import Call
from bench.procs import BenchError, pinned
from bench.stats import Distribution, LoadResult, distribution


@dataclass(frozen=True)
class Run:
    """Where and how long a native load generator runs."""

    port: int
    concurrency: int
    warmup: float
    duration: float
    client_cpu: int | None
    watch: dict[str, list[int]]
    workdir: Path


def _lua_string(data: bytes) -> str:
    """A Lua long string holding `data` (which holds no "]==]")."""
    return f"[==[{data.decode()}]==]"


# `response` runs in the thread's Lua state, `done` in the main one: the
# thread's count of bad answers is read through setup's thread handle.
_WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
"""
_WRK_CHECK = """\
local contains = {{{contains}}}
local tokens = {tokens}
local threads = {{}}
bad = 0

function setup(thread)
  table.insert(threads, thread)
end

function response(status, headers, body)
  local good = status == 200
  for _, part in ipairs(contains) do
    good = good and string.find(body, part, 1, true) ~= nil
  end
  if good and tokens > 0 then
    local _, found = string.gsub(body, '"content":%s?"[^"]', "")
    good = found == tokens
  end
  if not good then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("bad")
  end
  io.write(string.format("bad answers: %d\\n", total))
end
"""
_WRK_LATENCY = re.compile(r"^\s*(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(call: Call, key: str, run: Run) -> LoadResult:
    """POST `call` on `concurrency` keep-alive connections. With a check
    (`call.contains`, `call.tokens`), every answer is read by Lua and the
    bad ones are errors."""
    binary = shutil.which("wrk")
    if binary is None:
        raise BenchError("wrk is not installed (apt-get install -y wrk)")
    script = run.workdir / "post.lua"
    text = _WRK_SCRIPT.format(body=_lua_string(call.body), key=key)
    if call.contains or call.tokens:
        contains = ", ".join(_lua_string(part) for part in call.contains)
        text += _WRK_CHECK.format(contains=contains, tokens=call.tokens)
    script.write_text(text)
    seconds = max(1, round(run.duration))
    argv = [binary, "-t1", f"-c{run.concurrency}", f"-d{seconds}s", "--latency"]
    argv += ["-s", str(script), f"http://127.0.0.1:{run.port}{call.path}"]
    before = {name: procfs.total_cpu_seconds(pids) for name, pids in run.watch.items()}
    client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        done = subprocess.run(
            pinned(run.client_cpu, argv),
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BenchError("wrk did not finish in time") from None
    after = {name: procfs.total_cpu_seconds(pids) for name, pids in run.watch.items()}
    client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    (run.workdir / "wrk.log").write_text(done.stdout + done.stderr)
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
    bad = re.search(r"bad answers: (\d+)", done.stdout)
    non_2xx_count = int(non_2xx.group(1)) if non_2xx else 0
    # A non-2xx answer is a bad one too: count it once.
    bad_answers = max(0, int(bad.group(1)) - non_2xx_count) if bad else 0
    errors = sum(int(n) for n in socket_errors.groups()) if socket_errors else 0
    errors += non_2xx_count + bad_answers
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
        requests=max(0, round(float(rate.group(1)) * seconds) - bad_answers),
        errors=errors,
        error_sample="see wrk.log" if errors else "",
        seconds=float(seconds),
        latency_ms=latency,
        ttfc_ms=None,
        # Around the whole wrk process (start-up included: a few ms in `seconds`).
        cpu_seconds={name: after[name] - before[name] for name in run.watch},
        client_cpu_seconds=(client_after.ru_utime + client_after.ru_stime)
        - (client_before.ru_utime + client_before.ru_stime),
        client_connections=run.concurrency,
        cache_hits=0,
        cache_misses=0,
        calls_total=0,
        added_gap_ms=None,
        statuses={},
        retry_hinted=0,
        peak_open=0,
    )


_H2LOAD_DONE = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded")
_H2LOAD_DATA = re.compile(r"traffic: .*?, .*?\((\d+)\) data")


def h2load(method: str, message: bytes, minimum: int, run: Run) -> LoadResult:
    """`method` over one HTTP/2 connection with `concurrency` streams, by
    h2load. h2load does not read gRPC trailers: the check is that the
    response bytes (warmup included, so it is a coarse one) reach `minimum`
    a call, the least a good answer has."""
    binary = shutil.which("h2load")
    if binary is None:
        raise BenchError("h2load is not installed (apt-get install -y nghttp2-client)")
    body = run.workdir / "request.grpc"
    body.write_bytes(b"\0" + struct.pack(">I", len(message)) + message)
    log = run.workdir / "h2load-requests.log"
    seconds = max(1, round(run.duration))
    warmup = max(1, round(run.warmup))
    argv = [binary, f"--warm-up-time={warmup}", "-D", str(seconds), "-c1", "-t1"]
    argv += [f"-m{run.concurrency}", "-d", str(body), f"--log-file={log}"]
    argv += ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    argv += [f"http://127.0.0.1:{run.port}{method}"]
    client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(run.workdir / "h2load.log", "wb") as out:
        process = subprocess.Popen(pinned(run.client_cpu, argv), stdout=out, stderr=out)
        try:
            # h2load connects, warms up, then measures: read the CPU at the phase change.
            time.sleep(warmup + 0.05)
            before = {name: procfs.total_cpu_seconds(pids) for name, pids in run.watch.items()}
            process.wait(seconds + 30)
            after = {name: procfs.total_cpu_seconds(pids) for name, pids in run.watch.items()}
        except subprocess.TimeoutExpired:
            raise BenchError("h2load did not finish in time") from None
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = (run.workdir / "h2load.log").read_text(errors="replace")
    counts = _H2LOAD_DONE.search(output)
    data = _H2LOAD_DATA.search(output)
    if process.returncode != 0 or counts is None or data is None:
        raise BenchError(f"h2load failed ({process.returncode}):\n{output[-2000:]}")
    done, succeeded = int(counts.group(3)), int(counts.group(4))
    short = max(0, math.ceil((done * minimum - int(data.group(1))) / minimum))
    latencies = [
        int(line.split("\t")[2]) / 1000
        for line in log.read_text().splitlines()
        if line.count("\t") >= 2
    ]
    return LoadResult(
        requests=succeeded - short,
        errors=done - succeeded + short,
        error_sample=f"response bytes short of {short} good answers" if short else "",
        seconds=float(seconds),
        latency_ms=distribution(latencies),
        ttfc_ms=None,
        cpu_seconds={name: after[name] - before[name] for name in run.watch},
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
        added_gap_ms=None,
        statuses={},
        retry_hinted=0,
        peak_open=0,
    )
