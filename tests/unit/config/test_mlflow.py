"""MLflow AI Gateway configs load with no edits and behave the same; what
cannot be translated is an error naming the MLflow file's line and key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from sluice.cli import main
from sluice.config import ConfigError, GatewayConfig, load_config
from sluice.config.loader import parse_config
from sluice.config.mlflow import is_mlflow_config
from sluice.providers.azure_openai import AzureOpenAISettings
from sluice.providers.bedrock import BedrockSettings
from sluice.providers.openai import OpenAISettings
from sluice.redaction import redact
from sluice_client.v1 import gateway_pb2 as pb
from tests.gateway import RunningGateway, running_gateway
from tests.recordings import recording
from tests.upstream import FakeUpstream, Reply

FIXTURES = Path(__file__).parents[2] / "fixtures" / "mlflow"
ENV_NAMES = (
    "OPENAI_API_KEY",
    "AZURE_AAD_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "COHERE_API_KEY",
    "MISTRAL_API_KEY",
    "TOGETHERAI_API_KEY",
    "PALM_API_KEY",
    "AZURE_OPENAI_API_KEY",
    "DATABRICKS_TOKEN",
)
ENV = {name: f"test-{name.lower().replace('_', '-')}" for name in ENV_NAMES}

OPENAI = "https://api.openai.com/v1"
AZURE = "https://contoso-azureopenai.openai.azure.com"
OPENAI_KEY = ENV["OPENAI_API_KEY"]

# name, route_type, strategy, route request limit, targets as
# (provider, model, weight, API key, base URL).
Route = tuple[str, str, str, str | None, list[tuple[str, str, int, str, str]]]

DATABRICKS = "https://my-workspace.cloud.databricks.com/serving-endpoints"
DATABRICKS_KEY = ENV["DATABRICKS_TOKEN"]

LOADS: dict[str, list[Route]] = {
    "mlflow_serving.yaml": [
        ("fillmask", "llm/v1/completions", "fallback", None,
         [("mlflow", "mask-fill", 1, "", "http://127.0.0.1:9010")]),
        ("embeddings", "llm/v1/embeddings", "fallback", None,
         [("mlflow", "sentence-transformer", 1, "", "http://127.0.0.1:9020")]),
    ],
    "databricks.yaml": [
        ("chat", "llm/v1/chat", "fallback", None,
         [("databricks", "databricks-meta-llama-3-3-70b-instruct", 1, DATABRICKS_KEY, DATABRICKS)]),
        ("embeddings", "llm/v1/embeddings", "fallback", None,
         [("databricks", "databricks-gte-large-en", 1, DATABRICKS_KEY, DATABRICKS)]),
    ],
    "openai.yaml": [
        ("chat", "llm/v1/chat", "fallback", "1/minute",
         [("openai", "gpt-3.5-turbo", 1, OPENAI_KEY, OPENAI)]),
        ("completions", "llm/v1/completions", "fallback", None,
         [("openai", "gpt-3.5-turbo", 1, OPENAI_KEY, OPENAI)]),
        ("embeddings", "llm/v1/embeddings", "fallback", None,
         [("openai", "text-embedding-ada-002", 1, OPENAI_KEY, OPENAI)]),
    ],
    "openai_options.yaml": [
        ("gpt4-chat", "llm/v1/chat", "fallback", "100/2 minutes",
         [("openai", "gpt-4", 1, OPENAI_KEY, OPENAI)]),
    ],
    "legacy_routes.yaml": [
        ("chat", "llm/v1/chat", "fallback", "1/minute",
         [("openai", "gpt-3.5-turbo", 1, OPENAI_KEY, OPENAI)]),
        ("completions", "llm/v1/completions", "fallback", None,
         [("openai", "gpt-3.5-turbo", 1, OPENAI_KEY, OPENAI)]),
        ("embeddings", "llm/v1/embeddings", "fallback", None,
         [("openai", "text-embedding-ada-002", 1, OPENAI_KEY, OPENAI)]),
    ],
    "azure_openai.yaml": [
        ("chat", "llm/v1/chat", "fallback", None,
         [("azure_openai", "gpt-4o-mini", 1, OPENAI_KEY, AZURE)]),
        ("completions", "llm/v1/completions", "fallback", None,
         [("azure_openai", "gpt-4o-mini", 1, ENV["AZURE_AAD_TOKEN"], AZURE)]),
        ("embeddings", "llm/v1/embeddings", "fallback", None,
         [("azure_openai", "text-embedding-ada-002", 1, OPENAI_KEY, AZURE)]),
    ],
    "bedrock.yaml": [
        ("completions", "llm/v1/completions", "fallback", None,
         [("bedrock", "amazon.titan-tg1-large", 1, "",
           "https://bedrock-runtime.us-east-1.amazonaws.com")]),
    ],
    "anthropic.yaml": [
        ("claude-chat", "llm/v1/chat", "fallback", None,
         [("anthropic", "claude-2", 1, ENV["ANTHROPIC_API_KEY"], "https://api.anthropic.com")]),
    ],
    "gemini.yaml": [
        (name, route_type, "fallback", None,
         [("gemini", model, 1, ENV["GEMINI_API_KEY"],
           "https://generativelanguage.googleapis.com")])
        for name, route_type, model in [
            ("embeddings", "llm/v1/embeddings", "gemini-embedding-exp-03-07"),
            ("completions", "llm/v1/completions", "gemini-2.0-flash"),
            ("chat", "llm/v1/chat", "gemini-2.0-flash"),
        ]
    ],
    "cohere.yaml": [
        ("completions", "llm/v1/completions", "fallback", None,
         [("cohere", "command", 1, ENV["COHERE_API_KEY"], "https://api.cohere.com")]),
        ("embeddings", "llm/v1/embeddings", "fallback", None,
         [("cohere", "embed-english-light-v2.0", 1, ENV["COHERE_API_KEY"],
           "https://api.cohere.com")]),
    ],
    "mistral.yaml": [
        ("chat", "llm/v1/chat", "fallback", None,
         [("mistral", "mistral-tiny", 1, ENV["MISTRAL_API_KEY"], "https://api.mistral.ai")]),
        ("embeddings", "llm/v1/embeddings", "fallback", None,
         [("mistral", "mistral-embed", 1, ENV["MISTRAL_API_KEY"], "https://api.mistral.ai")]),
    ],
    "togetherai.yaml": [
        (name, route_type, "fallback", None,
         [("together", model, 1, ENV["TOGETHERAI_API_KEY"], "https://api.together.xyz/v1")])
        for name, route_type, model in [
            ("completions", "llm/v1/completions", "mistralai/Mixtral-8x7B-v0.1"),
            ("chat", "llm/v1/chat", "mistralai/Mixtral-8x7B-Instruct-v0.1"),
            ("embeddings", "llm/v1/embeddings", "togethercomputer/m2-bert-80M-8k-retrieval"),
        ]
    ],
    "huggingface.yaml": [
        ("completions", "llm/v1/completions", "fallback", None,
         [("tgi", "falcon-7b-instruct", 1, "", "http://127.0.0.1:8080")]),
    ],
    "deployments_openai.yaml": [
        (name, route_type, "fallback", None, [("openai", model, 1, OPENAI_KEY, OPENAI)])
        for name, route_type, model in [
            ("chat", "llm/v1/chat", "gpt-3.5-turbo"),
            ("completions", "llm/v1/completions", "gpt-3.5-turbo"),
            ("embeddings", "llm/v1/embeddings", "text-embedding-ada-002"),
        ]
    ],
    "gateway_type_key.yaml": [
        ("gpt-3.5-turbo-completions", "llm/v1/completions", "fallback", None,
         [("openai", "gpt-3.5-turbo", 1, OPENAI_KEY, OPENAI)]),
    ],
    "docs_rate_limited.yaml": [
        ("rate-limited-chat", "llm/v1/chat", "fallback", "100/minute",
         [("openai", "gpt-3.5-turbo", 1, OPENAI_KEY, OPENAI)]),
    ],
    "docs_model_parameters.yaml": [
        ("configured-chat", "llm/v1/chat", "fallback", None,
         [("openai", "gpt-3.5-turbo", 1, OPENAI_KEY, OPENAI)]),
    ],
    "docs_azuread.yaml": [
        ("azure-chat", "llm/v1/chat", "fallback", None,
         [("azure_openai", "gpt-35-turbo", 1, ENV["AZURE_OPENAI_API_KEY"],
           "https://your-resource.openai.azure.com")]),
    ],
    # Anthropic's text completions API is retired: a completions endpoint is a one-turn chat.
    **{
        name: [(route, "llm/v1/completions", "fallback", None,
                [("anthropic", "claude-1.3-100k", 1, ENV["ANTHROPIC_API_KEY"],
                  "https://api.anthropic.com")])]
        for name, route in [
            ("anthropic_completions.yaml", "completions"),
            ("deployments_anthropic.yaml", "completions"),
            # Its anthropic_api_base ends in /v1, to which Sluice's own path is not added twice.
            ("anthropic_api_base.yaml", "completions-claude"),
        ]
    },
    "deployments_bedrock.yaml": [
        ("completions", "llm/v1/completions", "fallback", None,
         [("bedrock", "amazon.titan-tg1-large", 1, "",
           "https://bedrock-runtime.us-east-1.amazonaws.com")]),
    ],
    "docs_bedrock.yaml": [
        ("bedrock-chat", "llm/v1/chat", "fallback", None,
         [("bedrock", "anthropic.claude-instant-v1", 1, "",
           "https://bedrock-runtime.us-east-1.amazonaws.com")]),
    ],
    "docs_gemini.yaml": [
        ("gemini-chat", "llm/v1/chat", "fallback", None,
         [("gemini", "gemini-2.5-flash", 1, ENV["GEMINI_API_KEY"],
           "https://generativelanguage.googleapis.com")]),
    ],
    # Cohere's key before MLflow renamed it, and after.
    **{
        name: [
            (prefix + "completions", "llm/v1/completions", "fallback", None,
             [("cohere", "command", 1, ENV["COHERE_API_KEY"], "https://api.cohere.com")]),
            (prefix + "embeddings", "llm/v1/embeddings", "fallback", None,
             [("cohere", embed, 1, ENV["COHERE_API_KEY"], "https://api.cohere.com")]),
        ]
        for name, prefix, embed in [
            ("cohere_api_key.yaml", "", "embed-english-light-v2.0"),
            ("docs_cohere.yaml", "cohere-", "embed-english-v2.0"),
        ]
    },
    # Its completions endpoint gives openai_api_version with openai_api_type
    # openai: MLflow accepts it and sends OpenAI none, and so does Sluice.
    "traffic_split.yaml": [
        ("completions-gpt4", "llm/v1/completions", "fallback", None,
         [("openai", "gpt-4", 1, "mykey", OPENAI)]),
        ("chat-gpt4", "llm/v1/chat", "fallback", None,
         [("openai", "gpt-4", 1, "MY_API_KEY", OPENAI)]),
        ("chat-gpt5", "llm/v1/chat", "fallback", None,
         [("openai", "gpt-5", 1, "MY_API_KEY", OPENAI)]),
        ("traffic_route1", "llm/v1/chat", "weighted", None,
         [("openai", "gpt-4", 80, "MY_API_KEY", OPENAI),
          ("openai", "gpt-5", 20, "MY_API_KEY", OPENAI)]),
    ],
}  # fmt: skip


def summary(config: GatewayConfig) -> list[Route]:
    return [
        (
            route.name,
            route.route_type,
            route.strategy,
            route.limits.requests.text if route.limits and route.limits.requests else None,
            [
                (t.model.provider, t.model.name, t.weight, t.model.key, t.model.base_url)
                for t in route.target_configs
            ],
        )
        for route in config.routes
    ]


def test_every_fixture_has_an_expectation() -> None:
    assert {path.name for path in FIXTURES.glob("*.yaml")} == set(LOADS)


@pytest.mark.parametrize("name", sorted(LOADS))
def test_mlflow_config_loads_with_no_edits(name: str) -> None:
    assert summary(load_config(FIXTURES / name, ENV)) == LOADS[name]


def test_azure_keys_become_deployment_version_and_auth() -> None:
    chat, completions, _ = load_config(FIXTURES / "azure_openai.yaml", ENV).routes
    for route, auth in ((chat, "api-key"), (completions, "bearer")):
        model = route.target_configs[0].model
        assert isinstance(model, AzureOpenAISettings)
        assert (model.deployment, model.api_version, model.auth) == (
            "gpt-4o-mini-prod",
            "2023-05-15",
            auth,
        )


def test_openai_organization() -> None:
    (options,) = load_config(FIXTURES / "openai_options.yaml", ENV).routes
    model = options.target_configs[0].model
    assert isinstance(model, OpenAISettings)
    assert model.organization == "your_org_id"


@pytest.mark.parametrize(
    ("renewal_period", "rate", "seconds"),
    [
        ("minute", "10/minute", 60),
        ("2 minutes", "10/2 minutes", 120),
        ("Hour", "10/hour", 3600),
        ("seconds", "10/second", 1),
        # As MLflow's `limits` library counts them.
        ("month", "10/30 days", 30 * 86400),
        ("2 years", "10/720 days", 720 * 86400),
    ],
)
def test_renewal_period_becomes_the_same_rate(renewal_period: str, rate: str, seconds: int) -> None:
    text = BASE.replace("renewal_period: minute", f"renewal_period: {renewal_period}")
    limits = parse_config(text, "gw.yaml", ENV).routes[0].limits
    assert limits is not None
    assert limits.requests is not None
    assert (limits.requests.text, limits.requests.count, limits.requests.period) == (
        rate,
        10,
        seconds,
    )


def test_bedrock_aws_keys_from_the_environment() -> None:
    (route,) = load_config(FIXTURES / "bedrock.yaml", ENV).routes
    model = route.target_configs[0].model
    assert isinstance(model, BedrockSettings)
    assert model.region == "us-east-1"
    assert model.aws_access_key_id == ENV["AWS_ACCESS_KEY_ID"]
    assert model.aws_secret_access_key is not None
    assert model.aws_secret_access_key.get_secret_value() == ENV["AWS_SECRET_ACCESS_KEY"]


@pytest.mark.parametrize(
    ("environ", "region"),
    [
        ({"AWS_REGION": "eu-west-1"}, "eu-west-1"),
        ({"AWS_DEFAULT_REGION": "us-west-2"}, "us-west-2"),
    ],
)
def test_bedrock_region_from_the_environment_as_boto3_finds_it(
    environ: dict[str, str], region: str
) -> None:
    text = BASE.replace(
        "        aws_config:\n          aws_region: us-east-1", "        aws_config: {}"
    )
    model = parse_config(text, "gw.yaml", {**ENV, **environ}).routes[1].target_configs[0].model
    assert isinstance(model, BedrockSettings)
    assert model.region == region


# Line numbers in the cases below count from here.
BASE = """\
endpoints:
  - name: chat
    endpoint_type: llm/v1/chat
    model:
      provider: openai
      name: gpt-4o-mini
      config:
        openai_api_key: $OPENAI_API_KEY
    limit:
      renewal_period: minute
      calls: 10
  - name: titan
    endpoint_type: llm/v1/embeddings
    model:
      provider: bedrock
      name: amazon.titan-embed-text-v2:0
      config:
        aws_config:
          aws_region: us-east-1
  - name: chat-b
    endpoint_type: llm/v1/chat
    model:
      provider: anthropic
      name: claude-3-5-haiku-latest
      config:
        anthropic_api_key: $ANTHROPIC_API_KEY
