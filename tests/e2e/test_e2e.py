"""End to end: real gRPC clients (Node.js grpc-js, buf curl, Python grpcio)
against real `sluice serve` processes: one shared server on the embedded
default config, and one of its own for the graceful-shutdown test.

Node and buf are required, not optional: `make test` installs both, and a
missing one fails these tests instead of skipping them.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sluice.providers.mock import DEFAULT_REPLY
from sluice_client.v1 import gateway_pb2 as pb
from sluice_client.v1 import gateway_pb2_grpc
from tests.pki import CertificateAuthority

BIN = Path(sys.executable).parent
NODE_CLIENT = Path(__file__).parent / "node" / "chat.mjs"
GATEWAY_SERVICE = pb.DESCRIPTOR.services_by_name["GatewayService"].full_name
PROMPT = "Say hello to the end-to-end tests."
# Fast reconnects, so readiness is seen as soon as the server listens.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 200),
]


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    target: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_serving(
    server: Server, credentials: grpc.ChannelCredentials | None, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    request = health_pb2.HealthCheckRequest(service=GATEWAY_SERVICE)
    channel = (
        grpc.insecure_channel(server.target, options=CHANNEL_OPTIONS)
        if credentials is None
        else grpc.secure_channel(server.target, credentials, options=CHANNEL_OPTIONS)
    )
    with channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                pytest.fail(
                    f"sluice serve exited with {server.process.returncode}:\n{server.log_text()}"
                )
            try:
                reply = health.Check(request, timeout=0.5, wait_for_ready=True)
            except grpc.RpcError:
                continue  # not listening yet: wait_for_ready waited for us
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
    pytest.fail(f"sluice serve not SERVING within {timeout}s:\n{server.log_text()}")


@contextmanager
def running_server(
    log: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    target: str | None = None,
) -> Iterator[Server]:
    """`sluice serve ARGS` on a free loopback port (or where its config says,
    reached at `target`), SERVING (asked over TLS with `credentials`), with
    `env` over this process's environment; on exit, SIGTERM it (unless the
    test already did) and require a clean exit 0 within 10 s with no error
    logged."""
    sluice = BIN / "sluice"
    assert sluice.exists(), f"{sluice} is missing: run `make test` (it installs the package)"
    if target is None:
        target = f"127.0.0.1:{_free_port()}"
        args = ("--host", "127.0.0.1", "--port", target.rpartition(":")[2], *args)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sluice, "serve", *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    server = Server(process, target, log)
    try:
        _wait_until_serving(server, credentials)
        yield server
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"sluice serve did not exit within 10 s of SIGTERM:\n{server.log_text()}")
        assert code == 0, f"sluice serve exited with {code}:\n{server.log_text()}"
        assert " ERROR " not in server.log_text(), server.log_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One shared server on the embedded default config (mock-chat etc.)."""
    with running_server(tmp_path_factory.mktemp("sluice") / "serve.log") as running:
        yield running


def chat_request(route: str) -> pb.ChatRequest:
    return pb.ChatRequest(
        route=route, messages=[pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text=PROMPT)])]
    )


def assert_mock_chat(events: Sequence[pb.ChatResponse]) -> None:
    """The stream mock-chat answers: start, one delta per word, usage, finish."""
    kinds = [event.WhichOneof("event") for event in events]
    words = DEFAULT_REPLY.split()
    assert kinds == ["start"] + ["delta"] * len(words) + ["usage", "finish"], kinds
    start = events[0].start
    assert (start.provider, start.route, start.model) == ("mock", "mock-chat", "mock-1")
    assert start.id.startswith("mock-")
    assert "".join(event.delta.text for event in events[1:-2]) == DEFAULT_REPLY
    assert events[-2].usage == pb.Usage(input_tokens=len(PROMPT.split()), output_tokens=len(words))
    finish = events[-1].finish
    assert (finish.reason, finish.provider_reason) == (pb.FINISH_REASON_STOP, "stop")
    (attempt,) = finish.attempts
    assert (attempt.target, attempt.target_index) == ("mock/mock-1", 0)
    assert attempt.outcome == pb.ATTEMPT_OUTCOME_SUCCESS
    assert attempt.duration.ToTimedelta().total_seconds() > 0.2, "17 words at 20 ms each"


# --- Node.js (@grpc/grpc-js + @grpc/proto-loader, proto loaded at run time) ---


