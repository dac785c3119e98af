"""`model:` settings common to every provider; each provider module
subclasses `ProviderSettings` with its own `provider` literal and fields."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

if TYPE_CHECKING:
    from sluice.domain import Operation
    from sluice.providers.base import Adapter
    from sluice.providers.http import HttpClientPool


class StrictModel(BaseModel):
    """Unknown keys are errors, never silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderSettings(StrictModel, abc.ABC):
    # Route types this provider answers; config validation checks it.
    operations: ClassVar[frozenset[Operation]]
    # Base URL when `api_base` is not set (what the provider's SDK calls it).
    default_api_base: ClassVar[str] = ""

    provider: str
    name: str
    api_key: SecretStr | None = None
    api_base: str | None = None

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

    @property
    def key(self) -> str:
        return self.api_key.get_secret_value() if self.api_key else ""

    @abc.abstractmethod
    def create_adapter(self, pool: HttpClientPool) -> Adapter:
        """The adapter for this target, on the pool's client for its origin."""
