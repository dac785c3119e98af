"""The peer: MLflow's AI Gateway, the HTTP/JSON gateway Sluice replaces.

`mlflow[gateway]` goes into a venv of its own in the bench's cache directory
(`~/.cache/sluice-bench/mlflow-VERSION/`), created once and reused, never
the project's venv. `mlflow gateway start --workers 1` runs gunicorn with
one uvicorn worker (two processes under the CLI's own): all three are
pinned to the server core, as Sluice is, and all three count in its CPU.

Its endpoints have the names of Sluice's routes and the OpenAI provider on
the same upstream (nginx or the paced one): `bench-chat` (streams with
`"stream": true` in the body, non-streaming without), `bench-chat-unary`
(nginx's non-streaming chat completion under /unary/v1), `bench-embed`. The
load uses its OpenAI-compatible paths, `/v1/chat/completions` and
`/v1/embeddings`, with the endpoint's name as `model`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench import procfs, workload
from bench.http_client import Call
from bench.procs import BenchError, Process, pinned

# The newest release whose dependencies the package index has (3.18.0 needs an
# mlflow-tracing 3.18.0 that is not published with it); the issue measured 3.17.
VERSION = "3.17.2"
UNARY_CHAT = "bench-chat-unary"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sluice-bench"
_READY_SECONDS = 90.0  # importing mlflow takes seconds; gunicorn forks its worker after


def install(version: str = VERSION) -> Path:
    """The venv's `mlflow` program, installed first when this is the first run."""
    venv = CACHE / f"mlflow-{version}"
    stamp = venv / ".installed"  # written last: a half-made venv is made again
    mlflow = venv / "bin" / "mlflow"
    if stamp.exists():
        return mlflow
    print(f"bench: installing mlflow[gateway]=={version} into {venv} (once)", file=sys.stderr)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [*pip, f"mlflow[gateway]=={version}"],
    ]
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=1200)
        if done.returncode != 0:
            raise BenchError(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    stamp.touch()
    return mlflow


def config(path: Path, upstream_port: int) -> None:
    """The gateway's endpoints, on the upstream at `upstream_port`; JSON is YAML."""
    base = f"http://127.0.0.1:{upstream_port}"

    def endpoint(name: str, kind: str, model: str, api_base: str) -> dict[str, object]:
        provider = {"openai_api_key": workload.API_KEY, "openai_api_base": api_base}
        return {
            "name": name,
            "endpoint_type": kind,
            "model": {"provider": "openai", "name": model, "config": provider},
        }

    endpoints = [
        endpoint(workload.CHAT_ROUTE, "llm/v1/chat", workload.CHAT_MODEL, f"{base}/v1"),
        endpoint(UNARY_CHAT, "llm/v1/chat", workload.CHAT_MODEL, f"{base}/unary/v1"),
        endpoint(workload.EMBED_ROUTE, "llm/v1/embeddings", workload.EMBED_MODEL, f"{base}/v1"),
    ]
    path.write_text(json.dumps({"endpoints": endpoints}, indent=2))


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def chat_body(stream: bool) -> bytes:
    """What a client POSTs to MLflow's /v1/chat/completions."""
    body: dict[str, object] = {
        "model": workload.CHAT_ROUTE if stream else UNARY_CHAT,
        "messages": [{"role": "user", "content": workload.PROMPT}],
    }
    if stream:
        body["stream"] = True
    return _json(body)


def embed_body() -> bytes:
    """What a client POSTs to MLflow's /v1/embeddings: Sluice's Embed input."""
    return _json({"model": workload.EMBED_ROUTE, "input": [workload.EMBED_INPUT]})


# A stream ends with the finish chunk and the usage chunk (MLflow sends no [DONE]).
STREAM = Call(
    "/v1/chat/completions",
    chat_body(stream=True),
    (b'"finish_reason":"stop"', b'"completion_tokens":%d' % workload.CHUNKS),
    tokens=workload.CHUNKS,
)
CHAT = Call(
    "/v1/chat/completions",
    chat_body(stream=False),
    (b'"content":' + _json(workload.REPLY), b'"finish_reason":"stop"'),
)
EMBED = Call("/v1/embeddings", embed_body(), (b'"embedding":' + _json(list(workload.VECTOR)),))


class MlflowGateway:
    def __init__(
        self, mlflow: Path, directory: Path, port: int, upstream_port: int, cpu: int | None
    ) -> None:
        self.port = port
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "gateway.yaml"
        config(path, upstream_port)
        argv = [str(mlflow), "gateway", "start", "--config-path", str(path)]
        argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        # No usage reporting over the network from a benchmark.
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
        self.process = Process("mlflow", pinned(cpu, argv), directory / "mlflow.log", env=env)

    def wait_ready(self) -> None:
        """Until the worker answers /health (gunicorn listens before it forks it)."""
        self.process.wait_for_port(self.port, timeout=_READY_SECONDS)
        deadline = time.monotonic() + _READY_SECONDS
        while time.monotonic() < deadline:
            try:
                url = f"http://127.0.0.1:{self.port}/health"
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if self.process.popen.poll() is not None:
                break
            time.sleep(0.1)
        raise BenchError(f"MLflow's gateway does not answer /health:\n{self.process.tail()}")

    def pids(self) -> list[int]:
        """The CLI, gunicorn and its worker: read once the worker is up."""
        return [self.process.pid, *procfs.descendants(self.process.pid)]