routes:
  - name: split
    task_type: llm/v1/chat
    destinations:
      - name: chat
        traffic_percentage: 70
      - name: chat-b
        traffic_percentage: 30
"""


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "gw.yaml", ENV if environ is None else environ)
    return str(caught.value).splitlines()


def test_base_config_loads() -> None:
    anthropic = ("anthropic", "claude-3-5-haiku-latest")
    openai = ("openai", "gpt-4o-mini")
    assert [
        (name, strategy, limit, [(*target[:3], target[4]) for target in targets])
        for name, _, strategy, limit, targets in summary(parse_config(BASE, "gw.yaml", ENV))
    ] == [
        ("chat", "fallback", "10/minute", [(*openai, 1, OPENAI)]),
        ("titan", "fallback", None, [("bedrock", "amazon.titan-embed-text-v2:0", 1,
                                      "https://bedrock-runtime.us-east-1.amazonaws.com")]),
        ("chat-b", "fallback", None, [(*anthropic, 1, "https://api.anthropic.com")]),
        ("split", "weighted", None, [(*openai, 70, OPENAI),
                                     (*anthropic, 30, "https://api.anthropic.com")]),
    ]  # fmt: skip


SUPPORTED = (
    "amazon-bedrock, anthropic, azure, azuread, bedrock, cohere, databricks, databricks-model-serving, "
    "deepseek, gemini, groq, huggingface-text-generation-inference, mistral, mlflow-model-serving, "
    "ollama, openai, openrouter, togetherai, vertex-ai, xai"
)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # Keys MLflow does not know.
        (("    limit:", "    timeout: 5\n    limit:"), ["gw.yaml:9: endpoints[0].timeout: unknown key"]),
        (
            ("      name: gpt-4o-mini", "      name: gpt-4o-mini\n      colour: blue"),
            ["gw.yaml:7: endpoints[0].model.colour: unknown key"],
        ),
        (
            ("$OPENAI_API_KEY", "$OPENAI_API_KEY\n        openai_api_kye: x"),
            ["gw.yaml:9: endpoints[0].model.config.openai_api_kye: unknown key"],
        ),
        (
            ("calls: 10", "calls: 10\n      per: ip"),
            ["gw.yaml:12: endpoints[0].limit.per: unknown key"],
        ),
        (
            ("aws_region: us-east-1", "aws_region: us-east-1\n          aws_profile: dev"),
            ["gw.yaml:20: endpoints[1].model.config.aws_config.aws_profile: unknown key"],
        ),
        (
            ("task_type: llm/v1/chat", "task_type: llm/v1/chat\n    fallback: true"),
            ["gw.yaml:30: routes[0].fallback: unknown key"],
        ),
        (
            ("traffic_percentage: 30", "traffic_percentage: 30\n        sticky: true"),
            ["gw.yaml:35: routes[0].destinations[1].sticky: unknown key"],
        ),
        # Keys MLflow requires.
        (
            ("        openai_api_key: $OPENAI_API_KEY\n", "        {}\n"),
            ["gw.yaml:7: endpoints[0].model.config.openai_api_key: Field required"],
        ),
        (("    endpoint_type: llm/v1/embeddings\n", ""), ["gw.yaml:12: endpoints[1].endpoint_type: Field required"]),
        (
            ("    endpoint_type: llm/v1/chat\n    model:\n      provider: openai", "    model:\n      provider: openai"),
            ["gw.yaml:2: endpoints[0].endpoint_type: Field required"],
        ),
        (
            ("    endpoint_type: llm/v1/embeddings", "    endpoint_type: llm/v1/embeddings\n    route_type: llm/v1/embeddings"),
            ["gw.yaml:14: endpoints[1].route_type: give endpoint_type or route_type, not both"],
        ),
        (
            ("    endpoint_type: llm/v1/embeddings", "    endpoint_type: llm/v1/embeddings\n    type: llm/v1/embeddings"),
            ["gw.yaml:14: endpoints[1].type: give endpoint_type or type, not both"],
        ),
        (("      calls: 10\n", ""), ["gw.yaml:9: endpoints[0].limit.calls: Field required"]),
        # Values MLflow refuses.
        (
            ("provider: openai", "provider: acme"),
            [f"gw.yaml:5: endpoints[0].model.provider: provider 'acme' has no Sluice equivalent (supported: {SUPPORTED})"],
        ),
        (
            ("calls: 10", "calls: 0"),
            ["gw.yaml:11: endpoints[0].limit.calls: Input should be a whole number above 0"],
        ),
        (
            ("renewal_period: minute", "renewal_period: fortnight"),
            ["gw.yaml:10: endpoints[0].limit.renewal_period: Input should be like 'minute', '10 seconds', 'hour', 'day', 'month' or 'year'"],
        ),
        (
            ("traffic_percentage: 70", "traffic_percentage: 60"),
            ["gw.yaml:30: routes[0].destinations: traffic percentages add up to 90, not 100"],
        ),
        (
            ("traffic_percentage: 30", "traffic_percentage: half"),
            ["gw.yaml:34: routes[0].destinations[1].traffic_percentage: Input should be a whole number from 0 to 100"],
        ),
        (
            ("      - name: chat-b", "      - name: chat-c"),
            ["gw.yaml:33: routes[0].destinations[1].name: 'chat-c' is not the name of an endpoint"],
        ),
        (
            ("      - name: chat-b", "      - name: titan"),
            ["gw.yaml:33: routes[0].destinations[1].name: endpoint 'titan' is llm/v1/embeddings, not the route's llm/v1/chat"],
        ),
        (
            ("task_type: llm/v1/chat", "task_type: llm/v1/chat\n    routing_strategy: LEAST_LATENCY"),
            ["gw.yaml:30: routes[0].routing_strategy: Input should be 'TRAFFIC_SPLIT'"],
        ),
        (("  - name: split", "  - name: titan"), ["gw.yaml:28: routes[0].name: name 'titan' is used twice"]),
        (
            ("aws_region: us-east-1", "aws_region: us-east-1\n          aws_role_arn: arn:aws:iam::1:role/r"),
            ["gw.yaml:20: endpoints[1].model.config.aws_config.aws_role_arn: Sluice does not assume roles: give "
             "aws_access_key_id and aws_secret_access_key, or neither for the standard AWS chain "
             "(environment, profile, container or instance role)"],
        ),
        (
            ("        aws_config:\n          aws_region: us-east-1", "        aws_config: {}"),
            ["gw.yaml:18: endpoints[1].model.config.aws_config.aws_region: Field required (or set AWS_REGION)"],
        ),
        # Errors Sluice's schema finds, at the MLflow key they came from.
        (
            ("  - name: titan", "  - name: titan embed"),
            ["gw.yaml:12: endpoints[1].name: String should match pattern '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'"],
        ),
        (
            ("endpoint_type: llm/v1/embeddings", "endpoint_type: llm/v1/embedding"),
            ["gw.yaml:13: endpoints[1].endpoint_type: Input should be 'llm/v1/chat', 'llm/v1/completions' or 'llm/v1/embeddings'"],
        ),
        (
            ("      name: amazon.titan-embed-text-v2:0\n", ""),
            ["gw.yaml:14: endpoints[1].model.name: Field required"],
        ),
        (
            ("aws_region: us-east-1", "aws_region: US East"),
            ["gw.yaml:19: endpoints[1].model.config.aws_config.aws_region: String should match pattern '^[a-z0-9-]+$'"],
        ),
        (
            # The endpoint's model is also the traffic route's target: said once.
            ("name: claude-3-5-haiku-latest", "name: 42"),
            ["gw.yaml:24: endpoints[2].model.name: Input should be a valid string"],
        ),
    ],
)  # fmt: skip
def test_invalid_mlflow_config_names_line_and_key(
    change: tuple[str, str], expected: list[str]
) -> None:
    old, new = change
    assert old in BASE
    assert problems(BASE.replace(old, new, 1)) == expected


def test_missing_environment_variable_is_named_never_a_value() -> None:
    assert problems(BASE, {"OPENAI_API_KEY": "sk-only-openai-1234"}) == [
        "gw.yaml:26: endpoints[2].model.config.anthropic_api_key: "
        "environment variable ANTHROPIC_API_KEY is not set"
    ]


AZURE_BASE = """\
endpoints:
  - name: chat
    endpoint_type: llm/v1/chat
    model:
      provider: openai
      name: gpt-4o
      config:
        openai_api_key: $OPENAI_API_KEY
        openai_api_type: azure
