"""Config loading: the users' example loads; every error names file, line and key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sluice.config import ConfigError, load_config, load_default_config
from sluice.config.loader import parse_config
from sluice.providers.anthropic import AnthropicSettings
from sluice.providers.openai import OpenAISettings

USERS_EXAMPLE = """\
routes:
  - name: my-openai-chat
    route_type: llm/v1/chat
    model:
      provider: openai
      name: gpt-4o-mini
      openai_api_key: "{{ secrets.OPENAI_API_KEY }}"
    config:
      max_tokens: 100
  - name: my-anthropic-chat
    route_type: llm/v1/chat
    model:
      provider: anthropic
      name: claude-3-5-haiku-latest
      anthropic_api_key: "{{ secrets.ANTHROPIC_API_KEY }}"
    config:
      temperature: 0.7
"""
SECRETS = {"OPENAI_API_KEY": "sk-test-openai-0123", "ANTHROPIC_API_KEY": "sk-ant-test-4567"}


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "gw.yaml", SECRETS if environ is None else environ)
    return str(caught.value).splitlines()


def test_users_example_loads_with_secrets_from_the_environment() -> None:
    config = parse_config(USERS_EXAMPLE, "gw.yaml", SECRETS)
    openai, anthropic = config.routes
    assert isinstance(openai.model, OpenAISettings)
    assert openai.model.key == "sk-test-openai-0123"
    assert openai.model.base_url == "https://api.openai.com/v1"
    assert openai.config.params().max_tokens == 100
    assert isinstance(anthropic.model, AnthropicSettings)
    assert anthropic.model.key == "sk-ant-test-4567"
    assert anthropic.model.base_url == "https://api.anthropic.com"
    assert anthropic.config.params().temperature == 0.7


def test_secret_values_never_appear_in_a_repr() -> None:
    config = parse_config(USERS_EXAMPLE, "gw.yaml", SECRETS)
    assert "sk-test-openai-0123" not in repr(config)


def test_missing_secret_names_file_line_key_and_secret_but_no_value() -> None:
    lines = problems(USERS_EXAMPLE, {"OPENAI_API_KEY": "sk-test-openai-0123"})
    assert lines == [
        "gw.yaml:15: routes[1].model.anthropic_api_key: "
        "secret ANTHROPIC_API_KEY is not set in environment variable ANTHROPIC_API_KEY"
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("max_tokens: 100", "max_tokens: 100\n      max_tokns: 5"),
            "gw.yaml:10: routes[0].config.max_tokns: unknown key",
        ),
        (
            ("name: gpt-4o-mini", "name: gpt-4o-mini\n      colour: blue"),
            "gw.yaml:7: routes[0].model.colour: unknown key",
        ),
        (
            ("max_tokens: 100", "max_tokens: lots"),
            "gw.yaml:9: routes[0].config.max_tokens: Input should be a valid integer, unable to parse string as an integer",
        ),
        (
            ("temperature: 0.7", "temperature: 7"),
            "gw.yaml:17: routes[1].config.temperature: Input should be less than or equal to 2",
        ),
        (
            (
                "route_type: llm/v1/chat\n    model:\n      provider: openai",
                "route_type: llm/v1/chatt\n    model:\n      provider: openai",
            ),
            "gw.yaml:3: routes[0].route_type: Input should be 'llm/v1/chat', 'llm/v1/completions' or 'llm/v1/embeddings'",
        ),
        (
            ("provider: anthropic", "provider: antropic"),
            "gw.yaml:13: routes[1].model.provider: unknown provider 'antropic'; did you mean 'anthropic'? "
            "(known: anthropic, azure_openai, bedrock, cohere, databricks, deepseek, fireworks, "
            "gemini, groq, llama_cpp, mistral, mlflow, mock, ollama, openai, openrouter, sagemaker, tgi, "
            "together, vertex_ai, vllm, xai)",
        ),
        (
            (
                "name: my-anthropic-chat\n    route_type: llm/v1/chat",
                "name: my-anthropic-chat\n    route_type: llm/v1/embeddings",
            ),
            "gw.yaml:10: routes[1]: provider 'anthropic' does not answer llm/v1/embeddings (it answers llm/v1/chat, llm/v1/completions)",
        ),
        (
            ("name: my-anthropic-chat", "name: my-openai-chat"),
            "gw.yaml:1: routes: route name 'my-openai-chat' is used twice",
        ),
        (("      name: gpt-4o-mini\n", ""), "gw.yaml:4: routes[0].model.name: Field required"),
    ],
)
def test_invalid_config_names_line_and_key(change: tuple[str, str], expected: str) -> None:
    old, new = change
    assert old in USERS_EXAMPLE
    assert problems(USERS_EXAMPLE.replace(old, new, 1)) == [expected]


def test_a_route_needs_model_or_targets() -> None:
    text = "routes:\n  - name: r\n    route_type: llm/v1/chat\n"
    assert problems(text) == [
        "gw.yaml:2: routes[0]: a route names its targets with exactly one of model or targets"
    ]


def test_missing_provider_is_named() -> None:
    text = USERS_EXAMPLE.replace("      provider: anthropic\n", "")
    assert problems(text) == ["gw.yaml:12: routes[1].model.provider: Field required"]


def test_key_given_twice_is_an_error() -> None:
    text = USERS_EXAMPLE.replace("max_tokens: 100", "max_tokens: 100\n      max_tokens: 200")
    assert problems(text) == ["gw.yaml:10: routes[0].config.max_tokens: key given twice"]


def test_alias_and_canonical_key_together_is_an_error() -> None:
    text = USERS_EXAMPLE.replace("name: gpt-4o-mini", "name: gpt-4o-mini\n      api_key: other")
    assert problems(text) == [
        "gw.yaml:4: routes[0].model: give api_key or openai_api_key, not both"
    ]


def test_invalid_yaml_names_the_line() -> None:
    (line,) = problems("routes:\n  - name: [unclosed\n")
    assert line.startswith("gw.yaml:3: invalid YAML:")


def test_empty_file_and_missing_routes() -> None:
    assert problems("") == ["gw.yaml: the file is empty"]
    assert problems("server: {port: 1}\n") == ["gw.yaml:1: routes: Field required"]


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: No such file or directory"):
        load_config(tmp_path / "missing.yaml")


def test_api_base_is_the_sdk_base_url(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        USERS_EXAMPLE.replace(
            "name: gpt-4o-mini", "name: gpt-4o-mini\n      api_base: http://127.0.0.1:8000/v1/"
        )
    )
    config = load_config(path, SECRETS)
    assert config.routes[0].target_configs[0].model.base_url == "http://127.0.0.1:8000/v1"


def test_embedded_default_serves_mock_chat_and_completions() -> None:
    config = load_default_config()
    kinds = {(route.route_type, route.target_configs[0].model.provider) for route in config.routes}
    assert ("llm/v1/chat", "mock") in kinds
    assert ("llm/v1/completions", "mock") in kinds


def test_every_config_example_in_the_readme_loads() -> None:
    readme = (Path(__file__).parents[3] / "README.md").read_text()
    examples = re.findall(r"```yaml\n(.*?)```", readme, flags=re.DOTALL)
    assert len(examples) >= 2
    for example in examples:
        secrets = {name: f"test-{name}" for name in re.findall(r"secrets\.(\w+)", example)}
        assert parse_config(example, "README.md", secrets).routes


NAMESPACED = f"""\
auth:
  keys:
    - name: acme-app
      sha256: {"a" * 64}
      namespaces: NAMESPACES
