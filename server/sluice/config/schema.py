"""The config file's schema. Unknown keys are errors (StrictModel)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from sluice.domain import GenerationParams, Operation
from sluice.providers.registry import ModelSettings
from sluice.providers.settings import StrictModel

ROUTE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class GenerationDefaults(StrictModel):
    """A route's `config:`: default generation parameters a request may override."""

    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, gt=0)
    stop: list[str] = Field(default_factory=list)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    seed: int | None = None
    reasoning_budget_tokens: int | None = Field(default=None, gt=0)

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop_is_a_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    def params(self) -> GenerationParams:
        return GenerationParams(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            stop=tuple(self.stop),
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            seed=self.seed,
            reasoning_budget_tokens=self.reasoning_budget_tokens,
        )


class RouteConfig(StrictModel):
    name: str = Field(pattern=ROUTE_NAME_PATTERN)
    route_type: Literal["llm/v1/chat", "llm/v1/completions", "llm/v1/embeddings"]
    model: ModelSettings
    config: GenerationDefaults = GenerationDefaults()

    @property
    def operation(self) -> Operation:
        return Operation(self.route_type)

    @model_validator(mode="after")
    def _provider_answers_route_type(self) -> RouteConfig:
        if self.operation not in self.model.operations:
            answers = ", ".join(sorted(op.value for op in self.model.operations))
            raise ValueError(
                f"provider {self.model.provider!r} does not answer {self.route_type} "
                f"(it answers {answers})"
            )
        return self


class ServerConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(default=50051, ge=0, le=65535)
    # Seconds in-flight streams get to finish after SIGTERM/SIGINT.
    shutdown_grace: float = Field(default=30.0, ge=0.0)


class GatewayConfig(StrictModel):
    server: ServerConfig = ServerConfig()
    routes: list[RouteConfig] = Field(min_length=1)

    @field_validator("routes")
    @classmethod
    def _route_names_are_unique(cls, routes: list[RouteConfig]) -> list[RouteConfig]:
        seen: set[str] = set()
        for route in routes:
            if route.name in seen:
                raise ValueError(f"route name {route.name!r} is used twice")
            seen.add(route.name)
        return routes