"""


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "",
            [
                f"gw.yaml:7: endpoints[0].model.config.{key}: Field required with openai_api_type azure"
                for key in ("openai_api_base", "openai_deployment_name", "openai_api_version")
            ],
        ),
        (
            "        openai_api_base: https://x.openai.azure.com\n"
            "        openai_deployment_name: d\n"
            "        openai_api_version: '2024-10-21'\n"
            "        openai_organization: org\n",
            ["gw.yaml:13: endpoints[0].model.config.openai_organization: only with openai_api_type openai"],
        ),
        (
            "        openai_api_base: https://x.openai.azure.com/openai\n"
            "        openai_deployment_name: d\n"
            "        openai_api_version: '2024-10-21'\n",
            ["gw.yaml:10: endpoints[0].model.config.openai_api_base: give the resource endpoint without /openai: the path is added"],
        ),
    ],
)  # fmt: skip
def test_azure_openai_needs_what_mlflow_needs(extra: str, expected: list[str]) -> None:
    assert problems(AZURE_BASE + extra) == expected


@pytest.mark.parametrize(
    ("api_type", "expected"),
    [
        (
            "openai\n        openai_deployment_name: d",
            "gw.yaml:10: endpoints[0].model.config.openai_deployment_name: "
            "only with openai_api_type azure or azuread",
        ),
        (
            "aws",
            "gw.yaml:9: endpoints[0].model.config.openai_api_type: "
            "Input should be 'openai', 'azure' or 'azuread'",
        ),
    ],
)
def test_openai_api_type_rules(api_type: str, expected: str) -> None:
    assert problems(
        AZURE_BASE.replace("openai_api_type: azure", f"openai_api_type: {api_type}")
    ) == [expected]


COMPATIBLE = "an OpenAI-compatible service: use provider openai with openai_api_base"
DATABRICKS = f"{COMPATIBLE} https://<workspace>/serving-endpoints"
AI21 = (
    "AI21 retired the Jurassic-2 API MLflow calls; its Jamba models are on Amazon Bedrock "
    f"(provider bedrock) or {COMPATIBLE}"
)

BAD_FIXTURES = {
    "palm.yaml": [
        f"{line}: routes[{i}].model.provider: provider 'palm' has no Sluice equivalent "
        "(Google retired the PaLM API, use provider gemini)"
        for i, line in enumerate((7, 15, 23))
    ],
    "mistral_completions.yaml": [
        "5: endpoints[0].endpoint_type: MLflow sends Mistral completions to its chat API, "
        "Sluice's mistral completions are fill-in-the-middle (codestral): "
        "use endpoint_type llm/v1/chat"
    ],
    **{
        name: [
            f"{line}: {key}[{i}].model.provider: provider {provider!r} has no Sluice "
            f"equivalent ({reason})"
            for i, line in enumerate(lines)
        ]
        for name, key, provider, lines, reason in [
            ("ai21labs.yaml", "endpoints", "ai21labs", (7,), AI21),
            ("ai21labs_routes.yaml", "routes", "ai21labs", (7,), AI21),
            (
                "mosaicml.yaml",
                "routes",
                "mosaicml",
                (7, 15, 23),
                "MosaicML's API became Databricks Foundation Model APIs, " + DATABRICKS,
            ),
            (
                "docs_mosaicai.yaml",
                "endpoints",
                "mosaicai",
                (7,),
                "Databricks Foundation Model APIs are " + DATABRICKS,
            ),
            (
                "clarifai.yaml",
                "endpoints",
                "clarifai",
                (7, 17),
                f"Clarifai's models are {COMPATIBLE} https://api.clarifai.com/v2/ext/openai/v1",
            ),
            (
                "anyscale.yaml",
                "endpoints",
                "anyscale",
                (7, 14, 21),
                "Anyscale Endpoints closed; for the open models it served, an OpenAI-compatible "
                "service (vLLM, Together...): use provider openai with openai_api_base",
            ),
            (
                "plugin.yaml",
                "endpoints",
                "plugin:foo.providers:FooProvider",
                (7,),
                f"Sluice runs no MLflow plugins; for {COMPATIBLE}",
            ),
        ]
    },
}


def test_every_bad_fixture_has_an_expectation() -> None:
    assert {path.name for path in (FIXTURES / "bad").glob("*.yaml")} == set(BAD_FIXTURES)


@pytest.mark.parametrize("name", sorted(BAD_FIXTURES))
def test_mlflow_config_sluice_cannot_serve_is_a_precise_error(name: str) -> None:
    path = FIXTURES / "bad" / name
    with pytest.raises(ConfigError) as caught:
        load_config(path, ENV)
    assert str(caught.value).splitlines() == [f"{path}:{line}" for line in BAD_FIXTURES[name]]


def test_key_file_is_read_and_its_key_redacted(tmp_path: Path) -> None:
    key_file = tmp_path / "openai.key"
    key_file.write_text("sk-from-a-key-file-0042\n")
    text = BASE.replace("$OPENAI_API_KEY", str(key_file))
    chat = parse_config(text, "gw.yaml", ENV).routes[0]
    assert chat.target_configs[0].model.key == "sk-from-a-key-file-0042"
    assert redact("sent sk-from-a-key-file-0042") == "sent [REDACTED]"


def test_literal_key_is_used_and_redacted() -> None:
    text = BASE.replace("$OPENAI_API_KEY", "sk-literal-in-config-0043")
    chat = parse_config(text, "gw.yaml", ENV).routes[0]
    assert chat.target_configs[0].model.key == "sk-literal-in-config-0043"
    assert redact("sk-literal-in-config-0043") == "[REDACTED]"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\n", "the key file is empty"),
        (b"\xff\xfe-not-text", "the key file cannot be read: it is not UTF-8 text"),
    ],
)
def test_unusable_key_file_is_named_never_its_content(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    key_file = tmp_path / "openai.key"
    key_file.write_bytes(content)
    assert problems(BASE.replace("$OPENAI_API_KEY", str(key_file))) == [
        f"gw.yaml:8: endpoints[0].model.config.openai_api_key: {expected}"
    ]


def test_sluice_sections_may_sit_beside_mlflow_endpoints() -> None:
    config = parse_config("server: {port: 50099}\n" + BASE, "gw.yaml", ENV)
    assert config.server.port == 50099
    assert problems("server: {prot: 1}\n" + BASE) == ["gw.yaml:1: server.prot: unknown key"]


@pytest.mark.parametrize(
    ("data", "mlflow"),
    [
        ({"endpoints": []}, True),
        ({"routes": [{"name": "r", "route_type": "llm/v1/chat", "model": {"config": {}}}]}, True),
        ({"routes": [{"name": "r", "route_type": "llm/v1/chat", "model": {"provider": "mock"}}]}, False),
        ({"routes": [{"name": "r", "targets": [{"model": {"provider": "mock"}}]}]}, False),
        ({"routes": "not a list"}, False),
        (["not", "a", "mapping"], False),
    ],
)  # fmt: skip
def test_mlflow_form_is_told_from_sluice_form(data: object, mlflow: bool) -> None:
    assert is_mlflow_config(data) is mlflow


def test_sluice_check_lists_the_routes_of_an_mlflow_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    assert main(["check", "--config", str(FIXTURES / "traffic_split.yaml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "config is valid: 4 route(s)"
    assert lines[1].split() == ["completions-gpt4", "llm/v1/completions", "openai/gpt-4"]
    assert lines[4].split() == ["traffic_route1", "llm/v1/chat", "openai/gpt-4,", "openai/gpt-5"]


def chat_request(route: str) -> pb.ChatRequest:
    return pb.ChatRequest(
        route=route, messages=[pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="Hi")])]
    )


async def chat(gateway: RunningGateway, route: str) -> list[pb.ChatResponse]:
    return [response async for response in gateway.stub.Chat(chat_request(route), timeout=10)]


def quota_subject(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            failure = error_details_pb2.QuotaFailure()
            detail.Unpack(failure)
            return str(failure.violations[0].subject)
    raise AssertionError("no QuotaFailure detail")


def fixture(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((FIXTURES / name).read_text())
    assert isinstance(loaded, dict)
    return loaded


async def test_mlflow_endpoint_serves_a_chat_and_keeps_its_limit() -> None:
    """MLflow's own OpenAI example, pointed at a loopback OpenAI: the chat
    streams with the key from the environment, and its `limit` (1 call a
    minute) refuses the second call, as MLflow's answers 429."""
    config = fixture("openai.yaml")
    async with FakeUpstream(Reply(chunks=[recording("openai_chat_stream.txt")])) as upstream:
        config["endpoints"][0]["model"]["config"]["openai_api_base"] = f"{upstream.base_url}/v1"
        async with running_gateway(config, ENV) as gateway:
            responses = await chat(gateway, "chat")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await chat(gateway, "chat")

    start = responses[0].start
    assert (start.provider, start.route, start.model) == ("openai", "chat", "gpt-4o-2024-08-06")
    assert "".join(r.delta.text for r in responses).startswith("I'm unable to provide")
    assert responses[-1].finish.reason == pb.FINISH_REASON_STOP
    (seen,) = upstream.requests
    assert (seen.method, seen.path) == ("POST", "/v1/chat/completions")
    assert seen.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert seen.json()["model"] == "gpt-3.5-turbo"
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert quota_subject(refused.value) == "route:chat/requests"


