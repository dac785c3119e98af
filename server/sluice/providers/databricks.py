"""Databricks model serving endpoints (Mosaic AI Model Serving).

The serving endpoints of a workspace speak OpenAI's wire format: `api_base`
is `https://<workspace>/serving-endpoints`, to which `/chat/completions`,
`/completions` and `/embeddings` are appended, with the serving endpoint's
name as `model` and a Databricks token as bearer. The streams and answers are
OpenAI's (openai.py), usage on the chunks. An error the serving layer
answers itself is Databricks' REST error, `{"error_code", "message"}`; an
error of the model behind it may be OpenAI's `{"error": {...}}`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from sluice.domain import Operation
from sluice.providers.base import ErrorFields
from sluice.providers.bounds import DEFAULT_BOUNDS, BodyBounds
from sluice.providers.features import Feature
from sluice.providers.openai import OpenAICompatibleAdapter
from sluice.providers.settings import ProviderSettings
from sluice.providers.wire import json_headers

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sluice.providers.http import UpstreamClient

PROVIDER = "databricks"


def databricks_error(payload: Any, headers: Mapping[str, str]) -> ErrorFields | None:
    """The fields of Databricks' REST error body (also what an MLflow
    scoring server answers), or None if `payload` is not one."""
    if not isinstance(payload, dict) or "error_code" not in payload:
        return None
    return ErrorFields(
        str(payload.get("message") or "").strip(),
        str(payload.get("error_code") or ""),
        headers.get("x-request-id", ""),
    )


class DatabricksAdapter(OpenAICompatibleAdapter):
    def __init__(
        self,
        settings: DatabricksSettings,
        client: UpstreamClient,
        *,
        connect_timeout: float | None = None,
        bounds: BodyBounds = DEFAULT_BOUNDS,
    ) -> None:
        base = settings.base_url
        super().__init__(
            client,
            provider=PROVIDER,
            model=settings.name,
            urls={
                Operation.CHAT: f"{base}/chat/completions",
                Operation.COMPLETION: f"{base}/completions",
                Operation.EMBEDDING: f"{base}/embeddings",
            },
            headers=json_headers(bearer=settings.key),
            max_tokens_field="max_tokens",
            connect_timeout=connect_timeout,
            bounds=bounds,
        )

    def error_fields(self, status: int, headers: Mapping[str, str], payload: Any) -> ErrorFields:
        fields = databricks_error(payload, headers)
        return fields or super().error_fields(status, headers, payload)


class DatabricksSettings(ProviderSettings):
    """`name` is the serving endpoint's name; `api_base` the workspace's
    `https://<workspace>/serving-endpoints` (there is no default)."""

    # What the endpoint answers depends on the model it serves.
    operations: ClassVar[frozenset[Operation]] = frozenset(Operation)
    # Chat goes over the OpenAI wire format, which carries these as OpenAI does.
    features = frozenset({Feature.JSON_OBJECT, Feature.JSON_SCHEMA, Feature.PROVIDER_OPTIONS})
    adapter = DatabricksAdapter
    mlflow_names = ("databricks", "databricks-model-serving")

    provider: Literal["databricks"]
    api_base: str
