"""`secrets.sources`: the environment, a directory (a Kubernetes secret
volume's layout included) and AWS Secrets Manager (moto's local server), tried
in the declared order; a secret found nowhere, or a source that fails, is
named with its source and key, never a value or a credential."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sluice.config import ConfigError, GatewayConfig
from sluice.config.isolated import read_config_isolated
from sluice.config.loader import parse_config, read_config
from sluice.config.secrets import MAX_SECRET_BYTES, DirectorySource
from sluice.providers.openai import OpenAISettings
from sluice.redaction import redact
from tests.redis_server import free_port
from tests.secrets_manager import (
    ACCESS_KEY_ID,
    REGION,
    SECRET_ACCESS_KEY,
    SecretsManager,
)

ROUTE = """\
routes:
  - name: chat
    route_type: llm/v1/chat
    model: {provider: openai, name: m, api_key: "{{ secrets.UPSTREAM_KEY }}"}
"""


def config(*sources: str) -> str:
    return f"secrets:\n  sources: [{', '.join(sources)}]\n" + ROUTE


def key_of(loaded: GatewayConfig) -> str:
    model = loaded.routes[0].model
    assert isinstance(model, OpenAISettings)
    return model.key


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "gw.yaml", environ or {})
    return str(caught.value).splitlines()


def test_a_secret_is_a_file_in_the_directory_with_one_trailing_newline_removed(
    tmp_path: Path,
) -> None:
    (tmp_path / "UPSTREAM_KEY").write_text("sk-from-a-file-0001\n")
    assert key_of(parse_config(config(f"{{dir: {tmp_path}}}"), "gw.yaml", {})) == (
        "sk-from-a-file-0001"
    )
    (tmp_path / "TWO_LINES").write_text("line one\nline two\n\n")
    assert DirectorySource(tmp_path).get("TWO_LINES") == "line one\nline two\n"
    assert redact("sent sk-from-a-file-0001") == "sent [REDACTED]"


def kubernetes_volume(directory: Path, version: str, value: str) -> None:
    """What the kubelet does: the files in a timestamped directory, `..data`
    swapped atomically to it, each name a symlink through `..data`."""
    payload = directory / f"..2026_01_01_{version}"
    payload.mkdir()
    (payload / "UPSTREAM_KEY").write_text(value)
    (directory / "..data_tmp").symlink_to(payload.name)
    os.replace(directory / "..data_tmp", directory / "..data")
    if not (directory / "UPSTREAM_KEY").is_symlink():
        (directory / "UPSTREAM_KEY").symlink_to("..data/UPSTREAM_KEY")


def test_a_kubernetes_secret_volume_is_read_afresh_at_each_load(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    volume = tmp_path / "secrets"
    volume.mkdir()
    path.write_text(config(f"{{dir: {volume}}}"))
    kubernetes_volume(volume, "v1", "sk-k8s-first-0002")
    assert key_of(read_config(path).register_secrets()) == "sk-k8s-first-0002"
    kubernetes_volume(volume, "v2", "sk-k8s-rotated-0003")
    assert key_of(read_config(path).register_secrets()) == "sk-k8s-rotated-0003"


def test_sources_are_tried_in_the_declared_order(tmp_path: Path) -> None:
    (tmp_path / "UPSTREAM_KEY").write_text("sk-order-file-0004")
    both = {"UPSTREAM_KEY": "sk-order-env-0005"}
    directory = f"{{dir: {tmp_path}}}"
    assert key_of(parse_config(config("env", directory), "gw.yaml", both)) == "sk-order-env-0005"
    assert key_of(parse_config(config(directory, "env"), "gw.yaml", both)) == "sk-order-file-0004"
    assert key_of(parse_config(config("env", directory), "gw.yaml", {})) == "sk-order-file-0004"
    empty = {"UPSTREAM_KEY": ""}
    assert key_of(parse_config(config("env", directory), "gw.yaml", empty)) == (
        "sk-order-file-0004"
    ), "an empty value passes to the next source"


def test_the_default_source_is_the_environment_alone(tmp_path: Path) -> None:
    assert key_of(parse_config(ROUTE, "gw.yaml", {"UPSTREAM_KEY": "sk-env-only-0006"})) == (
        "sk-env-only-0006"
    )
    assert problems(ROUTE) == [
        "gw.yaml:4: routes[0].model.api_key: "
        "secret UPSTREAM_KEY is not set in environment variable UPSTREAM_KEY"
    ]


def test_a_secret_found_nowhere_names_every_source_tried_and_its_key(tmp_path: Path) -> None:
    (tmp_path / "UPSTREAM_KEY").write_text("")
    assert problems(config("env", f"{{dir: {tmp_path}}}")) == [
        "gw.yaml:6: routes[0].model.api_key: secret UPSTREAM_KEY is not set in "
        f"environment variable UPSTREAM_KEY or file {tmp_path}/UPSTREAM_KEY"
    ]


def test_a_source_that_fails_is_a_problem_not_a_pass_to_the_next(tmp_path: Path) -> None:
    (tmp_path / "UPSTREAM_KEY").mkdir()
    environ = {"UPSTREAM_KEY": "sk-never-used-0007"}
    lines = problems(config(f"{{dir: {tmp_path}}}", "env"), environ)
    assert lines == [
        "gw.yaml:6: routes[0].model.api_key: "
        f"secret UPSTREAM_KEY: file {tmp_path}/UPSTREAM_KEY cannot be read: Is a directory"
    ]


def test_a_secret_file_is_read_within_its_bound(tmp_path: Path) -> None:
    (tmp_path / "UPSTREAM_KEY").write_bytes(b"k" * (MAX_SECRET_BYTES + 1))
    (tmp_path / "LATIN1").write_bytes(b"caf\xe9")
    assert problems(config(f"{{dir: {tmp_path}}}")) == [
        "gw.yaml:6: routes[0].model.api_key: secret UPSTREAM_KEY: "
        f"file {tmp_path}/UPSTREAM_KEY is larger than {MAX_SECRET_BYTES:,} bytes"
    ]
    assert problems(config(f"{{dir: {tmp_path}}}").replace("UPSTREAM_KEY", "LATIN1")) == [
        f"gw.yaml:6: routes[0].model.api_key: secret LATIN1: file {tmp_path}/LATIN1 "
        "is not UTF-8 text"
    ]


def test_invalid_sources_are_reported_where_written_and_resolve_nothing() -> None:
    assert problems(config("envv")) == [
        "gw.yaml:2: secrets.sources[0]: "
        "a secret source is env, {dir: PATH} or {aws_secrets_manager: {region, prefix}}"
    ]
    assert problems(config("{aws_secrets_manager: {prefix: p/}}")) == [
        "gw.yaml:2: secrets.sources[0].aws_secrets_manager.region: Field required"
    ]
    assert problems(config()) == [
        "gw.yaml:2: secrets.sources: name at least one source, e.g. [env]"
    ]


def test_the_sources_cannot_come_from_a_secret() -> None:
    lines = problems(config('{dir: "{{ secrets.DIR }}"}'), {"DIR": "/run/secrets"})
    assert lines == [
        "gw.yaml:2: secrets.sources[0].dir: the secret sources cannot themselves come from a secret"
    ]


def test_every_problem_is_reported_at_once() -> None:
    text = ROUTE.replace("name: m,", "name: m, colour: blue, timeout: soon,") + (
        "  - name: other\n"
        "    route_type: llm/v1/chat\n"
        '    model: {provider: openai, name: m, api_key: "{{ secrets.OTHER_KEY }}"}\n'
    )
    assert problems(text) == [
        "gw.yaml:4: routes[0].model.api_key: "
        "secret UPSTREAM_KEY is not set in environment variable UPSTREAM_KEY",
        "gw.yaml:7: routes[1].model.api_key: "
        "secret OTHER_KEY is not set in environment variable OTHER_KEY",
        "gw.yaml:4: routes[0].model.colour: unknown key",
        "gw.yaml:4: routes[0].model.timeout: unknown key",
    ]


def test_a_secret_is_read_from_aws_secrets_manager_with_the_prefix(
    secrets_manager: SecretsManager,
) -> None:
    secrets_manager.put("UPSTREAM_KEY", "sk-from-aws-0008")
    loaded = parse_config(config("env", secrets_manager.source()), "gw.yaml", {})
    assert key_of(loaded) == "sk-from-aws-0008"
    assert redact("sent sk-from-aws-0008") == "sent [REDACTED]"


def test_a_secret_aws_does_not_hold_passes_to_the_next_source(
    secrets_manager: SecretsManager, tmp_path: Path
) -> None:
    (tmp_path / "UPSTREAM_KEY").write_text("sk-after-aws-0009")
    text = config(secrets_manager.source(), f"{{dir: {tmp_path}}}")
    assert key_of(parse_config(text, "gw.yaml", {})) == "sk-after-aws-0009"
    (tmp_path / "UPSTREAM_KEY").unlink()
    assert problems(text) == [
        "gw.yaml:6: routes[0].model.api_key: secret UPSTREAM_KEY is not set in "
        f"AWS Secrets Manager SecretId {secrets_manager.prefix}UPSTREAM_KEY in {REGION} "
        f"or file {tmp_path}/UPSTREAM_KEY"
    ]


def test_a_binary_aws_secret_is_refused_by_name(secrets_manager: SecretsManager) -> None:
    secrets_manager.put_binary("UPSTREAM_KEY", b"\x00\x01binary")
    assert problems(config(secrets_manager.source())) == [
        "gw.yaml:6: routes[0].model.api_key: secret UPSTREAM_KEY: AWS Secrets Manager SecretId "
        f"{secrets_manager.prefix}UPSTREAM_KEY in {REGION} holds no SecretString (binary secret)"
    ]


def test_an_unreachable_aws_names_the_source_and_secret_id_but_no_credential(
    secrets_manager: SecretsManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", f"http://127.0.0.1:{free_port()}")
    text = config(secrets_manager.source()) + (
        "  - name: other\n"
        "    route_type: llm/v1/chat\n"
        '    model: {provider: openai, name: m, api_key: "{{ secrets.OTHER_KEY }}"}\n'
    )
    started = time.monotonic()
    lines = problems(text)
    assert time.monotonic() - started < 30, "the calls are bounded"
    assert len(lines) == 2
    for line, name in zip(lines, ("UPSTREAM_KEY", "OTHER_KEY"), strict=True):
        assert f"secret {name}: AWS Secrets Manager SecretId " in line
        assert f"{secrets_manager.prefix}{name} in {REGION} could not be read: " in line
        assert "EndpointConnectionError" in line
        assert ACCESS_KEY_ID not in line
        assert SECRET_ACCESS_KEY not in line


async def test_a_reload_reads_every_source_afresh_and_returns_its_secrets_for_redaction(
    secrets_manager: SecretsManager, tmp_path: Path
) -> None:
    """A reload reads in a child process: the secrets it resolved come back
    to be registered here."""
    volume = tmp_path / "secrets"
    volume.mkdir()
    secrets_manager.put("AWS_KEY", "sk-reload-aws-0010")
    path = tmp_path / "gw.yaml"
    path.write_text(
        config(f"{{dir: {volume}}}", secrets_manager.source()) + "  - name: other\n"
        "    route_type: llm/v1/chat\n"
        '    model: {provider: openai, name: m, api_key: "{{ secrets.AWS_KEY }}"}\n'
    )
    kubernetes_volume(volume, "v1", "sk-reload-dir-0011")
    first = await read_config_isolated(path)
    assert set(first.secrets) == {"sk-reload-dir-0011", "sk-reload-aws-0010"}
    kubernetes_volume(volume, "v2", "sk-reload-dir-rotated-0012")
    second = await read_config_isolated(path)
    assert set(second.secrets) == {"sk-reload-dir-rotated-0012", "sk-reload-aws-0010"}
    assert redact("sk-reload-dir-rotated-0012") == "sk-reload-dir-rotated-0012"
    second.register_secrets()
    assert redact("sk-reload-dir-rotated-0012 sk-reload-aws-0010") == "[REDACTED] [REDACTED]"
