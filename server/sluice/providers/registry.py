"""Every provider family Sluice knows, by its config name.

Adding a provider is one module with a `ProviderSettings` subclass and an
adapter, plus one entry here.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from sluice.providers.anthropic import AnthropicSettings
from sluice.providers.mock import MockSettings
from sluice.providers.openai import OpenAISettings

# `model:` of a route, chosen by its `provider` key.
ModelSettings = Annotated[
    OpenAISettings | AnthropicSettings | MockSettings,
    Field(discriminator="provider"),
]
