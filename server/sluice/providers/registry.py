"""Every provider family Sluice knows, by its config name.

Adding a provider is one module with a `ProviderSettings` subclass and an
adapter, plus one entry here.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from sluice.providers.anthropic import AnthropicSettings
from sluice.providers.azure_openai import AzureOpenAISettings
from sluice.providers.bedrock import BedrockSettings
from sluice.providers.cohere import CohereSettings
from sluice.providers.gemini import GeminiSettings, VertexAISettings
from sluice.providers.mistral import MistralSettings
from sluice.providers.mock import MockSettings
from sluice.providers.ollama import OllamaSettings
from sluice.providers.openai import OpenAISettings
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
    | MockSettings,
    Field(discriminator="provider"),
]
