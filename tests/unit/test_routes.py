"""The route table carries each target's provider facts, so that the stages
and telemetry need nothing from the providers."""

from __future__ import annotations

from sluice.config.schema import RouteConfig
from sluice.providers.http import HttpClientPool
from sluice.providers.mock import MockAdapter, MockSettings
from sluice.routes import Target, build_route


async def test_a_target_carries_its_providers_opentelemetry_name() -> None:
    config = RouteConfig.model_validate(
        {
            "name": "r",
            "route_type": "llm/v1/chat",
            "targets": [
                {"model": {"provider": "xai", "name": "grok-4"}},
                {"model": {"provider": "vllm", "name": "llama"}},
            ],
        }
    )
    pool = HttpClientPool()
    try:
        route = build_route(config, pool)
    finally:
        await pool.aclose()
    assert [target.otel_provider for target in route.targets] == ["x_ai", "vllm"]


def test_a_target_built_by_hand_is_reported_under_its_provider() -> None:
    adapter = MockAdapter(MockSettings(provider="mock"))
    assert Target("mock", "m", adapter).otel_provider == "mock"
