"""Azure OpenAI: the OpenAI wire format (openai.py) on an Azure resource.

Two URL surfaces: the v1 API (`api_version: v1`), where
`{api_base}/openai/v1/chat/completions` takes the deployment name as `model`,
and the dated API versions, where the deployment is in the path:
`{api_base}/openai/deployments/{deployment}/chat/completions?api-version=...`
(likewise /completions and /embeddings).

Azure adds content filtering: a stream opens with a chunk of prompt filter
results (no choices), may carry annotation chunks (choices without a delta),
and ends with finish_reason "content_filter" when the output is blocked; a
blocked prompt is an HTTP 400 with code "content_filter" whose innererror
holds the filter results.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, ClassVar, Literal
from urllib.parse import quote

from pydantic import Field, field_validator, model_validator

from sluice.domain import Operation
from sluice.providers.bounds import DEFAULT_BOUNDS, BodyBounds
from sluice.providers.features import ALL_FEATURES
from sluice.providers.openai import MaxTokensField, OpenAICompatibleAdapter
from sluice.providers.settings import ProviderSettings
from sluice.providers.wire import JSON

if TYPE_CHECKING:
    from sluice.providers.http import UpstreamClient

PROVIDER = "azure_openai"
V1 = "v1"
# The latest GA dated version of the inference API; "v1" is the newer,
# undated GA surface.
DEFAULT_API_VERSION = "2024-10-21"


class AzureOpenAIAdapter(OpenAICompatibleAdapter):
    request_id_headers = ("apim-request-id", "x-request-id")

    def __init__(
        self,
        settings: AzureOpenAISettings,
        client: UpstreamClient,
        *,
        connect_timeout: float | None = None,
        bounds: BodyBounds = DEFAULT_BOUNDS,
    ) -> None:
        if settings.api_version == V1:
            root, query = f"{settings.base_url}/openai/v1", ""
        else:
            deployment = quote(settings.deployment or "", safe="")
            root = f"{settings.base_url}/openai/deployments/{deployment}"
            query = f"?api-version={settings.api_version}"
        headers = {"content-type": "application/json"}
        if settings.key:
            if settings.auth == "bearer":
                headers["authorization"] = f"Bearer {settings.key}"
            else:
                headers["api-key"] = settings.key
        super().__init__(
            client,
            provider=PROVIDER,
            model=settings.name,
            urls={
                Operation.CHAT: f"{root}/chat/completions{query}",
                Operation.COMPLETION: f"{root}/completions{query}",
                Operation.EMBEDDING: f"{root}/embeddings{query}",
            },
            headers=headers,
            max_tokens_field=settings.max_tokens_field,
            connect_timeout=connect_timeout,
            bounds=bounds,
        )

    def _error_details(self, error: JSON) -> dict[str, str]:
        """The content filter results of a blocked prompt, as compact JSON.
        The service sends innererror.content_filter_result; the dated API
        spec spells them inner_error.content_filter_results."""
        inner = error.get("innererror") or error.get("inner_error")
        if not isinstance(inner, dict):
            return {}
        result = inner.get("content_filter_result") or inner.get("content_filter_results")
        if not result:
            return {}
        return {"content_filter_result": json.dumps(result, separators=(",", ":"))}


class AzureOpenAISettings(ProviderSettings):
    operations: ClassVar[frozenset[Operation]] = frozenset(Operation)
    adapter = AzureOpenAIAdapter
    features = ALL_FEATURES
    otel_name = "azure.ai.openai"
    # The deployment's model is an OpenAI one: `name` must then be its name.
    price_vendor = "openai"

    provider: Literal["azure_openai"]
    # The resource endpoint, e.g. https://<resource>.openai.azure.com
    api_base: str
    # The deployment to call; on the v1 API, `name` names it instead.
    deployment: str | None = None
    # "v1", or a dated version such as 2024-10-21 or 2025-04-01-preview.
    api_version: str = Field(
        default=DEFAULT_API_VERSION, pattern=r"^(v1|\d{4}-\d{2}-\d{2}(-preview)?)$"
    )
    # How api_key is sent: "api-key", a resource key in the `api-key` header;
    # "bearer", a Microsoft Entra ID token in `Authorization: Bearer`.
    auth: Literal["api-key", "bearer"] = "api-key"
    # Azure serves OpenAI's reasoning models, which refuse `max_tokens`.
    max_tokens_field: MaxTokensField = "max_completion_tokens"

    @field_validator("api_base")
    @classmethod
    def _resource_endpoint(cls, value: str) -> str:
        # The OpenAI SDK's Azure base URL ends in /openai/v1; here it would double.
        if value.rstrip("/").endswith(("/openai", "/openai/v1")):
            raise ValueError("give the resource endpoint without /openai: the path is added")
        return value

    @model_validator(mode="after")
    def _deployment_for_dated_versions(self) -> AzureOpenAISettings:
        if self.api_version != V1 and not self.deployment:
            raise ValueError(
                f"api_version {self.api_version} needs a deployment (or use api_version: v1)"
            )
        return self
