"""The registry: every provider name leads to its settings class, whose
facts the rest of the gateway reads (OpenTelemetry name, MLflow names)."""

from __future__ import annotations

import pytest

from sluice.providers.registry import PROVIDERS


def test_every_provider_is_registered_under_its_config_name() -> None:
    assert sorted(PROVIDERS) == sorted(
        [
            *("openai", "vllm", "groq", "together", "deepseek", "openrouter", "xai", "fireworks"),
            *("azure_openai", "anthropic", "gemini", "vertex_ai", "cohere", "mistral"),
            *("bedrock", "ollama", "tgi", "mock"),
            *("databricks", "llama_cpp", "mlflow", "sagemaker"),
        ]
    )


# The GenAI conventions' names where they differ from Sluice's.
@pytest.mark.parametrize(
    ("provider", "otel_name"),
    [
        ("azure_openai", "azure.ai.openai"),
        ("gemini", "gcp.gemini"),
        ("vertex_ai", "gcp.vertex_ai"),
        ("mistral", "mistral_ai"),
        ("bedrock", "aws.bedrock"),
        ("xai", "x_ai"),
        ("openai", "openai"),
        ("vllm", "vllm"),
        ("anthropic", "anthropic"),
        ("ollama", "ollama"),
        ("tgi", "tgi"),
        ("mock", "mock"),
    ],
)
def test_otel_provider_names(provider: str, otel_name: str) -> None:
    assert PROVIDERS[provider].otel_provider(provider) == otel_name


def test_mlflow_names() -> None:
    names = {
        mlflow: provider
        for provider, settings in PROVIDERS.items()
        for mlflow in settings.mlflow_aliases(provider)
    }
    assert names == {
        "openai": "openai",
        "togetherai": "together",
        "anthropic": "anthropic",
        "cohere": "cohere",
        "mistral": "mistral",
        "gemini": "gemini",
        "huggingface-text-generation-inference": "tgi",
        "bedrock": "bedrock",
        "amazon-bedrock": "bedrock",
        "mlflow-model-serving": "mlflow",
        "databricks": "databricks",
        "databricks-model-serving": "databricks",
    }