async def test_mlflow_traffic_route_calls_its_destinations_upstream() -> None:
    """MLflow's traffic route, all of its traffic on one destination: every
    call reaches that endpoint's upstream with that endpoint's model."""
    config = fixture("traffic_split.yaml")
    reply = Reply(chunks=[recording("openai_chat_stream.txt")])
    async with FakeUpstream(reply) as gpt4, FakeUpstream(reply) as gpt5:
        for endpoint, upstream in zip(config["endpoints"][1:], (gpt4, gpt5), strict=True):
            endpoint["model"]["config"]["openai_api_base"] = f"{upstream.base_url}/v1"
        gpt4_share, gpt5_share = config["routes"][0]["destinations"]
        gpt4_share["traffic_percentage"], gpt5_share["traffic_percentage"] = 100, 0
        async with running_gateway(config, ENV) as gateway:
            for _ in range(3):
                responses = await chat(gateway, "traffic_route1")
                assert responses[-1].finish.reason == pb.FINISH_REASON_STOP
    assert [request.json()["model"] for request in gpt4.requests] == ["gpt-4"] * 3
    assert gpt5.requests == []


def one_endpoint(provider: str, config: str, endpoint_type: str = "llm/v1/chat") -> str:
    return (
        "endpoints:\n  - name: e\n    endpoint_type: " + endpoint_type + "\n    model:\n"
        f"      provider: {provider}\n      name: m\n      config:\n" + config
    )


