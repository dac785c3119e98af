"""build_telemetry: which exporters, from the config or the OTEL_* environment.

The console exporters make the choice visible without a network: what they
print goes to stderr, which is asserted on here.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import INVALID_SPAN

from sluice.config import ConfigError
from sluice.config.schema import TelemetryConfig
from sluice.telemetry import Telemetry
from sluice.telemetry.setup import build_telemetry


def telemetry_config(**keys: Any) -> TelemetryConfig:
    return TelemetryConfig.model_validate(keys)


async def exported_spans(
    capsys: pytest.CaptureFixture[str], config: TelemetryConfig, environ: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Make one span named `probe`; the spans the console exporter printed."""
    telemetry = build_telemetry(config, environ)
    with telemetry.tracer.start_as_current_span("probe"):
        pass
    await telemetry.aclose()
    return console_objects(capsys.readouterr().err)


def console_objects(text: str) -> list[dict[str, Any]]:
    """The console exporters print indented JSON objects one after another."""
    decoder = json.JSONDecoder()
    objects, position = [], 0
    while (position := _skip_space(text, position)) < len(text):
        found, position = decoder.raw_decode(text, position)
        objects.append(found)
    return objects


def _skip_space(text: str, position: int) -> int:
    return len(text) - len(text[position:].lstrip())


# --- which trace exporters ----------------------------------------------------------


async def test_nothing_is_exported_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert await exported_spans(capsys, telemetry_config(), {}) == []


async def test_the_environment_chooses_when_the_config_does_not(
    capsys: pytest.CaptureFixture[str],
) -> None:
    spans = await exported_spans(capsys, telemetry_config(), {"OTEL_TRACES_EXPORTER": "console"})
    assert [span["name"] for span in spans] == ["probe"]


async def test_the_config_wins_over_the_environment(capsys: pytest.CaptureFixture[str]) -> None:
    environ = {"OTEL_TRACES_EXPORTER": "console"}
    assert await exported_spans(capsys, telemetry_config(traces_exporter=["none"]), environ) == []
    assert await exported_spans(capsys, telemetry_config(traces_exporter=[]), environ) == []
    spans = await exported_spans(
        capsys, telemetry_config(traces_exporter="console"), {"OTEL_TRACES_EXPORTER": "none"}
    )
    assert [span["name"] for span in spans] == ["probe"]


@pytest.mark.parametrize("value", ["console,none", " none , console ", "console,console"])
async def test_an_environment_comma_list_is_read_whole(
    capsys: pytest.CaptureFixture[str], value: str
) -> None:
    spans = await exported_spans(capsys, telemetry_config(), {"OTEL_TRACES_EXPORTER": value})
    assert [span["name"] for span in spans] == ["probe"], "once each, `none` adds nothing"


