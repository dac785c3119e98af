"""End to end, as deployed: `sluice serve` on IPv6 and a Unix socket for
grpc-js, grpcio and buf curl; gzip responses; and a drain under workers that
`sluice health` sees while new calls are still served."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import grpc
import pytest
import yaml

from sluice_client.v1 import gateway_pb2_grpc
from tests.e2e.test_e2e import (
    BIN,
    GATEWAY_SERVICE,
    Server,
    assert_mock_chat,
    buf_curl,
    chat_request,
    run_node_client,
    running_server,
)

# As the embedded default config has it: what assert_mock_chat expects.
MOCK_1 = {"provider": "mock", "name": "mock-1", "chunk_delay": 0.02}
CHAT_JSON = '{"route":"mock-chat","messages":[{"role":"ROLE_USER","parts":[{"text":"hi"}]}]}'


def free_port(family: socket.AddressFamily, host: str) -> int:
    with socket.socket(family) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def write_config(path: Path, **server: object) -> Path:
    routes = [{"name": "mock-chat", "route_type": "llm/v1/chat", "model": MOCK_1}]
    path.write_text(yaml.safe_dump({"server": server, "routes": routes}))
    return path


def python_chat(target: str) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        assert_mock_chat(list(stub.Chat(chat_request("mock-chat"), timeout=10)))


def test_clients_stream_over_ipv6_and_a_unix_socket(tmp_path: Path) -> None:
    ipv6 = f"[::1]:{free_port(socket.AF_INET6, '::1')}"
    unix = f"unix:{tmp_path / 'sluice.sock'}"
    config = write_config(tmp_path / "gw.yaml", listen=[ipv6, unix])
    with running_server(tmp_path / "serve.log", "--config", str(config), target=ipv6) as server:
        for target in (ipv6, unix):
            messages, status = run_node_client(target, "mock-chat")
            assert status["code"] == 0, (target, status)
            assert len(messages) == 20, target  # start, 17 words, usage, finish
            python_chat(target)
        listed = buf_curl(
            "--unix-socket", unix.removeprefix("unix:"), "--list-services", "http://sluice"
        )
        assert listed.returncode == 0, listed.stderr
        assert GATEWAY_SERVICE in listed.stdout.split()
        assert f"serving on {ipv6}, {unix}" in server.log_text()


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_responses_are_gzipped_when_configured_and_carry_the_call_id(
    tmp_path: Path, compression: str
) -> None:
    address = f"127.0.0.1:{free_port(socket.AF_INET, '127.0.0.1')}"
    config = write_config(tmp_path / "gw.yaml", listen=[address], compression=compression)
    with running_server(tmp_path / "serve.log", "--config", str(config), target=address):
        # buf curl advertises grpc-accept-encoding: gzip, and prints the headers with -v.
        done = buf_curl("-v", "--data", CHAT_JSON, f"http://{address}/{GATEWAY_SERVICE}/Chat")
    assert done.returncode == 0, done.stderr
    received = [line.partition("< (#2) ")[2] for line in done.stderr.splitlines()]
    assert ("Grpc-Encoding: gzip" in received) == (compression == "gzip"), received
    (call_id,) = [line for line in received if line.startswith("Sluice-Call-Id: ")]
    assert len(call_id.removeprefix("Sluice-Call-Id: ")) == 32


def sluice_health(server: Server) -> int:
    return subprocess.run(
        [BIN / "sluice", "health", "--address", server.target, "--timeout", "2"],
        capture_output=True,
        timeout=20,
        check=False,
    ).returncode


def test_sigterm_under_workers_says_not_serving_while_still_serving(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port(socket.AF_INET, '127.0.0.1')}"
    config = write_config(
        tmp_path / "gw.yaml", listen=[address], workers=2, drain_delay=4, shutdown_grace=3
    )
    with running_server(tmp_path / "serve.log", "--config", str(config), target=address) as server:
        assert sluice_health(server) == 0
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert sluice_health(server) == 1, "NOT_SERVING during the drain delay"
        python_chat(server.target)  # a new connection and call, still served
        assert time.monotonic() - signalled < 4, "checked within the delay"
        assert server.process.wait(timeout=15) == 0, server.log_text()
        assert sluice_health(server) == 2, "refused once the delay is over"
    assert time.monotonic() - signalled >= 4