# MLflow 3.17's Provider enum, each with its documented config keys, and what
# Sluice makes of it: (provider, api_base) or the alternative its refusal names.
# mlflow-model-serving, databricks and databricks-model-serving are translated
# where their Sluice providers are defined.
MLFLOW_3_17: dict[str, tuple[str, tuple[str, str] | str]] = {
    "openai": ("        openai_api_key: k-openai\n", ("openai", OPENAI)),
    "azure": (
        "        openai_api_key: k-azure\n        openai_api_base: https://r.openai.azure.com/\n"
        "        openai_api_version: '2024-10-21'\n        openai_deployment_name: d\n",
        ("azure_openai", "https://r.openai.azure.com"),
    ),
    "azuread": (
        "        openai_api_key: k-azuread\n        openai_api_base: https://r.openai.azure.com/\n"
        "        openai_api_version: '2024-10-21'\n        openai_deployment_name: d\n",
        ("azure_openai", "https://r.openai.azure.com"),
    ),
    "anthropic": ("        anthropic_api_key: k-anthropic\n", ("anthropic", "https://api.anthropic.com")),
    "cohere": ("        cohere_api_key: k-cohere\n", ("cohere", "https://api.cohere.com")),
    "gemini": ("        gemini_api_key: k-gemini\n",
               ("gemini", "https://generativelanguage.googleapis.com")),
    "bedrock": ("        aws_config: {aws_region: eu-west-1}\n",
                ("bedrock", "https://bedrock-runtime.eu-west-1.amazonaws.com")),
    "amazon-bedrock": ("        aws_config: {aws_region: eu-west-1}\n",
                       ("bedrock", "https://bedrock-runtime.eu-west-1.amazonaws.com")),
    "mistral": ("        mistral_api_key: k-mistral\n", ("mistral", "https://api.mistral.ai")),
    "togetherai": ("        togetherai_api_key: k-together\n",
                   ("together", "https://api.together.xyz/v1")),
    "huggingface-text-generation-inference": (
        "        hf_server_url: http://10.0.0.9:8080\n", ("tgi", "http://10.0.0.9:8080")),
    "groq": ("        api_key: k-groq\n", ("groq", "https://api.groq.com/openai/v1")),
    "deepseek": ("        api_key: k-deepseek\n        api_base: https://api.deepseek.com/v1\n",
                 ("deepseek", "https://api.deepseek.com/v1")),
    "xai": ("        api_key: k-xai\n", ("xai", "https://api.x.ai/v1")),
    "openrouter": ("        api_key: k-openrouter\n", ("openrouter", "https://openrouter.ai/api/v1")),
    # MLflow calls Ollama's /v1; Sluice's ollama speaks the native API at the root.
    "ollama": ("        api_base: http://10.0.0.7:11434/v1\n", ("ollama", "http://10.0.0.7:11434")),
    "vertex_ai": (
        "        vertex_project: p-1\n        vertex_location: europe-west4\n"
        "        api_key: $VERTEX_TOKEN\n",
        ("vertex_ai", "https://europe-west4-aiplatform.googleapis.com"),
    ),
    "ai21labs": ("        ai21labs_api_key: k\n", "Amazon Bedrock (provider bedrock)"),
    "mosaicml": ("        mosaicml_api_key: k\n", "https://<workspace>/serving-endpoints"),
    "palm": ("        palm_api_key: k\n", "use provider gemini"),
    "litellm": ("        litellm_api_key: k\n", "the LiteLLM proxy with provider openai"),
    "portkey": ("        portkey_api_key: k\n", "https://api.portkey.ai/v1 with provider openai"),
    "sap-ai-core": ("        api_key: k\n", "configure the model's own provider"),
    "typesafe": ("        typesafe_api_key: k\n", "call TypeSafe directly"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(MLFLOW_3_17))
def test_every_mlflow_3_17_provider_loads_or_names_the_alternative(name: str) -> None:
    config, outcome = MLFLOW_3_17[name]
    # TGI answers completions only, as MLflow's provider does.
    text = one_endpoint(
        name, config, "llm/v1/completions" if name.startswith("hugging") else "llm/v1/chat"
    )
    environ = {**ENV, "VERTEX_TOKEN": "ya29.vertex-token-0044"}
    if isinstance(outcome, str):
        (problem,) = problems(text, environ)
        assert problem.startswith(f"gw.yaml:5: endpoints[0].model.provider: provider {name!r}")
        assert outcome in problem
        return
    model = parse_config(text, "gw.yaml", environ).routes[0].target_configs[0].model
    assert (model.provider, model.base_url) == outcome


def test_azure_provider_names_are_the_openai_api_type() -> None:
    keys = MLFLOW_3_17["azure"][0]
    for name, auth in (("azure", "api-key"), ("azuread", "bearer")):
        model = parse_config(one_endpoint(name, keys), "gw.yaml", ENV).routes[0].target_configs[0]
        assert isinstance(model.model, AzureOpenAISettings)
        assert (model.model.auth, model.model.deployment, model.model.key) == (auth, "d", "k-azure")
    assert problems(one_endpoint("azuread", keys + "        openai_api_type: azure\n")) == [
        "gw.yaml:12: endpoints[0].model.config.openai_api_type: "
        "provider azuread is openai_api_type azuread"
    ]


def test_ollama_default_key_is_no_key_and_no_secret() -> None:
    text = one_endpoint("ollama", "        api_key: ollama\n")
    model = parse_config(text, "gw.yaml", ENV).routes[0].target_configs[0].model
    assert (model.key, model.base_url) == ("", "http://localhost:11434")
    assert redact("provider ollama") == "provider ollama"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            "        vertex_project: p-1\n        vertex_credentials: /etc/sa.json\n",
            "gw.yaml:9: endpoints[0].model.config.vertex_credentials: Sluice does not fetch "
            "Google credentials: give api_key, an OAuth access token ($ENV_VAR, e.g. from "
            "gcloud auth print-access-token)",
        ),
        (
            "        vertex_project: p-1\n",
            "gw.yaml:7: endpoints[0].model.config.api_key: Sluice does not fetch "
            "Google credentials: give api_key, an OAuth access token ($ENV_VAR, e.g. from "
            "gcloud auth print-access-token)",
        ),
        (
            "        api_key: t\n",
            "gw.yaml:7: endpoints[0].model.config.vertex_project: Field required",
        ),
    ],
)
def test_vertex_ai_needs_a_project_and_an_access_token(config: str, expected: str) -> None:
    assert problems(one_endpoint("vertex_ai", config)) == [expected]