def run_node_client(
    target: str, route: str, env: Mapping[str, str] | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run chat.mjs (with `env` over this process's environment); return its
    message lines and its final status."""
    node = shutil.which("node")
    assert node, "node is not on PATH: Node.js 20+ is required for the e2e tests"
    assert (NODE_CLIENT.parent / "node_modules" / "@grpc" / "grpc-js").is_dir(), (
        "tests/e2e/node/node_modules is missing: run `make test` (it runs `npm ci` there)"
    )
    done = subprocess.run(
        [node, NODE_CLIENT, target, route, PROMPT],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, f"node client failed ({done.returncode}):\n{done.stderr}"
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines, f"node client printed nothing:\n{done.stderr}"
    *messages, last = lines
    assert all("message" in line for line in messages), done.stdout
    return messages, last["status"]


def test_node_client_streams_a_chat(server: Server) -> None:
    messages, status = run_node_client(server.target, "mock-chat")

    assert status == {"code": 0, "details": "", "status_details_bin": None}
    assert_mock_chat(
        [json_format.ParseDict(line["message"], pb.ChatResponse()) for line in messages]
    )
    # Streamed, not buffered: the mock waits 20 ms between words, so the
    # deltas must reach the client spread out over (words - 1) * 20 ms.
    deltas = [line["at_ms"] for line in messages[1:-2]]
    assert deltas[-1] - deltas[0] >= 0.75 * (len(deltas) - 1) * 20, deltas


def test_node_client_unknown_route_is_not_found(server: Server) -> None:
    messages, status = run_node_client(server.target, "no-such-route")

    assert messages == []
    assert status["code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert status["details"] == "no route named 'no-such-route'"
    # The rich status reaches a non-Python client intact.
    rich = status_pb2.Status.FromString(base64.b64decode(status["status_details_bin"]))
    assert (rich.code, rich.message) == (status["code"], status["details"])
    info = error_details_pb2.ErrorInfo()
    assert rich.details[0].Unpack(info)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "ROUTE_NOT_FOUND",
        "sluice.v1",
        {"route": "no-such-route"},
    )


def test_node_client_streams_a_chat_over_mutual_tls(tmp_path: Path) -> None:
    ca = CertificateAuthority()
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    ca.server().write(tmp_path, "server")
    ca.client("CN=svc-a", SPIFFE_ID).write(tmp_path, "client")
    config = tmp_path / "tls.yaml"
    config.write_text(MTLS_CONFIG.format(directory=tmp_path, spiffe_id=SPIFFE_ID))
    credentials = grpc.ssl_channel_credentials(
        ca.pem, (tmp_path / "client.key").read_bytes(), (tmp_path / "client.pem").read_bytes()
    )
    client_tls = {"SLUICE_CA_FILE": str(tmp_path / "ca.pem")}
    with running_server(
        tmp_path / "serve.log", "--config", str(config), credentials=credentials
    ) as server:
        target = f"localhost:{server.target.rpartition(':')[2]}"
        with_cert = {
            **client_tls,
            "SLUICE_CERT_FILE": str(tmp_path / "client.pem"),
            "SLUICE_KEY_FILE": str(tmp_path / "client.key"),
        }
        messages, status = run_node_client(target, "mock-chat", with_cert)
        assert status["code"] == 0, status
        assert_mock_chat(
            [json_format.ParseDict(line["message"], pb.ChatResponse()) for line in messages]
        )
        # The SPIFFE identity may call mock-chat only.
        messages, status = run_node_client(target, "other", with_cert)
        assert (messages, status["code"]) == ([], grpc.StatusCode.PERMISSION_DENIED.value[0])
        # Without a client certificate the handshake itself is refused.
        messages, status = run_node_client(target, "mock-chat", client_tls)
        assert (messages, status["code"]) == ([], grpc.StatusCode.UNAVAILABLE.value[0])
    access = (tmp_path / "serve.log").read_text()
    assert '"key_name":"svc-a"' in access


# --- buf curl (Go, connect-go's gRPC protocol), schema from server reflection ---


def buf_curl(*args: str) -> subprocess.CompletedProcess[str]:
    buf = BIN / "buf"
    assert buf.exists(), f"{buf} is missing: run `make test` (buf-bin is a dev dependency)"
    return subprocess.run(
        [
            buf,
            "curl",
            "--protocol",
            "grpc",
            "--http2-prior-knowledge",
            "--connect-timeout",
            "5",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def json_documents(text: str) -> list[Any]:
    """buf curl prints each message as an indented JSON document, one after another."""
    decoder = json.JSONDecoder()
    documents: list[Any] = []
    rest = text.strip()
    while rest:
        document, end = decoder.raw_decode(rest)
        documents.append(document)
        rest = rest[end:].lstrip()
    return documents


def test_buf_curl_streams_a_chat_through_reflection(server: Server) -> None:
    request = json_format.MessageToJson(chat_request("mock-chat"))
    done = buf_curl("--data", request, f"http://{server.target}/{GATEWAY_SERVICE}/Chat")

    assert done.returncode == 0, done.stderr
    assert_mock_chat(
        [json_format.ParseDict(doc, pb.ChatResponse()) for doc in json_documents(done.stdout)]
    )


def test_buf_curl_unknown_route_is_not_found(server: Server) -> None:
    request = json_format.MessageToJson(chat_request("no-such-route"))
    done = buf_curl("--data", request, f"http://{server.target}/{GATEWAY_SERVICE}/Chat")

    assert done.returncode == 5 * 8, done  # buf curl exits with 8 x the RPC's code
    assert done.stdout == ""
    error = json.loads(done.stderr)
    assert (error["code"], error["message"]) == ("not_found", "no route named 'no-such-route'")
    assert [detail["type"] for detail in error["details"]] == ["google.rpc.ErrorInfo"]


def test_buf_curl_lists_services_and_methods_through_reflection(server: Server) -> None:
    services = buf_curl("--list-services", f"http://{server.target}")
    methods = buf_curl("--list-methods", f"http://{server.target}")

    assert services.returncode == 0, services.stderr
    assert set(services.stdout.split()) == {
        GATEWAY_SERVICE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    assert methods.returncode == 0, methods.stderr
    gateway_methods = {m for m in methods.stdout.split() if m.startswith(f"{GATEWAY_SERVICE}/")}
    assert gateway_methods == {
        f"{GATEWAY_SERVICE}/{method.name}"
        for method in pb.DESCRIPTOR.services_by_name["GatewayService"].methods
    }
    assert "grpc.health.v1.Health/Check" in methods.stdout.split()


# --- graceful shutdown (Python grpcio), on a server of its own ---

# The mock-chat route, slowed to 0.1 s a word (~1.7 s a reply) so that the
# drain is wide enough to observe; a grace far longer than that.
SPIFFE_ID = "spiffe://sluice.test/ns/e2e/sa/svc-a"
MTLS_CONFIG = """\
server:
  tls:
    cert_file: {directory}/server.pem
    key_file: {directory}/server.key
    client_ca_file: {directory}/ca.pem
    client_auth: require
auth:
  identities:
    - name: svc-a
      spiffe_id: {spiffe_id}
      routes: [mock-chat]
routes:
  - name: mock-chat
    route_type: llm/v1/chat
    model:
      provider: mock
      name: mock-1
      chunk_delay: 0.02
  - name: other
    route_type: llm/v1/chat
    model:
      provider: mock
"""

SLOW_CONFIG = """\
server:
  shutdown_grace: 20
routes:
  - name: mock-chat
    route_type: llm/v1/chat
    model:
      provider: mock
      name: mock-1
      chunk_delay: 0.1
"""


@dataclass
class StreamReader:
    """Makes a Chat call and reads it to its end (run in a background thread)."""

    stub: gateway_pb2_grpc.GatewayServiceStub
    events: list[pb.ChatResponse] = field(default_factory=list)
    first_delta: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    code: grpc.StatusCode | None = None

    def __call__(self) -> None:
        call = self.stub.Chat(chat_request("mock-chat"), timeout=30)
        try:
            for event in call:
                self.events.append(event)
                if event.HasField("delta"):
                    self.first_delta.set()
        except grpc.RpcError:
            pass  # the status is read below either way
        finally:
            self.code = call.code()
            self.done.set()


def _wait_until_refused(health: Any, timeout: float = 5.0) -> grpc.RpcError:
    """Poll Check until the server refuses it; until then it must say NOT_SERVING."""
    deadline = time.monotonic() + timeout
    request = health_pb2.HealthCheckRequest(service=GATEWAY_SERVICE)
    while time.monotonic() < deadline:
        try:
            reply = health.Check(request, timeout=1)
        except grpc.RpcError as error:
            return error
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        time.sleep(0.01)
    pytest.fail(f"health Check still answered {timeout}s after SIGTERM")


def test_sigterm_drains_in_flight_streams_and_refuses_new_calls(tmp_path: Path) -> None:
    config = tmp_path / "slow.yaml"
    config.write_text(SLOW_CONFIG)
    with (
        running_server(tmp_path / "serve.log", "--config", str(config)) as server,
        grpc.insecure_channel(server.target) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=GATEWAY_SERVICE), timeout=30)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        reader = StreamReader(stub)
        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        assert reader.first_delta.wait(timeout=10), "no delta within 10 s"

        server.process.send_signal(signal.SIGTERM)

        # Health says NOT_SERVING first; then new calls are refused while the
        # in-flight stream goes on.
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        # ...and the drain ends the Watch, so watchers never hold up shutdown.
        assert next(watch, None) is None
        assert watch.code() == grpc.StatusCode.OK
        assert _wait_until_refused(health).code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError) as refused:
            next(stub.Chat(chat_request("mock-chat"), timeout=5))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert not reader.done.is_set(), "the in-flight stream ended before new calls were refused"

        # The in-flight stream completes in full, and the server exits 0.
        thread.join(timeout=30)
        assert reader.done.is_set()
        assert reader.code == grpc.StatusCode.OK
        assert_mock_chat(reader.events)
        assert server.process.wait(timeout=10) == 0, server.log_text()


def test_sigterm_right_after_calls_loses_no_access_line(tmp_path: Path) -> None:
    access = tmp_path / "access.jsonl"
    config = tmp_path / "config.yaml"
    config.write_text(
        "routes:\n"
        "  - {name: mock-chat, route_type: llm/v1/chat, model: {provider: mock, name: mock-1,"
        " chunk_delay: 0.02}}\n"
        f"telemetry: {{access_log: {{path: {access}}}}}\n"
    )
    with (
        running_server(tmp_path / "serve.log", "--config", str(config)) as server,
        grpc.insecure_channel(server.target) as channel,
    ):
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        for _ in range(5):
            assert_mock_chat(list(stub.Chat(chat_request("mock-chat"), timeout=10)))
        # At once: the lines are still buffered (written every 0.2 s).
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=10) == 0, server.log_text()
    written = [json.loads(line) for line in access.read_text().splitlines()]
    assert [(line["method"], line["route"], line["status"]) for line in written] == [
        ("Chat", "mock-chat", "OK")
    ] * 5


# --- telemetry configured by the standard OTEL_* variables ---------------------------


def test_otel_variables_turn_on_a_prometheus_endpoint_and_the_access_log(
    tmp_path: Path,
) -> None:
    metrics_port = _free_port()
    env = {
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics_port),
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_SERVICE_NAME": "sluice-e2e",
    }
    with running_server(tmp_path / "serve.log", env=env) as server:
        messages, status = run_node_client(server.target, "mock-chat")
        assert status["code"] == 0
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    # Read once the server has exited: access lines are written in batches.
    lines = [json.loads(line) for line in server.log_text().splitlines() if line.startswith("{")]

    requests = re.search(r"^sluice_requests_total\{([^}]*)\} (\S+)$", scraped, re.MULTILINE)
    assert requests is not None, scraped
    assert 'sluice_route="mock-chat"' in requests[1]
    assert 'sluice_status="OK"' in requests[1]
    assert float(requests[2]) == 1.0
    first_token = re.search(
        r"^gen_ai_server_time_to_first_token_seconds_count\{[^}]*\} (\S+)$", scraped, re.MULTILINE
    )
    assert first_token is not None, scraped
    assert float(first_token[1]) == 1.0
    assert 'service_name="sluice-e2e"' in scraped  # on target_info

    (line,) = lines
    assert (line["method"], line["route"], line["status"], line["target"]) == (
        "Chat",
        "mock-chat",
        "OK",
        "mock/mock-1",
    )
    words = len(DEFAULT_REPLY.split())
    assert (line["input_tokens"], line["output_tokens"]) == (len(PROMPT.split()), words)
    assert line["response_id"] == messages[0]["message"]["start"]["id"]
