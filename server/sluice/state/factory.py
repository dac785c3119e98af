"""The shared-state backend a config names."""

from __future__ import annotations

from sluice.config.schema import StateConfig
from sluice.state.base import SharedState
from sluice.state.memory import MemoryState
from sluice.state.redis import RedisState
from sluice.state.redis_cluster import RedisClusterState


def create_state(config: StateConfig) -> SharedState:
    if config.backend == "redis":
        return RedisState(config)
    if config.backend == "redis_cluster":
        return RedisClusterState(config)
    return MemoryState()