def test_sampling_defaults_in_model_config_are_the_route_defaults() -> None:
    (route,) = load_config(FIXTURES / "docs_model_parameters.yaml", ENV).routes
    assert (route.config.temperature, route.config.max_tokens, route.config.top_p) == (
        0.7,
        1000,
        0.9,
    )
    assert problems(one_endpoint("openai", "        openai_api_key: k\n        top_p: 2\n")) == [
        "gw.yaml:9: endpoints[0].model.config.top_p: Input should be less than or equal to 1"
    ]


def test_traffic_route_samples_as_its_destinations() -> None:
    both = BASE.replace("$OPENAI_API_KEY", "$OPENAI_API_KEY\n        temperature: 0.2").replace(
        "$ANTHROPIC_API_KEY", "$ANTHROPIC_API_KEY\n        temperature: 0.2"
    )
    split = parse_config(both, "gw.yaml", ENV).routes[3]
    assert (split.name, split.config.temperature) == ("split", 0.2)
    one = BASE.replace("$OPENAI_API_KEY", "$OPENAI_API_KEY\n        temperature: 0.2")
    assert problems(one) == [
        "gw.yaml:31: routes[0].destinations: their endpoints set different temperature, "
        "max_tokens or top_p; a Sluice route has one set of defaults"
    ]