routes:
  - name: chat
    route_type: llm/v1/chat
    model: {{provider: mock}}
    cache: {{namespace: {{metadata: x-tenant}}}}
"""
NOT_A_NAMESPACE = (
    "a namespace is a metadata value: printable ASCII, not empty, no space at either end"
)


def test_a_key_lists_the_namespaces_it_may_claim() -> None:
    config = parse_config(
        NAMESPACED.replace("NAMESPACES", '[acme, "Acme Corp/eu-1"]'), "gw.yaml", {}
    )
    assert config.auth is not None
    assert config.auth.keys[0].namespaces == ["acme", "Acme Corp/eu-1"]


@pytest.mark.parametrize(
    ("namespaces", "expected"),
    [
        ("acme", "namespaces: Input should be a valid list"),
        ('[""]', f"namespaces[0]: {NOT_A_NAMESPACE}"),
        ('[" acme"]', f"namespaces[0]: {NOT_A_NAMESPACE}"),
        ('["acme\\t"]', f"namespaces[0]: {NOT_A_NAMESPACE}"),
        ("[acmé]", f"namespaces[0]: {NOT_A_NAMESPACE}"),
        ("[1]", "namespaces[0]: Input should be a valid string"),
        (f"[{'x' * 257}]", "namespaces[0]: String should have at most 256 characters"),
        (
            f"[{', '.join(['t'] * 1001)}]",
            "namespaces: List should have at most 1000 items after validation, not 1001",
        ),
    ],
)
def test_a_namespace_must_be_a_value_metadata_can_carry(namespaces: str, expected: str) -> None:
    assert problems(NAMESPACED.replace("NAMESPACES", namespaces), {}) == [
        f"gw.yaml:5: auth.keys[0].{expected}"
    ]


def test_experiments_on_a_redis_cluster_are_refused_naming_the_route() -> None:
    text = """
