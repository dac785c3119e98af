"""Every provider family Sluice knows, by its config name.

Adding a provider is one module with a `ProviderSettings` subclass and an
adapter, plus one entry in `ModelSettings` here: config validation, pricing,
telemetry and the MLflow translation all read its facts through this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, get_args

from pydantic import Field

from sluice.providers.anthropic import AnthropicSettings
from sluice.providers.azure_openai import AzureOpenAISettings
from sluice.providers.bedrock import BedrockSettings
from sluice.providers.cohere import CohereSettings
from sluice.providers.databricks import DatabricksSettings
from sluice.providers.gemini import GeminiSettings, VertexAISettings
from sluice.providers.llama_cpp import LlamaCppSettings
from sluice.providers.mistral import MistralSettings
from sluice.providers.mlflow import MLflowSettings
from sluice.providers.mock import MockSettings
from sluice.providers.ollama import OllamaSettings
from sluice.providers.openai import OpenAISettings
from sluice.providers.sagemaker import SageMakerSettings
from sluice.providers.settings import ProviderSettings
from sluice.providers.tgi import TGISettings

# `model:` of a route, chosen by its `provider` key.
ModelSettings = Annotated[
    OpenAISettings
    | AzureOpenAISettings
    | AnthropicSettings
    | GeminiSettings
    | VertexAISettings
    | CohereSettings
    | MistralSettings
    | BedrockSettings
    | OllamaSettings
    | TGISettings
    | DatabricksSettings
    | LlamaCppSettings
    | MLflowSettings
    | SageMakerSettings
    | MockSettings,
    Field(discriminator="provider"),
]


def _by_name() -> dict[str, type[ProviderSettings]]:
    """Each settings class under every `provider` its literal admits."""
    (union, _) = get_args(ModelSettings)
    return {
        name: settings
        for settings in get_args(union)
        for name in get_args(settings.model_fields["provider"].annotation)
    }


PROVIDERS: Mapping[str, type[ProviderSettings]] = MappingProxyType(_by_name())
