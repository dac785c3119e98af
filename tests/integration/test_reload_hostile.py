"""A watched config replaced by a hostile file: a 1.5 KB alias bomb that
would expand to 387 million values. The reload is refused within seconds,
calls keep being answered promptly while it is read, the server's memory
stays put, and the refusal is logged and counted; a good file after it is
served and its hash reported."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from pathlib import Path

import grpc
import pytest
import yaml

from sluice.app import GatewayServer
from sluice.config import load_config
from sluice.config.isolated import LoadTimedOutError, read_config_isolated
from sluice_client.v1 import gateway_pb2_grpc
from tests.integration.test_reload import chat, text_of, until
from tests.telemetry import Recorded
from tests.unit.config.test_loader_bounds import alias_bomb

# A call to a mock route takes about a millisecond; the event loop is never
# held for longer than this while the bomb is read.
SLOWEST_CALL = 0.5  # the stall it guards against lasted over 30 s; a busy CI core adds a few 100 ms
RSS_GROWTH = 50 * 1024 * 1024


def config(reply: str) -> str:
    mock = {"provider": "mock", "name": "m", "reply": reply}
    return yaml.safe_dump(
        {"routes": [{"name": "chat", "route_type": "llm/v1/chat", "model": mock}]}
    )


def rss() -> int:
    """This process's resident memory, in bytes (the server runs in it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def serving_hash(recorded: Recorded) -> list[str]:
    return [labels["sluice.config.hash"] for labels, _ in recorded.points("sluice.config.hash")]


async def test_an_alias_bomb_is_refused_while_calls_are_served_promptly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(config("before"))
    recorded = Recorded()
    server = GatewayServer(
        load_config(path), ["127.0.0.1:0"], config_path=path, poll_interval=0.05,
        telemetry=recorded.telemetry,
    )  # fmt: skip
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    stub = gateway_pb2_grpc.GatewayServiceStub(channel)
    latencies: list[float] = []

    async def call_all_along() -> None:
        while True:
            started = time.perf_counter()
            await asyncio.wait_for(_answer(stub), 5)
            latencies.append(time.perf_counter() - started)

    try:
        assert serving_hash(recorded) == [hashlib.sha256(path.read_bytes()).hexdigest()]
        assert await _answer(stub) == "before"  # and the channel is connected
        running, rss_before = server.gateway, rss()
        calls = asyncio.create_task(call_all_along())
        try:
            with caplog.at_level(logging.ERROR, logger="sluice.reload"):
                refused_at = time.monotonic()
                path.write_text(alias_bomb())
                await until(lambda: recorded.total("sluice.config.reloads", outcome="invalid") == 1)
                refused_in = time.monotonic() - refused_at
        finally:
            calls.cancel()
        assert refused_in < 5.0
        assert len(latencies) > 20, "calls went on being answered during the reload"
        assert max(latencies) < SLOWEST_CALL
        assert rss() - rss_before < RSS_GROWTH
        assert server.gateway is running
        [record] = caplog.records
        assert f"{path}:7: more than 1,000,000 values once aliases expand" in record.getMessage()
        assert serving_hash(recorded) == [hashlib.sha256(config("before").encode()).hexdigest()]

        path.write_text(config("after"))
        await until(lambda: recorded.total("sluice.config.reloads", outcome="success") == 1)
        assert await _answer(stub) == "after"
        assert serving_hash(recorded) == [hashlib.sha256(config("after").encode()).hexdigest()]
    finally:
        await channel.close()
        await server.stop(0)


async def _answer(stub: gateway_pb2_grpc.GatewayServiceAsyncStub) -> str:
    return text_of([response async for response in stub.Chat(chat(), timeout=5)])


async def test_a_reader_past_its_time_bound_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(config("x"))
    started = time.monotonic()
    # No interpreter starts in a millisecond: the bound always passes first.
    with pytest.raises(LoadTimedOutError, match=r"took more than 0\.001 s"):
        await read_config_isolated(path, within=0.001)
    assert time.monotonic() - started < 5.0
