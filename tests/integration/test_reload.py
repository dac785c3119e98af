"""THE reload test: 50 streams in flight while the config changes twice
(once invalid). All 50 finish on the old config, whole; new calls follow the
new config; the invalid one is refused with its file and line, and health
stays SERVING throughout. Driven in-process through the watched file (written
in place, and swapped the way Kubernetes updates a ConfigMap), and through a
real `sluice serve` receiving SIGHUP."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sluice.app import GATEWAY_SERVICE, GatewayServer
from sluice.config import load_config
from sluice.gateway import Gateway
from sluice_client.v1 import gateway_pb2 as pb
from sluice_client.v1 import gateway_pb2_grpc
from tests.unit.test_reload import kubernetes_mount, kubernetes_update, plain_file, write

STREAMS = 50
OLD_REPLY = " ".join(f"word{i}" for i in range(20))
# Before each word: the streams outlast two reloads, each a child process
# reading the file (about 0.5 s, more on a busy machine).
CHUNK_DELAY = 0.25
OLD_STREAM_SECONDS = 20 * CHUNK_DELAY
NEW_REPLY = "a new reply"


def config(model: str, reply: str, chunk_delay: float = 0.0) -> str:
    mock = {"provider": "mock", "name": model, "reply": reply, "chunk_delay": chunk_delay}
    return yaml.safe_dump(
        {"routes": [{"name": "chat", "route_type": "llm/v1/chat", "model": mock}]},
        sort_keys=False,
    )


OLD = config("old", OLD_REPLY, CHUNK_DELAY)
NEW = config("new", NEW_REPLY)
INVALID = OLD + "  confg: {max_tokens: 5}\n"  # a typo, on the last line


def refusal(path: Path) -> str:
    return f"{path}:{INVALID.count(chr(10))}: routes[0].confg: unknown key"


# Writes `text` as the config and returns once the server has taken it, or
# refused it when `refused`.
Apply = Callable[[str, bool], Awaitable[None]]


def chat() -> pb.ChatRequest:
    return pb.ChatRequest(
        route="chat", messages=[pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="hi")])]
    )


async def read_to_end(
    call: grpc.aio.UnaryStreamCall[pb.ChatRequest, pb.ChatResponse],
) -> list[pb.ChatResponse]:
    responses = []
    while isinstance(response := await call.read(), pb.ChatResponse):
        responses.append(response)
    return responses


def text_of(responses: list[pb.ChatResponse]) -> str:
    return "".join(response.delta.text for response in responses)


async def model_of_a_new_call(stub: gateway_pb2_grpc.GatewayServiceAsyncStub) -> str:
    call = stub.Chat(chat(), timeout=10)
    first = await call.read()
    call.cancel()
    assert isinstance(first, pb.ChatResponse)
    return first.start.model


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 (a file and a process signal nothing)
            await asyncio.sleep(0.01)


def logged(log: Path, text: str) -> bool:
    return text in log.read_text()


async def fifty_streams_while_the_config_changes_twice(
    channel: grpc.aio.Channel, apply: Apply, while_in_flight: Callable[[], None] = lambda: None
) -> None:
    stub = gateway_pb2_grpc.GatewayServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    statuses: list[int] = []

    async def check_health() -> None:
        request = health_pb2.HealthCheckRequest(service=GATEWAY_SERVICE)
        while True:
            statuses.append((await health.Check(request, timeout=5)).status)
            await asyncio.sleep(0.01)

    monitor = asyncio.create_task(check_health())
    try:
        started = time.monotonic()
        calls = [stub.Chat(chat(), timeout=30) for _ in range(STREAMS)]
        firsts = [await call.read() for call in calls]
        assert all(isinstance(f, pb.ChatResponse) and f.start.model == "old" for f in firsts)

        await apply(INVALID, True)
        assert await model_of_a_new_call(stub) == "old", "the old config stays"
        await apply(NEW, False)
        changed = time.monotonic()
        while_in_flight()

        new = await read_to_end(stub.Chat(chat(), timeout=10))
        assert (new[0].start.model, text_of(new), new[-1].finish.reason) == (
            "new",
            NEW_REPLY,
            pb.FINISH_REASON_STOP,
        )

        async def finish(
            call: grpc.aio.UnaryStreamCall[pb.ChatRequest, pb.ChatResponse],
        ) -> tuple[list[pb.ChatResponse], grpc.StatusCode, float]:
            rest = await read_to_end(call)
            return rest, await call.code(), time.monotonic()

        results = await asyncio.gather(*(finish(call) for call in calls))
    finally:
        monitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await monitor
    for rest, code, ended in results:
        assert (text_of(rest), rest[-1].finish.reason, code) == (
            OLD_REPLY,
            pb.FINISH_REASON_STOP,
            grpc.StatusCode.OK,
        )
        assert ended > changed, "in flight across both changes"
        # Not held up by the reloads (generous: CI machines are shared).
        assert OLD_STREAM_SECONDS <= ended - started < OLD_STREAM_SECONDS + 5.0
    assert len(statuses) > 10
    assert set(statuses) == {health_pb2.HealthCheckResponse.SERVING}


@pytest.mark.parametrize(
    ("mount", "update"),
    [(plain_file, write), (kubernetes_mount, kubernetes_update)],
    ids=["written-in-place", "kubernetes-configmap-swap"],
)
async def test_fifty_streams_finish_on_the_old_config_while_the_watched_file_changes_twice(
    tmp_path: Path,
    mount: Callable[[Path, str], Path],
    update: Callable[[Path, str], None],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = mount(tmp_path, OLD)
    closed: list[Gateway] = []
    aclose = Gateway.aclose

    async def recording_aclose(gateway: Gateway, keep: object = ()) -> None:
        closed.append(gateway)
        await aclose(gateway, keep)  # type: ignore[arg-type]

    monkeypatch.setattr(Gateway, "aclose", recording_aclose)
    server = GatewayServer(load_config(path), ["127.0.0.1:0"], config_path=path, poll_interval=0.05)
    await server.start()
    old = server.gateway

    async def apply(text: str, refused: bool) -> None:
        running, errors = server.gateway, len(caplog.records)
        update(path, text)
        if not refused:
            await until(lambda: server.gateway is not running)
            return
        await until(lambda: len(caplog.records) > errors)
        [record] = caplog.records[errors:]
        assert refusal(path) in record.getMessage()
        assert server.gateway is running

    def while_in_flight() -> None:
        assert closed == [], "the old gateway is not closed while its calls run"

    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        with caplog.at_level("ERROR", logger="sluice.reload"):
            await fifty_streams_while_the_config_changes_twice(channel, apply, while_in_flight)
        await until(lambda: bool(closed))
        assert closed == [old], "closed once its calls ended"
    finally:
        await channel.close()
        await server.stop(0)


@contextlib.contextmanager
def sluice_serve(path: Path, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`sluice serve --config path` on a free port; SIGTERM at the end, which
    must exit 0."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sluice = Path(sys.executable).parent / "sluice"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sluice, "serve", "--config", str(path), "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process, f"127.0.0.1:{port}"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


async def test_sluice_serve_reloads_on_sighup_while_fifty_streams_finish(tmp_path: Path) -> None:
    path = plain_file(tmp_path, OLD)
    log = tmp_path / "sluice.log"
    with sluice_serve(path, log) as (process, target):

        async def apply(text: str, refused: bool) -> None:
            expected = (
                f"config reload (SIGHUP) refused, the running config stays:\n{refusal(path)}"
                if refused
                else f"config reloaded (SIGHUP) from {path} (routes: chat)"
            )
            write(path, text)
            process.send_signal(signal.SIGHUP)
            await until(lambda: logged(log, expected))

        await until(lambda: logged(log, "sluice serving on"), within=30)
        async with grpc.aio.insecure_channel(target) as channel:
            await fifty_streams_while_the_config_changes_twice(channel, apply)
    assert not logged(log, "Traceback")
