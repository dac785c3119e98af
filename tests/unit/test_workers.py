"""The process model's rules: how many workers, and what they may serve."""

from __future__ import annotations

import os
from typing import Any

import pytest

from sluice.config.schema import GatewayConfig
from sluice.workers import worker_count, workers_problem

CHAT = {"name": "chat", "route_type": "llm/v1/chat", "model": {"provider": "mock"}}
KEY = {"name": "team", "sha256": "0" * 64}


def config(**keys: Any) -> GatewayConfig:
    return GatewayConfig.model_validate({"routes": [CHAT], **keys})


def test_auto_is_the_cores_this_process_may_use() -> None:
    assert worker_count("auto") == len(os.sched_getaffinity(0))
    assert worker_count(3) == 3


@pytest.mark.parametrize(
    "keys",
    [
        {"routes": [{**CHAT, "limits": {"requests": "10/minute"}}]},
        {"auth": {"keys": [{**KEY, "limits": {"concurrent": 2}}]}},
        {"auth": {"keys": [{**KEY, "budget": {"usd": 5, "period": "day"}}]}},
    ],
)
def test_memory_limits_or_budgets_across_workers_need_consent(keys: dict[str, Any]) -> None:
    problem = workers_problem(config(**keys), 2, ["127.0.0.1:50051"])
    assert problem is not None
    assert "state.per_worker: true" in problem
    assert "state.backend: redis" in problem
    consented = config(**keys, state={"backend": "memory", "per_worker": True})
    assert workers_problem(consented, 2, ["127.0.0.1:50051"]) is None
    assert workers_problem(config(**keys), 1, ["127.0.0.1:50051"]) is None, (
        "one process: exact limits"
    )


def test_a_config_without_limits_or_budgets_needs_no_consent() -> None:
    assert workers_problem(config(auth={"keys": [KEY]}), 4, ["127.0.0.1:50051"]) is None


def test_redis_state_is_shared_by_workers() -> None:
    state = {"backend": "redis", "url": "redis://127.0.0.1:6379"}
    limited = config(state=state, routes=[{**CHAT, "limits": {"requests": "10/minute"}}])
    assert workers_problem(limited, 2, ["127.0.0.1:50051"]) is None


def test_workers_cannot_share_port_0() -> None:
    assert workers_problem(config(), 2, ["127.0.0.1:0"]) == (
        "port 0 cannot be shared by workers (each would pick its own): give a port"
    )
    assert workers_problem(config(), 1, ["127.0.0.1:0"]) is None


def test_per_worker_is_only_for_the_memory_backend() -> None:
    state = {"backend": "redis", "url": "redis://127.0.0.1:6379", "per_worker": True}
    with pytest.raises(ValueError, match="per_worker applies to backend memory"):
        config(state=state)