async def test_an_empty_environment_variable_counts_as_unset(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await exported_spans(capsys, telemetry_config(), {"OTEL_TRACES_EXPORTER": ""}) == []


async def test_no_span_is_made_when_none_is_exported() -> None:
    # The caller's trace context still reaches upstreams: the integration
    # test of tracing off checks the traceparent the upstream receives.
    telemetry = build_telemetry(telemetry_config(), {})
    assert not telemetry.tracing
    assert telemetry.tracer.start_span("probe") is INVALID_SPAN
    await telemetry.aclose()


# --- OTEL_SDK_DISABLED --------------------------------------------------------------


@pytest.mark.parametrize("value", ["true", "TRUE", " True "])
async def test_sdk_disabled_turns_every_exporter_off_but_keeps_the_access_log(
    capsys: pytest.CaptureFixture[str], value: str
) -> None:
    config = telemetry_config(
        traces_exporter="console", metrics_exporter="console", logs_exporter="console"
    )
    telemetry = build_telemetry(config, {"OTEL_SDK_DISABLED": value})
    with telemetry.tracer.start_as_current_span("probe"):
        telemetry.instruments.requests.add(1)
        assert telemetry.access_log is not None
        telemetry.access_log.write({"call": 1})
    await telemetry.aclose()
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out == '{"call":1}\n'


async def test_sdk_disabled_false_changes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    environ = {"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "console"}
    spans = await exported_spans(capsys, telemetry_config(), environ)
    assert [span["name"] for span in spans] == ["probe"]


# --- service name ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config_name", "environ", "expected"),
    [
        (None, {}, "sluice"),
        (None, {"OTEL_SERVICE_NAME": "from-env"}, "from-env"),
        ("from-config", {"OTEL_SERVICE_NAME": "from-env"}, "from-config"),
    ],
)
async def test_service_name_precedence(
    capsys: pytest.CaptureFixture[str],
    config_name: str | None,
    environ: dict[str, str],
    expected: str,
) -> None:
    config = telemetry_config(service_name=config_name, traces_exporter="console")
    [span] = await exported_spans(capsys, config, environ)
    resource = span["resource"]["attributes"]
    assert resource["service.name"] == expected
    assert resource["service.version"] == "0.1.0"


# --- errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "OTEL_TRACES_EXPORTER",
            "otlp,zipkin",
            "environment: OTEL_TRACES_EXPORTER: unknown exporter 'zipkin'; use otlp, console or none",
        ),
        (
            "OTEL_METRICS_EXPORTER",
            "jaeger",
            "environment: OTEL_METRICS_EXPORTER: unknown exporter 'jaeger'; use otlp, prometheus, console or none",
        ),
        (
            "OTEL_LOGS_EXPORTER",
            "prometheus",
            "environment: OTEL_LOGS_EXPORTER: unknown exporter 'prometheus'; use otlp, console or none",
        ),
    ],
)
def test_an_unknown_exporter_in_the_environment_is_named_with_the_choices(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        build_telemetry(telemetry_config(), {variable: value})
    assert str(caught.value) == message


def test_an_unknown_variable_is_not_checked_where_the_config_decides() -> None:
    telemetry = build_telemetry(
        telemetry_config(traces_exporter="none"), {"OTEL_TRACES_EXPORTER": "zipkin"}
    )
    assert isinstance(telemetry, Telemetry)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "environment: OTEL_EXPORTER_OTLP_PROTOCOL: unknown protocol 'http/json'; use grpc or http/protobuf",
        ),
        (
            {"OTEL_LOGS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "udp"},
            "environment: OTEL_EXPORTER_OTLP_LOGS_PROTOCOL: unknown protocol 'udp'; use grpc or http/protobuf",
        ),
        (
            {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_PORT": "http"},
            "environment: OTEL_EXPORTER_PROMETHEUS_PORT: 'http' is not a port number (0-65535)",
        ),
        (
            {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_PORT": "70000"},
            "environment: OTEL_EXPORTER_PROMETHEUS_PORT: '70000' is not a port number (0-65535)",
        ),
    ],
)
def test_an_unusable_setting_in_the_environment_is_named(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        build_telemetry(telemetry_config(), environ)
    assert str(caught.value) == message


def test_settings_of_an_unused_exporter_are_not_checked() -> None:
    environ = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json", "OTEL_EXPORTER_PROMETHEUS_PORT": "x"}
    assert isinstance(build_telemetry(telemetry_config(), environ), Telemetry)


# --- console output and the access log ------------------------------------------------


async def test_console_exporters_write_to_stderr_and_leave_stdout_to_the_access_log(
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = telemetry_config(
        traces_exporter="console", metrics_exporter="console", logs_exporter="console"
    )
    telemetry = build_telemetry(config, {})
    with telemetry.tracer.start_as_current_span("probe") as span:
        telemetry.instruments.requests.add(1, {"sluice.route": "chat"})
        assert telemetry.access_log is not None
        telemetry.access_log.write({"route": "chat", "tokens": 3})
    await telemetry.aclose()
    captured = capsys.readouterr()

    assert captured.out == '{"route":"chat","tokens":3}\n'
    printed = console_objects(captured.err)
    [exported_span] = [item for item in printed if item.get("name") == "probe"]
    assert exported_span["context"]["span_id"] == f"0x{span.get_span_context().span_id:016x}"
    [log_record] = [item for item in printed if "body" in item]
    assert log_record["body"] == '{"route":"chat","tokens":3}'
    assert log_record["severity_text"] == "INFO"
    assert log_record["span_id"] == exported_span["context"]["span_id"]
    metric_names = [
        metric["name"]
        for item in printed
        for resource in item.get("resource_metrics", [])
        for scope in resource["scope_metrics"]
        for metric in scope["metrics"]
    ]
    assert metric_names == ["sluice.requests"]


def test_the_access_log_goes_to_stdout_a_file_or_nowhere(tmp_path: Path) -> None:
    assert build_telemetry(telemetry_config(), {}).access_log is not None
    assert build_telemetry(telemetry_config(access_log={"enabled": False}), {}).access_log is None

    path = tmp_path / "access.log"
    telemetry = build_telemetry(telemetry_config(access_log={"path": str(path)}), {})
    assert telemetry.access_log is not None
    telemetry.access_log.write({"call": 1})
    telemetry.access_log.close()
    assert path.read_text() == '{"call":1}\n'


async def test_no_access_records_are_exported_while_the_access_log_is_off(
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = telemetry_config(logs_exporter="console", access_log={"enabled": False})
    telemetry = build_telemetry(config, {})
    assert telemetry.access_log is None
    await telemetry.aclose()
    assert capsys.readouterr() == ("", "")


def test_capture_content_is_passed_on() -> None:
    assert build_telemetry(telemetry_config(capture_content=True), {}).capture_content
    assert not build_telemetry(telemetry_config(), {}).capture_content


# --- workers ------------------------------------------------------------------------


async def test_a_worker_has_its_own_service_instance_id(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Even where the environment gives every process the same one.
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=shared")
    config = telemetry_config(traces_exporter="console")
    telemetry = build_telemetry(config, {}, worker=1)
    with telemetry.tracer.start_as_current_span("probe"):
        pass
    await telemetry.aclose()
    [span] = console_objects(capsys.readouterr().err)
    instance = span["resource"]["attributes"]["service.instance.id"]
    assert instance == f"{socket.gethostname()}-{os.getpid()}"


async def test_a_single_process_keeps_the_sdks_instance_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    [span] = await exported_spans(capsys, telemetry_config(traces_exporter="console"), {})
    instance = span["resource"]["attributes"]["service.instance.id"]
    assert instance != f"{socket.gethostname()}-{os.getpid()}"  # a random UUID
