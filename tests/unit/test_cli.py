"""`sluice check`: lists routes of a valid config; exits 1 with the precise error."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice.cli import main


def test_check_lists_routes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        "routes:\n"
        "  - name: local\n"
        "    route_type: llm/v1/completions\n"
        "    model: {provider: openai, name: qwen, api_base: 'http://127.0.0.1:8000/v1'}\n"
    )
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "1 route(s)" in out
    assert "local" in out
    assert "llm/v1/completions" in out
    assert "openai/qwen" in out


def test_check_reports_the_error_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("routes:\n  - name: x\n    route_type: llm/v1/chat\n    modle: {}\n")
    assert main(["check", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:4: routes[0].modle: unknown key" in err


def test_serve_with_a_bad_config_exits_1_before_listening(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("routes: []\n")
    assert main(["serve", "--config", str(path)]) == 1
    assert "routes: List should have at least 1 item" in capsys.readouterr().err


LIMITED = (
    "routes:\n"
    "  - name: chat\n"
    "    route_type: llm/v1/chat\n"
    "    model: {provider: mock}\n"
    "    limits: {requests: 10/minute}\n"
)


def test_serve_refuses_per_worker_limits_without_consent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(LIMITED)
    assert main(["serve", "--config", str(path), "--workers", "2"]) == 1
    err = capsys.readouterr().err
    assert "state.per_worker: true" in err
    assert "state.backend: redis" in err


def test_check_reports_the_workers_of_the_config_or_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(LIMITED)
    assert main(["check", "--config", str(path)]) == 0
    assert main(["check", "--config", str(path), "--workers", "2"]) == 1
    path.write_text("server: {workers: 2}\n" + LIMITED)
    assert main(["check", "--config", str(path)]) == 1
    assert "state.per_worker: true" in capsys.readouterr().err
    assert main(["check", "--config", str(path), "--workers", "1"]) == 0, "the flag wins"


def test_serve_refuses_port_0_with_workers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "0", "--workers", "2"]) == 1
    assert "port 0 cannot be shared by workers" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_workers_is_a_positive_number_or_auto(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--workers", value])
    assert "use a number of at least 1, or auto" in capsys.readouterr().err


NEEDS_SECRETS = (
    "routes:\n"
    "  - name: a\n"
    "    route_type: llm/v1/chat\n"
    '    model: {provider: openai, name: m, api_key: "{{ secrets.SLUICE_CHECK_A }}"}\n'
    "  - name: b\n"
    "    route_type: llm/v1/chat\n"
    '    model: {provider: anthropic, name: m, api_key: "{{ secrets.SLUICE_CHECK_B }}"}\n'
)


def test_check_reports_missing_secrets_and_every_other_problem_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(NEEDS_SECRETS.replace("name: m,", "name: m, colour: blue,", 1))
    assert main(["check", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:4: routes[0].model.api_key: secret SLUICE_CHECK_A is not set in " in err
    assert f"{path}:7: routes[1].model.api_key: secret SLUICE_CHECK_B is not set in " in err
    assert f"{path}:4: routes[0].model.colour: unknown key" in err


def test_check_without_secrets_validates_the_rest_and_lists_the_secrets_needed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(NEEDS_SECRETS)
    assert main(["check", "--config", str(path), "--no-secrets"]) == 0
    out = capsys.readouterr().out
    assert "2 route(s)" in out
    assert f"SLUICE_CHECK_A           {path}:4: routes[0].model.api_key" in out
    assert f"SLUICE_CHECK_B           {path}:7: routes[1].model.api_key" in out

    path.write_text(NEEDS_SECRETS.replace("llm/v1/chat", "llm/v1/chatt", 1))
    assert main(["check", "--config", str(path), "--no-secrets"]) == 1
    err = capsys.readouterr().err
    assert f"{path}:3: routes[0].route_type:" in err
    assert "SLUICE_CHECK" not in err, "no secret is looked up"