def test_a_bare_list_of_routes_is_mlflow_2_5s_first_form() -> None:
    text = (FIXTURES / "gateway_type_key.yaml").read_text().replace("routes:\n", "")
    assert summary(parse_config(text, "gw.yaml", ENV)) == LOADS["gateway_type_key.yaml"]
    assert problems(text.replace("provider: openai", "provider: palm")) == [
        "gw.yaml:6: [0].model.provider: provider 'palm' has no Sluice equivalent "
        "(Google retired the PaLM API, use provider gemini)"
    ]


def test_cohere_takes_one_of_its_two_key_names() -> None:
    both = "        cohere_api_key: a-key\n        api_key: b-key\n"
    assert problems(one_endpoint("cohere", both)) == [
        "gw.yaml:9: endpoints[0].model.config.api_key: give cohere_api_key or api_key, not both"
    ]


async def test_mlflow_anthropic_completions_endpoint_is_a_one_turn_chat() -> None:
    """MLflow's Anthropic example answers its completions endpoint: the prompt
    goes to Anthropic's Messages API as the user's one message."""
    config = fixture("anthropic_completions.yaml")
    reply = Reply(chunks=[recording("anthropic_messages_text_stream.txt")])
    async with FakeUpstream(reply) as upstream:
        config["endpoints"][0]["model"]["config"]["anthropic_api_base"] = upstream.base_url
        async with running_gateway(config, ENV) as gateway:
            request = pb.CompleteRequest(route="completions", prompt="Say hello")
            responses = [r async for r in gateway.stub.Complete(request, timeout=10)]
    assert "".join(r.delta.text for r in responses) == "Hello there!"
    assert responses[-1].finish.reason == pb.FINISH_REASON_STOP
    (seen,) = upstream.requests
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == ENV["ANTHROPIC_API_KEY"]
    body = seen.json()
    assert body["model"] == "claude-1.3-100k"
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Say hello"}]}
    ]
