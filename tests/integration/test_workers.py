"""`sluice serve --workers 2` as real processes: a supervisor and its
workers on one port, restarted, reloaded and drained by signals."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

import sluice
from sluice_client.v1 import gateway_pb2 as pb
from sluice_client.v1 import gateway_pb2_grpc

GRACE = 3.0
CHAT: dict[str, Any] = {"name": "chat", "route_type": "llm/v1/chat", "model": {"provider": "mock"}}
# Limits on the memory backend: the workers may run them only with consent.
LIMITED: dict[str, Any] = {**CHAT, "limits": {"requests": "1000/second"}}


def write_config(path: Path, *routes: dict[str, Any], per_worker: bool = True) -> None:
    config = {
        "server": {"shutdown_grace": GRACE},
        "state": {"backend": "memory", "per_worker": per_worker},
        "telemetry": {"access_log": {"enabled": False}},
        "routes": list(routes),
    }
    path.write_text(yaml.safe_dump(config))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Supervised:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def log_text(self) -> str:
        return self.log.read_text()

    def worker_pids(self) -> dict[int, int]:
        """The latest pid of each worker, from the supervisor's log."""
        started = re.findall(r"worker (\d+) started \(pid (\d+)\)", self.log_text())
        return {int(index): int(pid) for index, pid in started}

    def wait_for_log(self, pattern: str, count: int = 1, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while len(re.findall(pattern, self.log_text())) < count:
            assert time.monotonic() < deadline, f"no {pattern!r} in:\n{self.log_text()}"
            time.sleep(0.05)


def sluice_serve(*args: str, log: Path) -> subprocess.Popen[bytes]:
    source = str(Path(sluice.__file__).parents[1])
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([source, *sys.path])}
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "sluice.cli", "serve", *args], stderr=stderr, env=environ
        )


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "gw.yaml"
    write_config(path, LIMITED)
    return path


@pytest.fixture
def supervised(tmp_path: Path, config_path: Path) -> Iterator[Supervised]:
    port = free_port()
    log = tmp_path / "stderr.log"
    process = sluice_serve(
        "--config", str(config_path), "--port", str(port), "--workers", "2", log=log
    )
    running = Supervised(process, port, log)
    try:
        running.wait_for_log("sluice worker \\d serving", count=2)
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in running.worker_pids().values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def wait_until_exited(pid: int) -> None:
    """Until `pid` has exited (reaped, or a zombie: its sockets are closed)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return
        if state == "Z":
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} still running 10 s after SIGKILL")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def route_names(port: int) -> list[str]:
    """ListRoutes on a connection of its own: the kernel picks its worker."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        listed = stub.ListRoutes(pb.ListRoutesRequest(), timeout=5, wait_for_ready=True)
        return [route.name for route in listed.routes]


def chat(port: int) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        message = pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="hi")])
        responses = stub.Chat(pb.ChatRequest(route="chat", messages=[message]), timeout=5)
        return "".join(r.delta.text for r in responses if r.HasField("delta"))


def test_a_killed_worker_is_restarted_while_calls_keep_succeeding(
    supervised: Supervised,
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{supervised.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    assert chat(supervised.port).startswith("Hello from Sluice!")
    killed = supervised.worker_pids()[0]
    os.kill(killed, signal.SIGKILL)
    # Connections the kernel queued on the killed worker's socket before it
    # closed are reset (README, workers); once it is closed, every new
    # connection goes to the other worker.
    wait_until_exited(killed)
    for _ in range(20):  # the other worker answers while this one is away
        assert route_names(supervised.port) == ["chat"]
    supervised.wait_for_log("worker 0 \\(pid \\d+\\) was killed by SIGKILL: restarting")
    supervised.wait_for_log("sluice worker 0 serving", count=2)
    restarted = supervised.worker_pids()[0]
    assert restarted != killed
    assert alive(restarted)
    assert chat(supervised.port).startswith("Hello from Sluice!")

    started = time.monotonic()
    supervised.process.send_signal(signal.SIGTERM)
    assert supervised.process.wait(timeout=GRACE + 5) == 0
    assert time.monotonic() - started < GRACE
    assert not any(alive(pid) for pid in supervised.worker_pids().values())


def test_sighup_reaches_every_worker(supervised: Supervised, config_path: Path) -> None:
    assert route_names(supervised.port) == ["chat"]
    write_config(config_path, LIMITED, {**CHAT, "name": "added"})
    # Sent before the file watch (a poll each second) can see the change.
    supervised.process.send_signal(signal.SIGHUP)
    supervised.wait_for_log("config reloaded \\(SIGHUP\\)", count=2)
    for _ in range(10):
        assert route_names(supervised.port) == ["chat", "added"]
    # A reload cannot take back the consent the workers started with.
    write_config(config_path, LIMITED, per_worker=False)
    supervised.process.send_signal(signal.SIGHUP)
    supervised.wait_for_log("refused, the running config stays: .*state.per_worker: true", count=2)
    assert route_names(supervised.port) == ["chat", "added"]


def test_workers_drain_when_their_supervisor_is_killed(supervised: Supervised) -> None:
    workers = supervised.worker_pids().values()
    supervised.process.kill()
    deadline = time.monotonic() + GRACE + 5
    while any(alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "a worker outlived its supervisor"
        time.sleep(0.05)


def test_per_worker_limits_need_consent(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    write_config(path, LIMITED, per_worker=False)
    log = tmp_path / "stderr.log"
    args = ("--config", str(path), "--port", str(free_port()), "--workers", "2")
    assert sluice_serve(*args, log=log).wait(timeout=15) == 1
    assert "state.per_worker: true" in log.read_text()


def test_a_taken_port_stops_the_supervisor(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log = tmp_path / "stderr.log"
        process = sluice_serve("--port", str(port), "--workers", "2", log=log)
        assert process.wait(timeout=15) == 1
    assert "could not start" in log.read_text()