state: {backend: redis_cluster, url: "redis://127.0.0.1:7000"}
routes:
  - name: ab
    route_type: llm/v1/chat
    targets:
      - {name: a, model: {provider: mock, name: m}}
      - {name: b, model: {provider: mock, name: m}}
"""
    with pytest.raises(ConfigError, match=r"routes ab record experiments.*redis_cluster"):
        parse_config(text, "gw.yaml", {})


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("max_tokens: 100", "max_tokens: 100\n    stream: {max_delay_ms: 51}"),
            "gw.yaml:10: routes[0].stream.max_delay_ms: Input should be less than or equal to 50",
        ),
        (
            ("max_tokens: 100", "max_tokens: 100\n    stream: {max_delay_ms: -1}"),
            "gw.yaml:10: routes[0].stream.max_delay_ms: Input should be greater than or equal to 0",
        ),
        (
            ("max_tokens: 100", "max_tokens: 100\n    stream: {coalesce: sometimes}"),
            "gw.yaml:10: routes[0].stream.coalesce: Input should be a valid boolean, unable to interpret input",
        ),
        (
            ("max_tokens: 100", "max_tokens: 100\n    stream: {max_delay: 5}"),
            "gw.yaml:10: routes[0].stream.max_delay: unknown key",
        ),
        (
            ("name: gpt-4o-mini", "name: gpt-4o-mini\n      max_connections: 0"),
            "gw.yaml:7: routes[0].model.max_connections: Input should be greater than or equal to 1",
        ),
    ],
)
def test_invalid_stream_and_connection_settings_name_line_and_key(
    change: tuple[str, str], expected: str
) -> None:
    old, new = change
    assert old in USERS_EXAMPLE
    assert problems(USERS_EXAMPLE.replace(old, new, 1)) == [expected]


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("workers: 0", "gw.yaml:2: server.workers: a number of at least 1, or auto"),
        ("workers: most", "gw.yaml:2: server.workers: a number of at least 1, or auto"),
        ("workers: true", "gw.yaml:2: server.workers: a number of at least 1, or auto"),
        (
            "max_concurrent_calls: 0",
            "gw.yaml:2: server.max_concurrent_calls: Input should be greater than or equal to 1",
        ),
    ],
)
def test_invalid_worker_settings_name_line_and_key(server: str, expected: str) -> None:
    assert problems(f"server:\n  {server}\n{USERS_EXAMPLE}") == [expected]
