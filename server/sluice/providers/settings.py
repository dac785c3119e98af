"""`model:` settings common to every provider; each provider module
subclasses `ProviderSettings` with its own `provider` literal and fields.

A provider's facts that other modules need live here as class attributes,
read through the registry: its adapter class, its OpenTelemetry name, whose
list prices its models take and what MLflow AI Gateway calls it.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from sluice.providers.bounds import DEFAULT_BOUNDS, BodyBounds
from sluice.providers.features import Feature
from sluice.providers.http import DEFAULT_MAX_CONNECTIONS

if TYPE_CHECKING:
    from sluice.domain import Operation
    from sluice.providers.base import Adapter
    from sluice.providers.http import HttpClientPool, UpstreamClient


class StrictModel(BaseModel):
    """Unknown keys are errors, never silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class AdapterClass(Protocol):
    """An HTTP adapter's constructor. `settings` is Any because each adapter
    takes its own provider's settings class."""

    def __call__(
        self,
        settings: Any,
        client: UpstreamClient,
        /,
        *,
        connect_timeout: float | None,
        bounds: BodyBounds,
    ) -> Adapter: ...


class ProviderSettings(StrictModel, abc.ABC):
    # Route types this provider answers; config validation checks it.
    operations: ClassVar[frozenset[Operation]]
    # Base URL when `api_base` is not set (what the provider's SDK calls it).
    default_api_base: ClassVar[str] = ""
    # What `create_adapter` builds, on the pooled client for `base_url`.
    adapter: ClassVar[AdapterClass]
    # OpenTelemetry's `gen_ai.provider.name`, where the conventions name the
    # provider otherwise than Sluice's config does.
    otel_name: ClassVar[str | None] = None
    # For a host of one vendor's models under the vendor's names (Azure
    # OpenAI), that vendor: its list prices apply (pricing.py).
    price_vendor: ClassVar[str | None] = None
    # The names MLflow AI Gateway configs give this provider (config/mlflow.py).
    mlflow_names: ClassVar[tuple[str, ...]] = ()
    # Whether its API takes image parts; a chat with images is refused on a
    # route with a target whose provider does not (never silently dropped).
    accepts_images: ClassVar[bool] = True
    # What beyond the common core its API can honour (features.py); a
    # request asking a target for another is refused.
    features: ClassVar[frozenset[Feature]] = frozenset()

    provider: str
    name: str
    api_key: SecretStr | None = None
    api_base: str | None = None
    # Connections to this target's upstream host in use at once, per worker;
    # a call finding them all busy waits briefly, then is refused.
    max_connections: int = Field(default=DEFAULT_MAX_CONNECTIONS, ge=1, le=100_000)

    @model_validator(mode="before")
    @classmethod
    def _accept_provider_prefixed_names(cls, data: Any) -> Any:
        """`openai_api_key` / `anthropic_api_base` ... are aliases of
        `api_key` / `api_base`."""
        if not isinstance(data, dict) or not isinstance(data.get("provider"), str):
            return data
        data = dict(data)
        for field in ("api_key", "api_base"):
            alias = f"{data['provider']}_{field}"
            if alias in data:
                if field in data:
                    raise ValueError(f"give {field} or {alias}, not both")
                data[field] = data.pop(alias)
        return data

    @property
    def base_url(self) -> str:
        return (self.api_base or self.default_api_base).rstrip("/")

    def operations_hint(self) -> str:
        """What the answered operations depend on, for the refusal of a
        route this target cannot answer ("" when only on the provider)."""
        return ""

    @property
    def key(self) -> str:
        return self.api_key.get_secret_value() if self.api_key else ""

    def create_adapter(
        self,
        pool: HttpClientPool,
        *,
        connect_timeout: float | None = None,
        bounds: BodyBounds = DEFAULT_BOUNDS,
    ) -> Adapter:
        """The adapter for this target, on the pool's client for its origin;
        `connect_timeout` bounds opening a connection (None: the pool's),
        `bounds` what is held of an answer."""
        client = pool.client_for(self.base_url, self.max_connections)
        return self.adapter(self, client, connect_timeout=connect_timeout, bounds=bounds)

    # The facts by provider name: one settings class may configure several
    # providers (the OpenAI presets), which then override these.

    @classmethod
    def otel_provider(cls, provider: str) -> str:
        """`provider`'s OpenTelemetry `gen_ai.provider.name`."""
        return cls.otel_name or provider

    @classmethod
    def vendor_model(cls, provider: str, model: str) -> tuple[str, str] | None:
        """The vendor and the vendor's name of `model` as `provider` hosts it,
        priced at that vendor's list price; None: priced as the host's own."""
        return None if cls.price_vendor is None else (cls.price_vendor, model)

    @classmethod
    def mlflow_aliases(cls, provider: str) -> tuple[str, ...]:
        """The MLflow AI Gateway names of `provider`."""
        return cls.mlflow_names
